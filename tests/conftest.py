import os
import tempfile
from pathlib import Path

import pytest

# Any accidental hub call fails at once instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The tiny profile, built once per session and loaded back through from_pretrained."""
    from engine.tiny import build_tiny_profile

    root = tmp_path_factory.mktemp("models")
    build_tiny_profile(root / "tiny")
    return root

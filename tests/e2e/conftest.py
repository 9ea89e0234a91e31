"""One running studio (web + embedded worker, tiny profile) shared by every end-to-end test."""

from __future__ import annotations

import pytest

from tests.support import StudioServer, studio_env


@pytest.fixture(scope="session")
def studio(tmp_path_factory, models_dir):
    """``python app.py --profile tiny`` on a free port, ready with its worker; stopped after the session."""
    data_dir = tmp_path_factory.mktemp("studio-data")
    server = StudioServer(studio_env(data_dir, models_dir), data_dir / "studio.log")
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()

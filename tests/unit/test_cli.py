import subprocess
import sys

from tests.support import ROOT


def run_app(*args, timeout=60):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_help_explains_each_command():
    out = run_app("--help").stdout
    for words in ("--profile", "--port", "--host", "worker", "models", "embedded worker"):
        assert words in out
    assert "build-tiny" in run_app("models", "--help").stdout


def test_unknown_profile_lists_the_known_ones():
    result = run_app("--profile", "sdxxl", "--no-worker")
    assert result.returncode != 0
    assert "Unknown profile 'sdxxl'. Known profiles: hunyuan, sd15, sdxl, tiny, auto." in result.stderr


def test_common_options_go_before_or_after_the_command():
    from app import parser

    assert parser().parse_args(["worker", "--profile", "tiny", "--name", "gpu0@%h"]).profile == "tiny"
    assert parser().parse_args(["--profile", "tiny", "worker"]).profile == "tiny"
    assert parser().parse_args(["--data-dir", "/srv", "models", "list"]).data_dir == "/srv"
    assert not hasattr(parser().parse_args(["worker"]), "profile")  # unset: settings decide

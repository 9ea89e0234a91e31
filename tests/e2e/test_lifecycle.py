"""Starting and stopping the studio takes its embedded worker with it."""

import os
import signal
import subprocess

import pytest

from tests.support import StudioServer, studio_env, wait_for

pytestmark = pytest.mark.e2e


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stopping_the_web_process_stops_its_worker(tmp_path, models_dir, how):
    server = StudioServer(studio_env(tmp_path / "data", models_dir), tmp_path / "studio.log")
    try:
        server.wait_ready()
        worker_pids = children(server.pid)
        worker_pids += [p for w in worker_pids for p in children(w)]  # the worker's pool process
        assert len(worker_pids) == 2, "the embedded worker and its pool process were not found"
        if how == "sigterm":
            server.kill(signal.SIGTERM)
            server.process.wait(30)
        else:
            os.kill(server.pid, signal.SIGKILL)  # the web process alone dies
            server.process.wait(5)
        wait_for(lambda: not any(alive(p) for p in worker_pids), 30, 0.2, "the worker to stop")
    finally:
        server.stop()

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.profiles import DEFAULT_PROFILES_FILE, load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from tasks.celery_app import create_celery
from tasks.client import WORKER_TIMEOUT, StudioClient
from tests.support import ManagedProcess, start_worker, studio_env, wait_for

pytestmark = pytest.mark.integration

WORKER_NAME = "test-worker@%h"


@dataclass
class Studio:
    """The web side's view (database, client) of a studio whose worker runs as a real process."""

    root: Path
    env: dict
    settings: Settings
    db: Database
    client: StudioClient
    owner: str
    worker: ManagedProcess | None = None

    def start_worker(self, log_name: str = "worker.log") -> ManagedProcess:
        self.worker = start_worker(self.env, self.root / log_name, WORKER_NAME)
        before = {w.hostname: w.last_seen for w in self.live_workers()}

        def announced():
            if not self.worker.alive():
                raise RuntimeError(f"worker exited:\n{self.worker.output()[-3000:]}")
            return any(w.last_seen != before.get(w.hostname) for w in self.live_workers())

        wait_for(announced, 90, 0.2, "the worker to announce itself")
        return self.worker

    def live_workers(self):
        with self.db.session() as session:
            return repo.live_workers(session, WORKER_TIMEOUT)

    def pool_children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.worker.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def submit(self, client: StudioClient | None = None, **params):
        params.setdefault("prompt", "a lighthouse in a storm")
        return (client or self.client).submit(self.owner, "generate", params, origin="create")

    def job(self, job_id: str):
        return self.client.job(self.owner, job_id)

    def wait_job(self, job_id: str, timeout: float = 120):
        return wait_for(lambda: (j := self.job(job_id)).finished and j, timeout, 0.1, f"job {job_id}")

    def client_for(self, profile_name: str) -> StudioClient:
        profiles = load_profiles(self.settings.profiles_file, self.settings.models)
        return StudioClient(self.db, self.client.celery, profiles[profile_name], self.client.styles)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.db.dispose()


def make_studio(root: Path, models_dir: Path) -> Studio:
    # A profiles file with one extra profile whose base model exists nowhere.
    profiles = json.loads(DEFAULT_PROFILES_FILE.read_text())
    profiles["broken"] = dict(profiles["tiny"], roles={"base": {"model": str(root / "no-such-model"), "pipeline": "StableDiffusionXLPipeline"}})
    profiles_file = root / "profiles.json"
    profiles_file.write_text(json.dumps(profiles))
    env = studio_env(root / "data", models_dir, STUDIO_PROFILES_FILE=str(profiles_file))
    settings = Settings(data_dir=root / "data", models_dir=models_dir, profile="tiny", profiles_file=profiles_file)
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    client = StudioClient(db, create_celery(settings), load_profiles(profiles_file, models_dir)["tiny"], load_styles())
    return Studio(root, env, settings, db, client, owner)


@pytest.fixture(scope="module")
def shared_studio(tmp_path_factory, models_dir):
    """One worker for the tests that do not kill it."""
    studio = make_studio(tmp_path_factory.mktemp("studio"), models_dir)
    studio.start_worker()
    yield studio
    studio.stop()


@pytest.fixture
def own_studio(tmp_path, models_dir):
    """A studio whose worker a test may kill."""
    studio = make_studio(tmp_path, models_dir)
    yield studio
    studio.stop()

"""Running at scale, as the README says: Redis broker, PostgreSQL database, two workers, no code change."""

import shutil
import tempfile
from pathlib import Path

import pytest

from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from tests.support import PostgresServer, RedisServer, start_worker, studio_env, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("redis-server") or not Path("/usr/lib/postgresql").is_dir(),
                       reason="needs Debian's redis-server and postgresql packages (scripts/test.sh installs them)"),
]


@pytest.fixture(scope="module")
def servers():
    workdir = Path(tempfile.mkdtemp(prefix="studio-servers-", dir="/tmp"))
    redis_server = RedisServer(workdir)
    postgres = PostgresServer(workdir)
    yield redis_server, postgres
    postgres.stop()
    redis_server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_two_workers_share_the_queue_on_redis_and_postgres(servers, tmp_path, models_dir):
    redis_server, postgres = servers
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres.url, broker_url=redis_server.url,
                        models_dir=models_dir, profile="tiny")
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    client = StudioClient(db, create_celery(settings), load_profiles(None, models_dir)["tiny"], load_styles())
    env = studio_env(tmp_path / "data", models_dir, STUDIO_DATABASE_URL=postgres.url, STUDIO_BROKER_URL=redis_server.url)
    workers = [start_worker(env, tmp_path / f"worker{i}.log", f"gpu{i}@%h") for i in range(2)]
    try:
        wait_for(lambda: len(client.health()["workers"]) == 2, 90, 0.2, "both workers to announce themselves")
        jobs = [client.submit(owner, "generate", {"prompt": f"a lighthouse {i}", "steps": 40, "width": 128,
                                                  "height": 128, "seed": i}) for i in range(6)]
        done = [wait_for(lambda j=j: (v := client.job(owner, j.id)).finished and v, 120, 0.1, f"job {j.id}") for j in jobs]
        assert [job.state for job in done] == ["succeeded"] * 6
        with db.session() as session:
            ran_on = {repo.get_job(session, job.id).worker.split("@")[0] for job in done}
            assets = repo.list_assets(session, owner, repo.AssetFilter())
        assert ran_on == {"gpu0", "gpu1"}
        assert sorted(a.params["seed"] for a in assets) == list(range(6))
        assert all((settings.files / a.file_hash[:2] / a.file_hash[2:4] / f"{a.file_hash}.png").is_file() for a in assets)
    finally:
        for worker in workers:
            worker.stop()
        db.dispose()

"""Running at scale, as the README says: Redis broker, PostgreSQL database, two workers, no code change; and
what faults do to it: a worker killed mid-job, the broker restarted, the database briefly down, the web
process restarted. Every test has its own database and broker number on the module's servers."""

import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pytest

from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from storage.models import Asset, Job
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from tests.support import (
    ManagedProcess,
    PostgresServer,
    RedisServer,
    StudioServer,
    http_json,
    start_worker,
    studio_env,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("redis-server") or not Path("/usr/lib/postgresql").is_dir(),
                       reason="needs Debian's redis-server and postgresql packages (scripts/test.sh installs them)"),
]

# A job of a few seconds on the tiny profile: long enough to be caught mid-way.
SLOW_JOB = {"prompt": "a lighthouse in a storm", "width": 192, "height": 192, "steps": 120, "count": 2, "seed": 7}
QUICK_JOB = {"prompt": "a red kite", "width": 64, "height": 64, "steps": 2}


@dataclass
class Servers:
    workdir: Path
    redis: RedisServer
    postgres: PostgresServer
    databases: count = field(default_factory=lambda: count(1))


@pytest.fixture(scope="module")
def servers():
    workdir = Path(tempfile.mkdtemp(prefix="studio-servers-", dir="/tmp"))
    running = Servers(workdir, RedisServer(workdir, persistent=True), PostgresServer(workdir))
    yield running
    running.postgres.stop()
    running.redis.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Deployment:
    """The web side's view of a studio on Redis and Postgres, and its worker processes."""

    servers: Servers
    root: Path
    env: dict
    db: Database
    client: StudioClient
    owner: str
    workers: dict[str, ManagedProcess] = field(default_factory=dict)

    def start_worker(self, name: str) -> ManagedProcess:
        self.workers[name] = worker = start_worker(self.env, self.root / f"{name}.log", f"{name}@%h")
        wait_for(lambda: self.live(name), 90, 0.2, f"worker {name} to announce itself")
        return worker

    def live(self, name: str) -> bool:
        if not self.workers[name].alive():
            raise RuntimeError(f"worker {name} exited:\n{self.workers[name].output()[-3000:]}")
        return any(w["hostname"].startswith(f"{name}@") for w in self.client.health()["workers"])

    def submit(self, owner: str | None = None, **params):
        return self.client.submit(owner or self.owner, "generate", params, origin="api")

    def row(self, job_id: str) -> Job:
        with self.db.session() as session:
            return repo.get_job(session, job_id)

    def wait_running(self, job_id: str, progress: float = 0.05) -> Job:
        def running():
            job = self.row(job_id)
            return job if job.state == "running" and job.progress >= progress else None

        return wait_for(running, 90, 0.05, f"job {job_id} to be under way")

    def wait_finished(self, job_id: str, timeout: float = 120) -> Job:
        return wait_for(lambda: (job := self.row(job_id)).state in ("succeeded", "failed", "cancelled") and job,
                        timeout, 0.1, f"job {job_id} to finish")

    def assets(self, job_id: str) -> list[Asset]:
        with self.db.session() as session:
            return repo.job_assets(session, job_id, self.owner)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.db.dispose()


@pytest.fixture
def deployment(servers, tmp_path, models_dir):
    number = next(servers.databases)
    database_url = servers.postgres.create_database(f"studio{number}")
    broker_url = servers.redis.url_for(number)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, broker_url=broker_url,
                        models_dir=models_dir, profile="tiny")
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    client = StudioClient(db, create_celery(settings), load_profiles(None, models_dir)["tiny"], load_styles())
    # Workers that stop answering for 4 s are dead: their jobs move on quickly.
    env = studio_env(tmp_path / "data", models_dir, STUDIO_DATABASE_URL=database_url, STUDIO_BROKER_URL=broker_url,
                     STUDIO_WORKER_HEARTBEAT_S="0.5", STUDIO_WORKER_TIMEOUT_S="4")
    deployed = Deployment(servers, tmp_path, env, db, client, owner)
    yield deployed
    deployed.stop()


def test_two_workers_share_the_queue_on_redis_and_postgres(deployment):
    deployment.start_worker("gpu0")
    deployment.start_worker("gpu1")
    workers = {w["hostname"].split("@")[0]: w for w in deployment.client.health()["workers"]}
    assert workers.keys() == {"gpu0", "gpu1"}
    assert all(w["profile"] == "tiny" and w["queues"] == ["gpu", "train", "cpu"] for w in workers.values())
    jobs = [deployment.submit(prompt=f"a lighthouse {i}", steps=40, width=128, height=128, seed=i) for i in range(6)]
    done = [deployment.wait_finished(job.id) for job in jobs]
    assert [job.state for job in done] == ["succeeded"] * 6
    assert {job.worker.split("@")[0] for job in done} == {"gpu0", "gpu1"}
    with deployment.db.session() as session:
        assets = repo.list_assets(session, deployment.owner, repo.AssetFilter())
    files = Settings(data_dir=deployment.root / "data").files
    assert sorted(a.params["seed"] for a in assets) == list(range(6))
    assert all((files / a.file_hash[:2] / a.file_hash[2:4] / f"{a.file_hash}.png").is_file() for a in assets)


def test_a_killed_worker_s_job_finishes_exactly_once_on_the_other(deployment):
    deployment.start_worker("gpu0")
    deployment.start_worker("gpu1")
    job = deployment.submit(**SLOW_JOB)
    running = deployment.wait_running(job.id)
    victim = running.worker.split("@")[0]
    survivor = ({"gpu0", "gpu1"} - {victim}).pop()
    deployment.workers[victim].kill(signal.SIGKILL)  # the whole worker: its main process and its pool child

    done = deployment.wait_finished(job.id, 120)
    assert done.state == "succeeded", done.error
    assert done.worker.startswith(f"{survivor}@") and done.attempts == 2
    finals = [a for a in deployment.assets(job.id) if a.stage == "final"]
    assert sorted(a.output_index for a in finals) == [0, 1]  # each picture once, none twice
    with deployment.db.session() as session:
        assert session.query(Asset).count() == len(deployment.assets(job.id))
    assert f"worker {victim}@" in deployment.workers[survivor].output()  # it said whose job it handed on


def test_queued_jobs_survive_a_broker_restart(deployment):
    before = [deployment.submit(**QUICK_JOB, seed=i) for i in range(3)]  # no worker yet: they wait in Redis
    deployment.servers.redis = deployment.servers.redis.restarted()
    after = deployment.submit(**QUICK_JOB, seed=3)  # the web side reconnects on its own
    deployment.start_worker("gpu0")
    assert [deployment.wait_finished(job.id).state for job in [*before, after]] == ["succeeded"] * 4


def test_a_job_finishes_after_the_database_was_briefly_unreachable(deployment):
    deployment.start_worker("gpu0")
    job = deployment.submit(**SLOW_JOB)
    deployment.wait_running(job.id)
    deployment.servers.postgres.stop("fast")  # cuts every connection, as a crash or failover does
    time.sleep(3)
    deployment.servers.postgres.start()
    done = deployment.wait_finished(job.id, 180)
    assert done.state == "succeeded", done.error
    assert len([a for a in deployment.assets(job.id) if a.stage == "final"]) == 2
    assert deployment.workers["gpu0"].alive()
    assert "the database is unreachable" in deployment.workers["gpu0"].output()


def test_restarting_the_web_process_leaves_running_jobs_running(deployment):
    deployment.start_worker("gpu0")
    env = dict(deployment.env, STUDIO_EMBEDDED_WORKER="false")
    web = StudioServer(env, deployment.root / "web1.log")
    try:
        web.wait_ready()
        status, job = http_json("POST", f"{web.url}/api/v1/jobs", {"kind": "generate", "params": SLOW_JOB})
        assert status == 202, job
        deployment.wait_running(job["id"])
        web.kill(signal.SIGKILL)
        web = StudioServer(env, deployment.root / "web2.log", port=web.port)
        web.wait_ready()
        _, under_way = http_json("GET", f"{web.url}/api/v1/jobs?state=running")
        shown = next(j for j in under_way if j["id"] == job["id"])  # the new web process shows its progress
        assert 0 < shown["progress"] < 1 and "step" in shown["stage"]
        assert web.wait_job(job["id"])["state"] == "succeeded"
    finally:
        web.stop()


def test_one_user_s_backlog_does_not_hold_back_another_s_job(deployment):
    with deployment.db.session() as session:
        alice, bob = repo.ensure_user(session, "alice").id, repo.ensure_user(session, "bob").id
    deployment.start_worker("gpu0")
    backlog = [deployment.submit(alice, **QUICK_JOB, seed=i) for i in range(10)]
    single = deployment.submit(bob, **QUICK_JOB, seed=99)
    rows = [deployment.wait_finished(job.id) for job in [*backlog, single]]
    assert all(row.state == "succeeded" for row in rows)
    order = [row.owner_id for row in sorted(rows, key=lambda row: row.started_at)]
    # Submitted last, bob's job runs as soon as the worker is free: at most alice's first two ran before it
    # (first in, first out would have run all ten).
    assert order.index(bob) <= 2, order

"""A real worker process on the embedded SQLite broker, driven through the web side's client."""

import os
import signal

import pytest
from PIL import Image

from settings import Settings
from storage import repo
from tasks.celery_app import create_celery
from tasks.client import QueueUnavailable, StudioClient
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

# A job long enough to act on while it runs (about 5-10 s on two cores).
LONG_JOB = dict(steps=150, width=192, height=192)


def assets_of(studio, job):
    with studio.db.session() as session:
        return [repo.get_asset(session, a, studio.owner) for a in job.asset_ids]


def test_job_succeeds_with_rising_progress_and_stored_images(shared_studio):
    studio = shared_studio
    job = studio.submit(count=2, steps=150, stages=["refiner", "latent_x2"], seed=11)
    seen = []

    def finished():
        current = studio.job(job.id)
        seen.append((current.progress, current.stage))
        return current.finished and current

    done = wait_for(finished, 120, 0.05, "the job")
    assert done.state == "succeeded", done.error
    progress = [p for p, _ in seen]
    assert progress == sorted(progress)
    assert len({p for p in progress if 0 < p < 1}) >= 3
    assert {s.split(" (")[0] for _, s in seen} >= {"Base", "Refiner"}
    assets = assets_of(studio, done)
    assert [a.params["seed"] for a in assets] == [11, 12]
    for asset in assets:
        path = studio.settings.files / asset.file_hash[:2] / asset.file_hash[2:4] / f"{asset.file_hash}.png"
        with Image.open(path) as image:
            assert image.size == (asset.width, asset.height) == (128, 128)
            assert '"prompt": "a lighthouse in a storm"' in image.text["studio"]


def test_cancel_mid_job(shared_studio):
    studio = shared_studio
    job = studio.submit(**LONG_JOB)
    wait_for(lambda: studio.job(job.id).progress > 0.02, 60, 0.05, "the job to start")
    studio.client.cancel(studio.owner, job.id)
    done = studio.wait_job(job.id, 30)
    assert done.state == "cancelled" and done.asset_ids == []
    assert done.progress < 1


def test_cancel_before_it_runs_never_runs(shared_studio):
    studio = shared_studio
    blocker = studio.submit(**LONG_JOB)
    queued = studio.submit(prompt="never drawn")
    assert studio.client.cancel(studio.owner, queued.id).state == "cancelled"
    studio.client.cancel(studio.owner, blocker.id)
    studio.wait_job(blocker.id, 60)
    assert studio.job(queued.id).attempts == 0


def test_second_job_with_the_same_model_loads_nothing(shared_studio):
    studio = shared_studio

    def loads():
        return max(w.model_loads for w in studio.live_workers())

    assert studio.wait_job(studio.submit(stages=["refiner"]).id).state == "succeeded"
    after_first = loads()
    assert after_first >= 2  # base and refiner
    assert studio.wait_job(studio.submit(stages=["refiner"], seed=5).id).state == "succeeded"
    assert loads() == after_first


def test_missing_model_fails_readably_and_the_worker_stays_up(shared_studio):
    studio = shared_studio
    failed = studio.wait_job(studio.submit(studio.client_for("broken")).id)
    assert failed.state == "failed"
    assert "Could not load the base model" in failed.error and "no-such-model" in failed.error
    assert studio.worker.alive()
    assert studio.wait_job(studio.submit().id).state == "succeeded"


def test_unreachable_broker_leaves_no_job_behind(shared_studio, tmp_path):
    studio = shared_studio
    settings = Settings(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    client = StudioClient(studio.db, create_celery(settings), studio.client.profile, studio.client.styles)
    with studio.db.session() as session:
        before = repo.count_jobs(session, "queued")
    with pytest.raises(QueueUnavailable, match="job queue is unreachable, so the job was not created"):
        studio.submit(client)
    with studio.db.session() as session:
        assert repo.count_jobs(session, "queued") == before


def test_pool_process_killed_mid_job_is_redelivered_and_finishes_once(own_studio):
    studio = own_studio
    studio.start_worker()
    job = studio.submit(count=2, **LONG_JOB)
    wait_for(lambda: studio.job(job.id).progress > 0.05, 60, 0.05, "the job to run")
    (child,) = studio.pool_children()
    os.kill(child, signal.SIGKILL)
    done = studio.wait_job(job.id, 240)
    assert done.state == "succeeded", done.error
    assert done.attempts == 2
    assert len(done.asset_ids) == 2
    with studio.db.session() as session:
        assert len(repo.list_assets(session, studio.owner, repo.AssetFilter(include_stages=True))) == 2


def test_whole_worker_killed_mid_job_finishes_once_after_restart(own_studio):
    studio = own_studio
    studio.start_worker("worker-1.log")
    job = studio.submit(**LONG_JOB)
    wait_for(lambda: studio.job(job.id).progress > 0.05, 60, 0.05, "the job to run")
    studio.worker.kill(signal.SIGKILL)
    studio.worker.process.wait(10)
    assert studio.job(job.id).state == "running"
    studio.start_worker("worker-2.log")
    done = studio.wait_job(job.id, 240)
    assert done.state == "succeeded", done.error
    assert done.attempts == 2 and len(done.asset_ids) == 1

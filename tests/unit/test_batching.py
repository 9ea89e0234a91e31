"""A worker draws waiting jobs with the same settings in one batch: each job gets its own pictures, stored
once, with its own prompt and seeds; cancelling one job of a batch keeps nothing of it and holds no other
back; a job another live worker took into its batch is left to it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from engine.cascade import run_cascade
from engine.params import resolve_generation
from engine.profiles import FastPath
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.files import FileStore
from storage.models import JobState
from tasks.generate import JobReporter, run_job
from tasks.worker import WorkerContext

STYLES = load_styles()
WORKER = "worker-a@host"
LIVE = timedelta(seconds=30)


@pytest.fixture
def context(tmp_path, db, tiny, cache):
    settings = Settings(data_dir=tmp_path)
    profile = replace(tiny, fast_paths={"cpu": FastPath(batch_max=4)})
    with db.session() as session:
        repo.heartbeat(session, WORKER, ["gpu"], "tiny", 1)
    return WorkerContext(settings, db, FileStore(settings.files), {"tiny": profile}, profile, _cache=cache)


def submit(context, owner: str, **raw) -> str:
    params = resolve_generation(dict({"width": 64, "height": 64, "count": 1}, **raw), context.profile, STYLES)
    with context.db.session() as session:
        user = repo.ensure_user(session, owner)
        return repo.create_job(session, user.id, "generate", params.to_dict(), "tiny", "api").id


def claim(context, job_id: str, worker: str = WORKER):
    with context.db.session() as session:
        return repo.claim_job(session, job_id, worker, LIVE)


def job_pictures(context, job_id: str) -> list[tuple[dict, np.ndarray]]:
    with context.db.session() as session:
        job = repo.get_job(session, job_id)
        assets = [a for a in repo.job_assets(session, job_id, job.owner_id) if a.stage == "final"]
        return [(a.params, np.asarray(Image.open(context.files.path(a.file_hash, "png")).convert("RGB"), dtype=np.float32))
                for a in sorted(assets, key=lambda a: a.output_index)]


def job_state(context, job_id: str) -> str:
    with context.db.session() as session:
        return repo.get_job(session, job_id).state


def test_waiting_jobs_of_several_users_are_drawn_in_one_batch_each_with_its_own_pictures(context):
    first = submit(context, "alice", prompt="a red fox", seed=1)
    second = submit(context, "bob", prompt="a blue whale", seed=40, count=2)
    other_size = submit(context, "carol", prompt="a green frog", seed=3, width=128)
    third = submit(context, "carol", prompt="a yellow kite", seed=9)
    too_many = submit(context, "dave", prompt="a grey owl", seed=5)  # the batch holds 4 pictures
    job = claim(context, first)
    assert run_job(context, job) == "done"
    with context.db.session() as session:
        repo.finish_job(session, first, JobState.SUCCEEDED, "done")
    for job_id, prompt, seeds in ((first, "a red fox", [1]), (second, "a blue whale", [40, 41]), (third, "a yellow kite", [9])):
        assert job_state(context, job_id) == JobState.SUCCEEDED
        pictures = job_pictures(context, job_id)
        assert [p["seed"] for p, _ in pictures] == seeds and {p["prompt"] for p, _ in pictures} == {prompt}
        assert all(p["drawn_with"] == {"jobs": 3, "pictures": 4} for p, _ in pictures)
        # Each picture is the one the job draws alone.
        alone = run_cascade(resolve_generation(dict(pictures[0][0], seed=seeds[0], count=len(seeds)), context.profile, STYLES),
                            context.profile, context.cache)
        for (_, batched), own in zip(pictures, alone.images):
            assert np.abs(batched - np.asarray(own, dtype=np.float32)).max() <= 2
    assert job_state(context, other_size) == job_state(context, too_many) == JobState.QUEUED
    # The companions' own deliveries come later and find nothing to do.
    assert claim(context, second) is None and claim(context, third) is None
    assert len(job_pictures(context, second)) == 2


def test_a_job_cancelled_during_its_batch_keeps_nothing_and_the_others_finish(context, monkeypatch):
    first = submit(context, "alice", prompt="a red fox", seed=1)
    cancelled = submit(context, "bob", prompt="a blue whale", seed=2)
    last = submit(context, "carol", prompt="a yellow kite", seed=3)
    progress = JobReporter.progress

    def cancel_bob_midway(self, p):
        if self.job_id == cancelled and p.step == 2:
            with context.db.session() as session:
                repo.request_cancel(session, repo.get_job(session, cancelled))
        progress(self, p)

    monkeypatch.setattr(JobReporter, "progress", cancel_bob_midway)
    run_job(context, claim(context, first))
    assert job_state(context, cancelled) == JobState.CANCELLED and job_pictures(context, cancelled) == []
    assert job_state(context, last) == JobState.SUCCEEDED and len(job_pictures(context, last)) == 1
    assert len(job_pictures(context, first)) == 1


def test_a_job_in_another_live_workers_batch_is_left_to_it(context):
    job_id = submit(context, "alice", prompt="a red fox", seed=1)
    with context.db.session() as session:
        repo.heartbeat(session, "worker-b@host", ["gpu"], "tiny", 2)
        assert repo.claim_into_batch(session, job_id, "worker-b@host", "drawn in a batch")
        assert not repo.claim_into_batch(session, job_id, WORKER, "drawn in a batch")
    assert claim(context, job_id) is None
    # Once that worker has been silent too long the job is anyone's again.
    with context.db.session() as session:
        assert repo.claim_job(session, job_id, WORKER, timedelta(0)) is not None


def test_a_batch_of_one_job_alone_runs_as_before(context):
    lone = submit(context, "alice", prompt="a red fox", seed=1, count=2)
    seamless = submit(context, "bob", prompt="a tile", seed=2, tileable=True)
    run_job(context, claim(context, lone))
    assert len(job_pictures(context, lone)) == 2 and "drawn_with" not in job_pictures(context, lone)[0][0]
    assert job_state(context, seamless) == JobState.QUEUED


def test_one_users_backlog_does_not_fill_the_batch_before_another_users_job(context):
    first = submit(context, "alice", prompt="a red fox", seed=1)
    backlog = [submit(context, "alice", prompt=f"a red fox {i}", seed=10 + i) for i in range(4)]
    bob = submit(context, "bob", prompt="a blue whale", seed=2)
    run_job(context, claim(context, first))
    assert job_state(context, bob) == JobState.SUCCEEDED
    assert [job_state(context, job_id) for job_id in backlog] == [JobState.SUCCEEDED] * 2 + [JobState.QUEUED] * 2

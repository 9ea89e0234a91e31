"""The generate task: load the job, run the cascade, store the images, report progress.

Idempotent: a redelivered job re-runs with the same seeds and stores only the images it lacks.
"""

from __future__ import annotations

import logging
import os
import time

from engine.cascade import Cancelled, StageProgress, run_cascade
from engine.loader import ModelUnavailableError
from engine.params import GenerationParams, image_seed
from engine.profiles import STAGE_LABELS
from storage import repo
from storage.models import JobState
from storage.pngmeta import png_with_params
from tasks.celery_app import GENERATE, app
from tasks.worker import WorkerContext, worker_context

log = logging.getLogger(__name__)

# Seconds between progress writes: fast enough for a live bar, few enough for SQLite.
PROGRESS_INTERVAL = 0.2


class JobReporter:
    """Writes a job's progress to its row, throttled, and reads back its cancel flag."""

    def __init__(self, context: WorkerContext, job_id: str):
        self.context, self.job_id = context, job_id
        self.last_write = self.last_read = 0.0
        self.last_stage, self.cancelled = None, False

    def write(self, fraction: float, stage: str) -> None:
        with self.context.db.session() as session:
            self.cancelled = repo.record_progress(session, self.job_id, fraction, stage)
        self.last_write = self.last_read = time.monotonic()

    def progress(self, p: StageProgress) -> None:
        due = time.monotonic() - self.last_write >= PROGRESS_INTERVAL
        if due or p.stage != self.last_stage or p.step == p.total_steps:
            label = f"{STAGE_LABELS[p.stage]} ({p.stage_index + 1}/{p.stage_count}): step {p.step}/{p.total_steps}"
            self.write(p.fraction, label)
            self.last_stage = p.stage

    def should_cancel(self) -> bool:
        # Progress writes read the flag too; read it here only when they have not lately.
        if time.monotonic() - self.last_read >= PROGRESS_INTERVAL:
            with self.context.db.session() as session:
                job = repo.get_job(session, self.job_id)
                self.cancelled = job is None or job.cancel_requested
            self.last_read = time.monotonic()
        return self.cancelled


def store_images(context: WorkerContext, job, params: GenerationParams, images_by_stage: dict) -> None:
    """Write each image's file first, then its row (once per job, stage and index)."""
    for stage, images in images_by_stage.items():
        for index, image in enumerate(images):
            # Each image keeps the seed that reproduces it alone.
            image_params = dict(params.to_dict(), seed=image_seed(params.seed, index), count=1, batch_seed=params.seed, stage=stage)
            digest = context.files.put(png_with_params(image, image_params), "png")
            with context.db.session() as session:
                repo.store_asset(
                    session, owner_id=job.owner_id, job_id=job.id, kind="image", origin=job.origin, stage=stage,
                    output_index=index, file_hash=digest, mime="image/png", width=image.width, height=image.height,
                    prompt=params.prompt, params=image_params,
                )


def run_job(context: WorkerContext, job) -> tuple[str, str, str | None]:
    """Generate and store a claimed job's images; return its final (state, stage, error)."""
    params = GenerationParams.from_dict(job.params)
    profile = context.profiles.get(params.profile)
    if profile is None:
        known = ", ".join(sorted(context.profiles))
        return JobState.FAILED, "failed", f"This worker has no profile {params.profile!r} (it has {known})."
    reporter = JobReporter(context, job.id)
    try:
        result = run_cascade(params, profile, context.cache, reporter.progress, reporter.should_cancel,
                             params.keep_stage_images)
        reporter.write(1.0, "saving images")
        store_images(context, job, params, {"final": result.images, **result.stage_images})
    except Cancelled:
        return JobState.CANCELLED, "cancelled", None
    except ModelUnavailableError as exc:
        return JobState.FAILED, "failed", str(exc)
    except Exception as exc:
        log.exception("job %s failed", job.id)
        return JobState.FAILED, "failed", f"{type(exc).__name__}: {exc}"
    return JobState.SUCCEEDED, "done", None


@app.task(name=GENERATE, bind=True)
def generate(self, job_id: str) -> None:
    context = worker_context()
    with context.db.session() as session:
        job = repo.claim_job(session, job_id, self.request.hostname)
    if job is None:
        log.info("job %s has nothing left to do", job_id)
        return
    state, stage, error = run_job(context, job)
    with context.db.session() as session:
        repo.finish_job(session, job_id, state, stage, error)
        # The parent's heartbeat does not know the pool process's model loads; report them here.
        repo.heartbeat(session, self.request.hostname, context.settings.queues, context.profile.name,
                       os.getppid(), context.model_loads)

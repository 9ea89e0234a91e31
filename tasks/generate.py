"""The generate task: load the job, run the cascade, store the images, report progress.

Idempotent: a redelivered job re-runs with the same seeds and stores only the images it lacks.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from datetime import timedelta

from PIL import Image
from sqlalchemy.exc import InterfaceError, OperationalError

from engine.cascade import Cancelled, StageProgress, run_cascade
from engine.img2img import control_conditions, fit_source
from engine.img2img_request import KEEPS
from engine.loader import ModelUnavailableError
from engine.lora import LoraMismatchError, LoraWeights, lora_weights
from engine.params import GenerationParams, ParamError, batch_key, image_seed
from engine.profiles import STAGE_LABELS, Profile
from engine.prompt_encoding import encoded_length
from engine.rerank import clip_scores
from storage import repo
from storage.files import MIME_EXTENSIONS
from storage.models import JobState, Material
from storage.pngmeta import png_with_params
from tasks.celery_app import GENERATE, app
from tasks.worker import WorkerContext, worker_context

log = logging.getLogger(__name__)

# Waiting jobs looked at for a place in a batch.
BATCH_CANDIDATES = 50
# Seconds between progress writes: fast enough for a live bar, few enough for SQLite.
PROGRESS_INTERVAL = 0.2
# A database that is down or restarting: the connection fails (OperationalError) or is lost mid-query.
DATABASE_UNREACHABLE = (OperationalError, InterfaceError)
# Tries 1, 2, 4, ... seconds apart, then every 30 s: a database back within about 15 minutes finishes the job.
DATABASE_RETRIES = 35
MAX_RETRY_DELAY_S = 30


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

    def report(self, fraction: float, stage: str, force: bool = False) -> None:
        """Write progress when forced or when the last write is old enough."""
        if force or time.monotonic() - self.last_write >= PROGRESS_INTERVAL:
            self.write(fraction, stage)

    def progress(self, p: StageProgress) -> None:
        label = f"{STAGE_LABELS[p.stage]} ({p.stage_index + 1}/{p.stage_count}): step {p.step}/{p.total_steps}"
        self.report(p.fraction, label, force=p.stage != self.last_stage or p.step == p.total_steps)
        self.last_stage = p.stage

    def should_cancel(self) -> bool:
        # Progress writes read the flag too; read it here only when they have not lately.
        if time.monotonic() - self.last_read >= PROGRESS_INTERVAL:
            with self.context.db.session() as session:
                job = repo.get_job(session, self.job_id)
                self.cancelled = job is None or job.cancel_requested
            self.last_read = time.monotonic()
        return self.cancelled


def store_images(context: WorkerContext, job, params: GenerationParams, images_by_stage: dict,
                 scores: list[float] | None = None, parent_id: str | None = None, provenance: dict | None = None) -> list[str]:
    """Write each image's file first, then its row (once per job, stage and index); return the final ids.
    ``provenance`` adds to each image's parameters how it was drawn (e.g. in a batch with other jobs)."""
    final_ids = []
    for stage, images in images_by_stage.items():
        for index, image in enumerate(images):
            # Each image keeps the seed that reproduces it alone.
            image_params = dict(params.to_dict(), seed=image_seed(params.seed, index), count=1, batch_seed=params.seed, stage=stage,
                                **(provenance or {}))
            score = scores[index] if scores and stage == "final" else None
            if score is not None:
                image_params["clip_score"] = score
            digest = context.files.put(png_with_params(image, image_params), "png")
            with context.db.session() as session:
                asset = repo.store_asset(
                    session, owner_id=job.owner_id, job_id=job.id, kind="image", origin=job.origin, stage=stage,
                    output_index=index, file_hash=digest, mime="image/png", width=image.width, height=image.height,
                    prompt=params.prompt, params=image_params, score=score, parent_id=parent_id,
                )
                if stage == "final":
                    final_ids.append(asset.id)
    return final_ids


def load_init_image(context: WorkerContext, job, params: GenerationParams) -> Image.Image | None:
    """The image an image-to-image job starts from: one of the job owner's assets or materials."""
    if not (params.init_asset_id or params.init_material_id):
        return None
    with context.db.session() as session:
        if params.init_asset_id:
            source = repo.get_asset(session, params.init_asset_id, job.owner_id)
            path = context.files.path(source.file_hash, MIME_EXTENSIONS[source.mime]) if source else None
        else:
            source = session.get(Material, params.init_material_id)
            # Materials are uploads, always stored as PNG; another user's is as missing as a deleted one.
            owned = source is not None and source.owner_id == job.owner_id
            path = context.files.path(source.file_hash, "png") if owned else None
    if path is None:
        raise ParamError(f"The source image {params.init_asset_id or params.init_material_id!r} does not exist (or was deleted).")
    return Image.open(path).convert("RGB")


class JobError(RuntimeError):
    """A job that cannot run as asked; the message is shown to the user."""


def job_loras(context: WorkerContext, params: GenerationParams) -> list[LoraWeights]:
    """The LoRA files a job's parameters name: the owner's (pinned by hash when the job was made) and the
    style's published one."""
    def file_path(digest: str) -> str:
        path = context.files.path(digest, "safetensors")
        if not path.is_file():
            name = next(lora.get("name", "") for lora in params.loras if lora.get("file_hash") == digest)
            raise JobError(f"The file of the LoRA {name!r} is missing from the file store.")
        return str(path)

    return lora_weights(params.loras, file_path)


def job_profile(context: WorkerContext, name: str) -> Profile:
    profile = context.profiles.get(name)
    if profile is None:
        raise JobError(f"This worker has no profile {name!r} (it has {', '.join(sorted(context.profiles))}).")
    return profile


def generate_images(context: WorkerContext, job, params: GenerationParams, reporter: JobReporter,
                    scorer_text: str | None = None, parent_id: str | None = None) -> tuple[list[str], list[float] | None]:
    """Run the cascade for ``params`` and store the images, linked to ``parent_id`` (by default the image
    an image-to-image job starts from); with ``scorer_text`` the final images are scored by CLIP against
    it. Returns the final asset ids in output order, and their scores."""
    profile = job_profile(context, params.profile)
    init = load_init_image(context, job, params)
    control, maps = [], {}
    if init is not None:
        init = fit_source(init, (params.width, params.height))
        control, maps = control_conditions(init, params.controls, profile, context.cache,
                                           lambda kind: reporter.write(0.0, f"drawing the {KEEPS[kind].label.lower()} map"))
    result = run_cascade(params, profile, context.cache, reporter.progress, reporter.should_cancel,
                         params.keep_stage_images, init_images=[init] if init else None, loras=job_loras(context, params),
                         control=control)
    scores = None
    if scorer_text is not None and "scorer" in profile.roles:
        reporter.write(1.0, "ranking candidates")
        scores = clip_scores(context.cache.model(profile, "scorer"), result.images, scorer_text)
    reporter.write(1.0, "saving images")
    # The keeps' maps are kept beside the pictures: they show what the ControlNets read.
    stored = {"final": result.images, **result.stage_images, **{kind: [image] for kind, image in maps.items()}}
    ids = store_images(context, job, params, stored, scores, parent_id or params.init_asset_id)
    return ids, scores


def run_job(context: WorkerContext, job) -> str:
    """Generate and store a claimed generate job's images, drawn together with the waiting jobs that can share
    its batch; return its final stage label."""
    params = GenerationParams.from_dict(job.params)
    companions = claim_batch(context, job, params)
    if companions:
        return run_batch(context, job, params, companions)
    generate_images(context, job, params, JobReporter(context, job.id))
    return "done"


def claim_batch(context: WorkerContext, job, params: GenerationParams) -> list[tuple[object, GenerationParams]]:
    """Waiting jobs with ``job``'s batch key (other users' too, one user at a time), taken into its batch while
    the pictures fit the profile's ``batch_max`` on this device."""
    profile = context.profiles.get(params.profile)
    key = batch_key(params)
    if profile is None or key is None:
        return []
    room = profile.fast_path(context.cache.placement.device).batch_max - params.count
    if room <= 0:
        return []
    base = context.cache.pipeline(profile, "base")
    length = encoded_length(base, params.full_prompt, params.full_negative_prompt)
    companions = []
    taken = Counter({job.owner_id: 1})
    with context.db.session() as session:
        waiting = repo.batch_candidates(session, job.kind, params.profile, job.id, BATCH_CANDIDATES)
        while waiting:
            # Fair as the queue is: the oldest job of the user with the fewest in the batch comes first, so one
            # user's backlog does not fill every place while another user's job waits.
            other = min(waiting, key=lambda candidate: taken[candidate.owner_id])
            waiting.remove(other)
            other_params = GenerationParams.from_dict(other.params)
            if batch_key(other_params) != key or other_params.count > room or \
                    encoded_length(base, other_params.full_prompt, other_params.full_negative_prompt) != length:
                continue
            if repo.claim_into_batch(session, other.id, job.worker, f"drawn in a batch with job {job.id}"):
                companions.append((other, other_params))
                taken[other.owner_id] += 1
                room -= other_params.count
                if room == 0:
                    break
    return companions


class BatchReporter:
    """A batch's progress goes to each of its jobs; the batch stops early only when all of them asked to."""

    def __init__(self, reporters: list[JobReporter]):
        self.reporters = reporters

    def progress(self, p: StageProgress) -> None:
        for reporter in self.reporters:
            reporter.progress(p)

    def should_cancel(self) -> bool:
        return all([reporter.should_cancel() for reporter in self.reporters])


def run_batch(context: WorkerContext, job, params: GenerationParams, companions: list[tuple[object, GenerationParams]]) -> str:
    """Draw ``job`` and its companions in the same pipeline calls, then store each job's own images and finish
    the companions; a job cancelled meanwhile keeps nothing, the others are not held back by it."""
    jobs = [(job, params), *companions]
    reporters = [JobReporter(context, member.id) for member, _ in jobs]
    pictures = sum(member_params.count for _, member_params in jobs)
    reporter = BatchReporter(reporters)
    try:
        result = run_cascade(params, job_profile(context, params.profile), context.cache, reporter.progress,
                             reporter.should_cancel, params.keep_stage_images, loras=job_loras(context, params),
                             batch=[member_params for _, member_params in companions])
    except DATABASE_UNREACHABLE:
        raise  # the companions stay claimed by this worker; their own deliveries run them again
    except Exception as exc:
        for member, _ in companions:
            with context.db.session() as session:
                repo.finish_job(session, member.id, *job_outcome(exc, member.id))
        raise
    parts = result.split([member_params.count for _, member_params in jobs])
    provenance = {"drawn_with": {"jobs": len(jobs), "pictures": pictures}}
    for (member, member_params), part, reporter in zip(jobs, parts, reporters):
        reporter.write(1.0, "saving images")
        if member is job:
            continue
        state, stage, error = JobState.CANCELLED, "cancelled", None
        if not reporter.cancelled:
            try:
                store_images(context, member, member_params, {"final": part.images, **part.stage_images}, provenance=provenance)
                state, stage = JobState.SUCCEEDED, "done"
            except DATABASE_UNREACHABLE:
                raise
            except Exception as exc:
                state, stage, error = job_outcome(exc, member.id)
        with context.db.session() as session:
            repo.finish_job(session, member.id, state, stage, error)
    if reporters[0].cancelled:
        raise Cancelled(f"job {job.id} was cancelled while its batch ran")
    store_images(context, job, params, {"final": parts[0].images, **parts[0].stage_images}, provenance=provenance)
    return "done"


def job_outcome(exc: Exception, job_id: str) -> tuple[str, str, str | None]:
    """How a job that raised ``exc`` ended: its state, stage and the message a user reads."""
    if isinstance(exc, Cancelled):
        return JobState.CANCELLED, "cancelled", None
    if isinstance(exc, (ModelUnavailableError, ParamError, JobError, LoraMismatchError)):
        return JobState.FAILED, "failed", str(exc)
    log.error("job %s failed", job_id, exc_info=exc)
    return JobState.FAILED, "failed", f"{type(exc).__name__}: {exc}"


def execute(task, job_id: str, work) -> None:
    """Claim the job, run ``work(context, job)``, and record how it ended, with a message a user can read.

    While the database is unreachable nothing can be claimed, reported or stored: the task is tried again
    later, and the job re-runs from the start, storing only the results it lacks."""
    try:
        _claim_and_run(task, job_id, work)
    except DATABASE_UNREACHABLE as exc:
        delay = min(2 ** task.request.retries, MAX_RETRY_DELAY_S)
        log.warning("job %s: the database is unreachable (%s); trying again in %d s", job_id, exc.orig or exc, delay)
        raise task.retry(exc=exc, countdown=delay, max_retries=DATABASE_RETRIES) from None


def _claim_and_run(task, job_id: str, work) -> None:
    context = worker_context()
    with context.db.session() as session:
        job = repo.claim_job(session, job_id, task.request.hostname, timedelta(seconds=context.settings.worker_timeout_s))
    if job is None:
        log.info("job %s has nothing left to do here", job_id)
        return
    state, error = JobState.SUCCEEDED, None
    try:
        stage = work(context, job)
    except DATABASE_UNREACHABLE:
        raise
    except Exception as exc:
        state, stage, error = job_outcome(exc, job_id)
    with context.db.session() as session:
        repo.finish_job(session, job_id, state, stage, error)
        # The parent's heartbeat does not know the pool process's model loads; report them here.
        repo.heartbeat(session, task.request.hostname, context.settings.queues, context.profile.name,
                       os.getppid(), context.model_loads)


@app.task(name=GENERATE, bind=True)
def generate(self, job_id: str) -> None:
    execute(self, job_id, run_job)

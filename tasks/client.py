"""What the web process uses to submit, poll and cancel jobs. It never imports torch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from celery import Celery
from kombu.exceptions import OperationalError

from engine.params import (
    ASPECT_RATIOS, MAX_COUNT, MAX_STEPS, SAMPLERS, GenerationParams, ParamError, resolve_generation, size_for_aspect,
)
from engine.profiles import STAGE_LABELS, Profile
from engine.styles import Style
from storage import repo
from storage.db import Database
from storage.models import Job, JobState
from tasks.celery_app import GENERATE, TASK_QUEUES

log = logging.getLogger(__name__)

# A worker that has not reported for this long is not counted as live.
WORKER_TIMEOUT = timedelta(seconds=30)


class QueueUnavailable(RuntimeError):
    """The broker could not be reached; the job was not created."""


class InvalidRequest(ValueError):
    """Parameters a user must correct; the message says how."""


@dataclass(frozen=True)
class FormOptions:
    """What the web side's forms offer: the active profile (limits, defaults, stages), styles, samplers."""

    profile: Profile
    styles: list[tuple[str, str]]  # (label shown, name)
    samplers: list[str]
    stage_labels: dict[str, str]
    aspect_ratios: tuple[str, ...] = ASPECT_RATIOS
    max_count: int = MAX_COUNT
    max_steps: int = MAX_STEPS

    @classmethod
    def of(cls, profile: Profile, styles: dict[str, Style]) -> "FormOptions":
        return cls(profile=profile, styles=[(f"{s.label} · {s.label_zh}", s.name) for s in styles.values()],
                   samplers=list(SAMPLERS), stage_labels=dict(STAGE_LABELS))

    @staticmethod
    def size_for_aspect(aspect: str, long_side: int) -> tuple[int, int]:
        return size_for_aspect(aspect, long_side)


@dataclass
class JobKind:
    task: str
    # (raw params, profile, styles) -> validated parameters with to_dict(); raises ParamError
    resolve: Callable[[dict, Profile, dict[str, Style]], GenerationParams]


JOB_KINDS = {"generate": JobKind(task=GENERATE, resolve=resolve_generation)}


@dataclass
class JobView:
    """A job as the UI and the API show it."""

    id: str
    kind: str
    state: str
    progress: float
    stage: str
    error: str | None
    asset_ids: list[str]
    params: dict
    attempts: int

    @property
    def finished(self) -> bool:
        return self.state in JobState.FINISHED

    @classmethod
    def of(cls, job: Job) -> "JobView":
        return cls(
            id=job.id, kind=job.kind, state=job.state, progress=job.progress, stage=job.stage, error=job.error,
            asset_ids=[a.id for a in job.assets if a.stage == "final"], params=job.params, attempts=job.attempts,
        )


class StudioClient:
    def __init__(self, db: Database, celery: Celery, profile: Profile, styles: dict[str, Style]):
        self.db, self.celery, self.profile, self.styles = db, celery, profile, styles
        self.options = FormOptions.of(profile, styles)

    def submit(self, owner_id: str, kind: str, raw_params: dict, origin: str = "api") -> JobView:
        """Validate, insert the job row, send the task. Raises InvalidRequest or QueueUnavailable."""
        if kind not in JOB_KINDS:
            raise InvalidRequest(f"Unknown job kind {kind!r}. Known kinds: {', '.join(JOB_KINDS)}.")
        spec = JOB_KINDS[kind]
        try:
            params = spec.resolve(raw_params, self.profile, self.styles).to_dict()
        except ParamError as exc:
            raise InvalidRequest(str(exc)) from exc
        with self.db.session() as session:
            job = repo.create_job(session, owner_id, kind, params, self.profile.name, origin)
        try:
            self.celery.send_task(spec.task, args=[job.id], task_id=job.id, queue=TASK_QUEUES[spec.task], retry=False)
        except (OperationalError, OSError) as exc:
            log.error("broker unreachable, job %s withdrawn: %s", job.id, exc)
            with self.db.session() as session:
                session.delete(session.merge(job))
                session.commit()
            raise QueueUnavailable(
                "The job queue is unreachable, so the job was not created. Check that the broker "
                f"({self.celery.conf.broker_url.split('://')[0]}) is running and try again."
            ) from exc
        return JobView(id=job.id, kind=kind, state=job.state, progress=0.0, stage=job.stage, error=None,
                       asset_ids=[], params=params, attempts=0)

    def job(self, owner_id: str, job_id: str) -> JobView | None:
        with self.db.session() as session:
            job = repo.get_job(session, job_id, owner_id)
            return JobView.of(job) if job is not None else None

    def cancel(self, owner_id: str, job_id: str) -> JobView | None:
        with self.db.session() as session:
            job = repo.get_job(session, job_id, owner_id)
            return JobView.of(repo.request_cancel(session, job)) if job is not None else None

    def health(self) -> dict:
        with self.db.session() as session:
            workers = repo.live_workers(session, WORKER_TIMEOUT)
            queued = repo.count_jobs(session, JobState.QUEUED)
            running = repo.count_jobs(session, JobState.RUNNING)
        return {
            "profile": self.profile.name,
            "profile_label": self.profile.label,
            "images_are_noise": self.profile.is_noise,
            "workers": [
                {"hostname": w.hostname, "queues": w.queues, "profile": w.profile, "model_loads": w.model_loads,
                 "last_seen": w.last_seen.isoformat() + "Z"}
                for w in workers
            ],
            "queue_depth": queued,
            "running": running,
        }

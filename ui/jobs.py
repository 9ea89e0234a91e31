"""Following a submitted job from a tab: poll its row and mirror its progress in Gradio's bar."""

from __future__ import annotations

import time
from typing import Callable, Generator, Iterator

import gradio as gr

from storage.models import JobState
from storage.quota import LimitExceeded
from tasks.client import InvalidRequest, JobView, QueueUnavailable
from ui.services import Services

POLL_SECONDS = 0.1
# Seconds between status-line redraws while a job runs (the progress bar follows every poll).
STATUS_SECONDS = 0.5
# Why a job (or an upload before it) is refused: the message says what to correct, and the UI shows it.
# LimitExceeded covers tasks.client.OverLimit (too many jobs waiting, too many pictures, storage full).
REFUSALS = (InvalidRequest, QueueUnavailable, LimitExceeded)


def track_job(services: Services, owner: str, job: JobView, progress: gr.Progress) -> Iterator[JobView]:
    """Poll the owner's job until it ends, mirroring its progress and stage in the bar. Yields the job about
    twice a second while it runs (for a status line), and its final view last."""
    shown = time.monotonic()
    while not job.finished:
        time.sleep(POLL_SECONDS)
        job = services.client.job(owner, job.id)
        progress(job.progress, desc=job.stage)
        if not job.finished and time.monotonic() - shown >= STATUS_SECONDS:
            shown = time.monotonic()
            yield job
    yield job


def wait_for_job(services: Services, owner: str, job: JobView, progress: gr.Progress) -> JobView:
    """Block until the owner's job has finished, showing its progress and stage; return its final view."""
    for job in track_job(services, owner, job, progress):
        pass
    return job


def warn_if_no_worker(services: Services, what: str = "job") -> None:
    if not services.client.health()["workers"]:
        gr.Warning(f"No worker is online: the {what} waits in the queue until one starts (python app.py worker).")


def follow_job(services: Services, owner: str, kind: str, raw: dict, origin: str, progress: gr.Progress, what: str,
               outputs: Callable[[str | None, str], tuple]) -> Generator[tuple, None, JobView | None]:
    """Submit a job for the owner and follow it: yields ``outputs(job_id, status)`` while it is queued and when
    it ends without results; returns the succeeded job, or None when it was cancelled. A refused request
    (over one of the user's limits too) or a failed job raises the message as a gr.Error."""
    try:
        job = services.client.submit(owner, kind, raw, origin=origin)
    except REFUSALS as exc:
        raise gr.Error(str(exc)) from exc
    warn_if_no_worker(services)
    yield outputs(job.id, f"Queued (seed {job.params['seed']}) · job `{job.id}`")
    job = wait_for_job(services, owner, job, progress)
    if job.state == JobState.CANCELLED:
        yield outputs(None, "Cancelled.")
        return None
    if job.state == JobState.FAILED:
        yield outputs(None, f"**Failed:** {job.error}")
        raise gr.Error(f"{what} failed: {job.error}")
    return job

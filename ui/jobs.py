"""Following a submitted job from a tab: poll its row and mirror its progress in Gradio's bar."""

from __future__ import annotations

import time

import gradio as gr

from tasks.client import JobView
from ui.services import Services

POLL_SECONDS = 0.1


def wait_for_job(services: Services, job: JobView, progress: gr.Progress) -> JobView:
    """Block until the job has finished, showing its progress and stage; return its final view."""
    while not job.finished:
        time.sleep(POLL_SECONDS)
        job = services.client.job(services.owner_id, job.id)
        progress(job.progress, desc=job.stage)
    return job


def warn_if_no_worker(services: Services, what: str = "job") -> None:
    if not services.client.health()["workers"]:
        gr.Warning(f"No worker is online: the {what} waits in the queue until one starts (python app.py worker).")

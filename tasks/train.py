"""LoRA tasks: train a style LoRA from a user's images, and check an uploaded LoRA against the base model.

Training checkpoints into the shared file store's work folder (``<files>/work/<job id>``); a redelivered job
(its worker was killed) resumes from the last checkpoint, and a job that ends in any other way removes them.
The LoRA's row carries the loss curve and the sample images as they come, for the live plot; the weights
are stored before the row points at them.
"""

from __future__ import annotations

import shutil
import time

from engine.cascade import Cancelled
from engine.lora import LoraMismatchError, check_lora
from engine.lora_request import TrainingRequest
from engine.lora_training import LoraTrainer, TrainingExample, TrainingState
from storage import repo
from storage.loras import LoraView
from storage.models import LoraState
from storage.pngmeta import png_with_params
from tasks.celery_app import CHECK_LORA, TRAIN_LORA, app
from tasks.generate import JobError, JobReporter, execute, job_profile
from tasks.worker import WorkerContext

# Seconds between writes of the loss curve to the LoRA's row.
METRICS_INTERVAL = 1.0


def _lora(context: WorkerContext, job) -> LoraView:
    lora = context.loras.get(job.owner_id, job.params["lora_id"])
    if lora is None:
        raise JobError("The LoRA was deleted.")
    return lora


class TrainingProgress:
    """Mirrors training into the job row (progress, stage, cancel flag) and the LoRA row (curve, samples)."""

    def __init__(self, context: WorkerContext, job, lora: LoraView):
        self.context, self.job, self.lora_id = context, job, lora.id
        self.reporter = JobReporter(context, job.id)
        self.samples: list[dict] = list(lora.metrics.get("samples", []))
        self.state = TrainingState()
        self.last_metrics = 0.0

    def metrics(self) -> dict:
        return {"losses": self.state.losses, "samples": self.samples, "step": self.state.step, "total": self.state.total,
                "resumed_from": self.state.resumed_from}

    def write_metrics(self) -> None:
        self.context.loras.record_metrics(self.lora_id, self.metrics())
        self.last_metrics = time.monotonic()

    def on_step(self, state: TrainingState) -> None:
        self.state = state
        resumed = f" (resumed at step {state.resumed_from})" if state.resumed_from else ""
        self.reporter.report(state.step / state.total, f"training: step {state.step}/{state.total}, loss {state.losses[-1]:.4f}{resumed}",
                             force=state.step == state.total)
        if time.monotonic() - self.last_metrics >= METRICS_INTERVAL or state.step == state.total:
            self.write_metrics()

    def on_sample(self, step: int, image) -> None:
        params = {"kind": "training_sample", "lora_id": self.lora_id, "step": step, "prompt": self.job.params["sample_prompt"],
                  "seed": self.job.params["seed"], "profile": self.job.params["profile"]}
        digest = self.context.files.put(png_with_params(image, params), "png")
        with self.context.db.session() as session:
            asset = repo.store_asset(
                session, owner_id=self.job.owner_id, job_id=self.job.id, kind="image", origin="train", stage="sample",
                output_index=step, file_hash=digest, mime="image/png", width=image.width, height=image.height,
                prompt=params["prompt"], params=params,
            )
            asset_id = asset.id
        self.samples = [s for s in self.samples if s["step"] != step] + [{"step": step, "asset_id": asset_id}]
        self.write_metrics()

    def should_cancel(self) -> bool:
        return self.reporter.should_cancel()


def run_train_job(context: WorkerContext, job) -> str:
    request = TrainingRequest.from_dict(job.params)
    lora = _lora(context, job)
    if lora.state == LoraState.READY and lora.job_id == job.id:
        return "trained"  # stored by an earlier delivery that died before finishing the job
    profile = job_profile(context, request.profile)
    workdir = context.files.root / "work" / job.id
    progress = TrainingProgress(context, job, lora)
    try:
        progress.reporter.write(0.0, "preparing the training images")
        examples = [TrainingExample(context.loras.training_image(item["hash"]), item["caption"]) for item in lora.dataset]
        trainer = LoraTrainer(context.cache.pipeline(profile, "base"), request)
        trained = trainer.train(examples, workdir, progress.on_step, progress.on_sample, progress.should_cancel)
    except Exception as exc:
        if isinstance(exc, Cancelled):
            note = f"Training was cancelled at step {progress.state.step}."
        elif isinstance(exc, FloatingPointError):
            note = f"Training diverged: {exc}."
        else:
            note = f"Training failed: {type(exc).__name__}: {exc}"
        context.loras.finish(lora.id, LoraState.FAILED, note)
        shutil.rmtree(workdir, ignore_errors=True)
        if isinstance(exc, FloatingPointError):
            raise JobError(note) from exc
        raise
    progress.state = trained.state
    progress.write_metrics()
    context.loras.finish(lora.id, LoraState.READY, weights=trained.weights)
    shutil.rmtree(workdir, ignore_errors=True)
    return f"trained: {trained.state.step} steps, final loss {trained.state.losses[-1]:.4f}"


def run_check_job(context: WorkerContext, job) -> str:
    """Match an uploaded LoRA's layers and shapes against the base model; reject it with the reason."""
    lora = _lora(context, job)
    profile = job_profile(context, lora.profile)
    progress = JobReporter(context, job.id)
    progress.write(0.2, "checking the LoRA against the base model")
    try:
        summary = check_lora(context.cache.pipeline(profile, "base"), str(context.loras.file_path(lora)), label=lora.name)
    except LoraMismatchError as exc:
        context.loras.finish(lora.id, LoraState.REJECTED, str(exc))
        raise JobError(str(exc)) from exc
    targets = " and ".join(summary["targets"])
    context.loras.finish(lora.id, LoraState.READY, f"{summary['matrices']} LoRA matrices fit the {targets}.")
    return "ready"


@app.task(name=TRAIN_LORA, bind=True)
def train_lora(self, job_id: str) -> None:
    execute(self, job_id, run_train_job)


@app.task(name=CHECK_LORA, bind=True)
def check_lora_task(self, job_id: str) -> None:
    execute(self, job_id, run_check_job)

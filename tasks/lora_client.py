"""What the web side uses for LoRAs: check training images, start a training job, upload a LoRA file (and
queue its check against the base model), and read a training's curve and samples. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from engine.lora_request import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_RANK,
    DEFAULT_STEPS,
    MAX_IMAGES,
    MIN_IMAGES,
    RANKS,
    TRAINABLE_FAMILIES,
    resolve_training,
    training_resolution,
)
from engine.params import ParamError
from storage.loras import ImageVerdict, LoraError, LoraLibrary, LoraView, check_training_images
from storage.quota import picture_limit
from tasks.client import InvalidRequest, JobView, StudioClient

# Points of the loss curve sent to a plot: enough to see its shape, few enough to redraw every second.
CURVE_POINTS = 400
# Images smaller than this share of the training resolution are refused: upscaling them would teach blur.
MIN_SIDE_SHARE = 0.5


@dataclass
class TrainingView:
    lora: LoraView
    job: JobView | None
    curve: list[tuple[int, float, float]]  # (step, loss, smoothed loss), thinned to CURVE_POINTS
    samples: list[dict]  # [{"step", "asset_id"}], oldest first


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average with bias correction, as training dashboards draw loss curves."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


class LoraClient:
    def __init__(self, library: LoraLibrary, client: StudioClient):
        self.library, self.client = library, client

    @property
    def min_side(self) -> int:
        return int(training_resolution(self.client.profile) * MIN_SIDE_SHARE)

    @property
    def limits(self) -> tuple[int, int]:
        return MIN_IMAGES, MAX_IMAGES

    @property
    def defaults(self) -> dict:
        """The training form's starting values and choices."""
        return {"rank": DEFAULT_RANK, "ranks": list(RANKS), "steps": DEFAULT_STEPS, "learning_rate": DEFAULT_LEARNING_RATE}

    def check_images(self, files: list[tuple[str, bytes]], captions: dict[str, str] | None = None) -> list[ImageVerdict]:
        images = [name for name, _ in files if not name.lower().endswith(".txt")]
        if len(images) > MAX_IMAGES:
            raise InvalidRequest(f"{len(images)} images were uploaded; a style is trained from {MIN_IMAGES} to "
                                 f"{MAX_IMAGES}. Keep the most typical ones.")
        return check_training_images(files, self.min_side, captions, max_bytes=picture_limit(self.library.quota))

    def start_training(self, owner_id: str, files: list[tuple[str, bytes]], name: str, trigger: str = "",
                       captions: dict[str, str] | None = None, settings: dict | None = None,
                       origin: str = "api") -> tuple[LoraView, JobView, list[ImageVerdict]]:
        """Check the images, store the usable ones as a new LoRA, and queue its training."""
        settings = dict(settings or {}, trigger=trigger)
        profile = self.client.profile
        try:
            resolve_training(dict(settings, lora_id="new"), profile)  # refuse bad settings before storing images
        except ParamError as exc:
            raise InvalidRequest(str(exc)) from exc
        verdicts = self.check_images(files, captions)
        self.client.check_limits(owner_id, {})  # over a limit: refused before anything is stored
        try:
            lora = self.library.create_for_training(owner_id, name, trigger, profile.name, profile.roles["base"].model,
                                                    verdicts, MIN_IMAGES, MAX_IMAGES)
        except LoraError as exc:
            raise InvalidRequest(str(exc)) from exc
        try:
            job = self.client.submit(owner_id, "train_lora", dict(settings, lora_id=lora.id, trigger=lora.trigger), origin)
        except InvalidRequest:
            self.library.delete(owner_id, lora.id)
            raise
        return self.library.get(owner_id, lora.id), job, verdicts

    def upload(self, owner_id: str, data: bytes, filename: str, name: str | None = None, weight: float = 1.0,
               origin: str = "api") -> tuple[LoraView, JobView]:
        """Store a safetensors LoRA (checked here for format and size) and queue its check against the base model."""
        profile = self.client.profile
        if profile.family not in TRAINABLE_FAMILIES:
            raise InvalidRequest(f"LoRAs work with SD 1.5 and SDXL profiles; this studio runs {profile.name} ({profile.family}).")
        self.client.check_limits(owner_id, {})  # over a limit: refused before the file is stored
        try:
            lora = self.library.upload(owner_id, data, filename, name, profile.name, profile.roles["base"].model, weight)
        except LoraError as exc:
            raise InvalidRequest(str(exc)) from exc
        job = self.client.submit(owner_id, "lora_check", {"lora_id": lora.id}, origin)
        return self.library.get(owner_id, lora.id), job

    def usable(self, owner_id: str) -> list[LoraView]:
        """The owner's LoRAs that fit the active profile and are ready."""
        return self.library.list(owner_id, profile=self.client.profile.name, usable_only=True)

    def training(self, owner_id: str, lora_id: str) -> TrainingView | None:
        lora = self.library.get(owner_id, lora_id)
        if lora is None:
            return None
        job = self.client.job(owner_id, lora.job_id) if lora.job_id else None
        losses = lora.metrics.get("losses", [])
        smooth = smoothed(losses)
        stride = max(1, len(losses) // CURVE_POINTS)
        curve = [(i + 1, losses[i], smooth[i]) for i in range(0, len(losses), stride)]
        if losses and curve[-1][0] != len(losses):
            curve.append((len(losses), losses[-1], smooth[-1]))
        samples = sorted(lora.metrics.get("samples", []), key=lambda s: s["step"])
        return TrainingView(lora, job, curve, samples)

"""A style-LoRA training request: the settings a user picks, checked, with defaults that suit the profile.

Torch-free, so the web process validates a request before it becomes a job.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from engine.params import ParamError, number_field, pin_seed
from engine.profiles import Profile

MIN_IMAGES, MAX_IMAGES = 5, 30
RANKS = (4, 8, 16, 32, 64, 128)
MAX_TRAIN_STEPS = 10_000
MAX_TRIGGER_CHARS = 40
DEFAULT_RANK = 16
DEFAULT_STEPS = 500
DEFAULT_LEARNING_RATE = 1e-4
# Families whose denoiser the trainer knows how to condition (SDXL needs pooled embeds and time ids).
TRAINABLE_FAMILIES = ("sd", "sdxl")


@dataclass
class TrainingRequest:
    lora_id: str
    trigger: str
    rank: int
    steps: int
    learning_rate: float
    batch_size: int
    resolution: int
    train_text_encoder: bool
    sample_every: int
    checkpoint_every: int
    seed: int
    sample_prompt: str
    profile: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingRequest":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def caption(self, text: str) -> str:
        """A training caption: the trigger word first, then the image's own caption when it has one."""
        return ", ".join(part for part in (self.trigger, text.strip()) if part)


def training_resolution(profile: Profile) -> int:
    """The square side images are trained at: the profile's native size."""
    return max(profile.default_size)


def resolve_training(raw: dict, profile: Profile, rng: random.Random | None = None) -> TrainingRequest:
    if profile.family not in TRAINABLE_FAMILIES:
        raise ParamError(f"LoRA training needs an SD 1.5 or SDXL profile; {profile.name} is {profile.family}.")
    lora_id = str(raw.get("lora_id") or "").strip()
    if not lora_id:
        raise ParamError("Name the LoRA to train (lora_id): upload its images first.")
    trigger = str(raw.get("trigger") or "").strip()
    if len(trigger) > MAX_TRIGGER_CHARS:
        raise ParamError(f"The trigger word has {len(trigger)} characters; the limit is {MAX_TRIGGER_CHARS}.")
    rank = number_field(raw, "rank", DEFAULT_RANK, "Rank", min(RANKS), max(RANKS))
    if rank not in RANKS:
        raise ParamError(f"Rank {rank} is not offered: choose one of {', '.join(map(str, RANKS))}.")
    steps = number_field(raw, "steps", DEFAULT_STEPS, "Training steps", 10, MAX_TRAIN_STEPS)
    learning_rate = number_field(raw, "learning_rate", DEFAULT_LEARNING_RATE, "Learning rate", 1e-6, 1e-2, whole=False)
    batch_size = number_field(raw, "batch_size", 1, "Batch size", 1, 8)
    sample_every = number_field(raw, "sample_every", max(10, steps // 5), "Sample every", 0, MAX_TRAIN_STEPS)
    checkpoint_every = number_field(raw, "checkpoint_every", max(10, steps // 10), "Checkpoint every", 1, MAX_TRAIN_STEPS)
    seed = pin_seed(raw, rng)
    sample_prompt = str(raw.get("sample_prompt") or "").strip() or ", ".join(p for p in (trigger, "a character standing in a landscape") if p)
    return TrainingRequest(
        lora_id=lora_id, trigger=trigger, rank=rank, steps=steps, learning_rate=learning_rate, batch_size=batch_size,
        resolution=training_resolution(profile), train_text_encoder=bool(raw.get("train_text_encoder", False)),
        sample_every=sample_every, checkpoint_every=checkpoint_every, seed=seed, sample_prompt=sample_prompt,
        profile=profile.name,
    )

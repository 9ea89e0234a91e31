"""The generation cascade: base, optional refiner, then super-resolution stages.

Plain values in (parameters, a profile, a pipeline cache, callbacks), PIL images out. Progress is
reported on every denoising step; cancellation is checked there too and stops the stage at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import diffusers
import torch
from PIL import Image

from engine.game.tiling import seamless
from engine.identity import IdentityCondition, identity_applied, identity_embeds
from engine.loader import PipelineCache
from engine.lora import LoraWeights, loras_applied
from engine.params import SAMPLERS, GenerationParams, batch_key, image_seed
from engine.profiles import Profile
from engine.prompt_encoding import prompt_arguments

# Per-upscaler arguments: the latent upscaler is used without guidance, as its model card does; the x4
# upscaler takes the job's guidance and noise-augments its low-resolution input (its card's default, 20).
UPSCALER_ARGUMENTS = {
    "latent_x2": lambda params: {"guidance_scale": 0},
    "x4": lambda params: {"guidance_scale": params.guidance, "noise_level": 20},
}


@dataclass(frozen=True)
class ControlCondition:
    """A ControlNet's condition image (already preprocessed, e.g. an edge map), its weight, and the profile
    role of the ControlNet that reads it."""

    image: Image.Image
    scale: float
    role: str = "controlnet"


class Cancelled(Exception):
    """The caller asked to stop; raised between denoising steps."""


@dataclass(frozen=True)
class StageProgress:
    stage: str
    stage_index: int
    stage_count: int
    step: int
    total_steps: int

    @property
    def fraction(self) -> float:
        within = min(1.0, self.step / self.total_steps) if self.total_steps else 1.0
        return min(1.0, (self.stage_index + within) / self.stage_count)


@dataclass
class CascadeResult:
    images: list[Image.Image]
    stage_images: dict[str, list[Image.Image]] = field(default_factory=dict)

    def split(self, counts: list[int]) -> list["CascadeResult"]:
        """One result per job of a batch, each with its ``count`` images, in the order the jobs were given."""
        parts, start = [], 0
        for count in counts:
            end = start + count
            parts.append(CascadeResult(self.images[start:end], {stage: images[start:end] for stage, images in self.stage_images.items()}))
            start = end
        return parts


def set_sampler(pipe: diffusers.DiffusionPipeline, sampler: str) -> None:
    class_name, extra = SAMPLERS[sampler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)


def _decode_latents(pipe: diffusers.DiffusionPipeline, latents: torch.Tensor) -> list[Image.Image]:
    # SDXL's VAE overflows in fp16 (its config says force_upcast); decode in fp32 as the pipeline does.
    upcast = pipe.vae.dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False)
    if upcast:
        pipe.vae.to(torch.float32)
    try:
        with torch.no_grad():
            scaled = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
            decoded = pipe.vae.decode(scaled, return_dict=False)[0]
    finally:
        if upcast:
            pipe.vae.to(torch.float16)
    return pipe.image_processor.postprocess(decoded, output_type="pil")


class _StepReporter:
    """Adapts both diffusers callback styles to one progress callback and one cancel check."""

    def __init__(self, stage: str, index: int, count: int, total: int, progress, should_cancel):
        self.stage, self.index, self.count, self.total = stage, index, count, total
        self.progress, self.should_cancel = progress, should_cancel

    def _step(self, step: int) -> None:
        # Progress first: a caller that stores it can read the cancel flag in the same round trip.
        self.progress(StageProgress(self.stage, self.index, self.count, step, self.total))
        if self.should_cancel():
            raise Cancelled(f"cancelled during {self.stage} at step {step}")

    def on_step_end(self, pipe, i, t, callback_kwargs):  # callback_on_step_end style
        self._step(i + 1)
        return callback_kwargs

    def legacy(self, i, t, latents):  # callback(step, timestep, latents) style of the upscalers
        self._step(i + 1)

    def start(self) -> None:
        self._step(0)


def run_cascade(
    params: GenerationParams,
    profile: Profile,
    cache: PipelineCache,
    progress: Callable[[StageProgress], None] = lambda p: None,
    should_cancel: Callable[[], bool] = lambda: False,
    keep_stage_images: bool = False,
    init_images: list[Image.Image] | None = None,
    loras: list[LoraWeights] | None = None,
    identity: IdentityCondition | None = None,
    control: list[ControlCondition] | None = None,
    batch: list[GenerationParams] | None = None,
) -> CascadeResult:
    """Run every stage of ``params``; with ``init_images`` the base stage is image-to-image at
    ``params.strength`` (variations of a picture), one init image per output or one for all. ``loras``
    (the files of ``params.loras``) apply to the base stage; ``params.tileable`` makes it seamless;
    ``identity`` keeps a person's face through the FaceID adapter; ``control`` leads the base stage
    with the profile's ControlNets, several at once each at its own weight (with ``init_images`` too).

    ``batch``: other jobs with the same ``batch_key`` (and prompts of the same ``encoded_length``, or the
    padding changes their pictures), drawn in the same pipeline calls, each with its own prompts and seeds;
    their images follow ``params``' own (``CascadeResult.split`` parts them)."""
    jobs = [params, *(batch or [])]
    if any(batch_key(job) != batch_key(params) for job in jobs[1:]):
        raise ValueError("Only jobs with the same batch_key can be drawn in one batch.")
    stages = params.stages
    stage_count = len(stages)
    result = CascadeResult(images=[])

    def reporter(stage: str, total: int) -> _StepReporter:
        r = _StepReporter(stage, stages.index(stage), stage_count, total, progress, should_cancel)
        r.start()
        return r

    # One CPU generator per image: image i of a job is reproducible alone from seed + i.
    seeds = [image_seed(job.seed, i) for job in jobs for i in range(job.count)]

    def generators() -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    prompts = [job.full_prompt for job in jobs for _ in range(job.count)]
    negatives = [job.full_negative_prompt for job in jobs for _ in range(job.count)]
    count = len(prompts)
    use_refiner = "refiner" in stages

    size = (params.width, params.height)
    if init_images:
        sized = [image.convert("RGB").resize(size, Image.LANCZOS) for image in init_images]
        init = dict(image=sized * count if len(sized) == 1 else sized, strength=params.strength)
        denoised_steps = max(1, int(params.steps * params.strength))
    else:
        init = dict(width=params.width, height=params.height)
        denoised_steps = params.steps
    if control:
        base = cache.with_controlnet(profile, tuple(c.role for c in control), image_to_image=bool(init_images))
        maps = [c.image.convert("RGB").resize(size, Image.LANCZOS) for c in control]
        scales = [c.scale for c in control]
        # One ControlNet takes plain values; several (a MultiControlNetModel) take lists in the same order.
        init["control_image" if init_images else "image"] = maps[0] if len(maps) == 1 else maps
        init["controlnet_conditioning_scale"] = scales[0] if len(scales) == 1 else scales
    else:
        base = cache.image_to_image(profile) if init_images else cache.pipeline(profile, "base")
    if identity:
        init["ip_adapter_image_embeds"] = identity_embeds(identity, count, params.guidance, base.unet.dtype, base.device)
    faceid = cache.faceid_weights(profile) if identity else {}
    set_sampler(base, params.sampler)
    base_steps = round(denoised_steps * profile.refiner_start) if use_refiner else denoised_steps
    adapted = bool(identity or loras or params.tileable)
    # Prompts are encoded inside the block: a LoRA may adapt the text encoders too.
    with cache.accelerated(base, profile, adapted), identity_applied(base, faceid, identity), loras_applied(base, loras or []), \
            seamless(base, params.tileable):
        base_kwargs = dict(
            **prompt_arguments(base, prompts, negatives), **init,
            num_inference_steps=params.steps, guidance_scale=params.guidance, generator=generators(),
            callback_on_step_end=reporter("base", base_steps).on_step_end,
        )
        if use_refiner:
            latents = base(**base_kwargs, denoising_end=profile.refiner_start, output_type="latent").images
        else:
            images = base(**base_kwargs).images
    if use_refiner:
        if keep_stage_images:
            result.stage_images["base"] = _decode_latents(base, latents)
        refiner = cache.pipeline(profile, "refiner")
        set_sampler(refiner, params.sampler)
        with cache.accelerated(refiner, profile):
            images = refiner(
                **prompt_arguments(refiner, prompts, negatives), image=latents, num_inference_steps=params.steps,
                denoising_start=profile.refiner_start, guidance_scale=params.guidance, generator=generators(),
                callback_on_step_end=reporter("refiner", denoised_steps - base_steps).on_step_end,
            ).images
        if keep_stage_images:
            result.stage_images["refiner"] = images
    elif keep_stage_images:
        result.stage_images["base"] = images

    for stage in ("latent_x2", "x4"):
        if stage in stages:
            upscaler = cache.pipeline(profile, stage)
            with cache.accelerated(upscaler, profile):
                images = upscaler(
                    prompt=prompts, negative_prompt=negatives, image=images, num_inference_steps=profile.upscale_steps,
                    generator=generators(), callback=reporter(stage, profile.upscale_steps).legacy, callback_steps=1,
                    **UPSCALER_ARGUMENTS[stage](params),
                ).images
            if keep_stage_images:
                result.stage_images[stage] = images

    result.images = images
    return result

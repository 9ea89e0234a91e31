"""Loading pipelines through ``from_pretrained`` and keeping them in a per-worker cache.

The cache is keyed by (role, model, dtype, device); the second job with the same model loads nothing.
The refiner borrows the base's VAE and second text encoder instead of loading its own copies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import diffusers
import torch
import transformers

from engine.profiles import Profile, RoleSpec

log = logging.getLogger(__name__)

# Components the refiner takes from the already loaded base pipeline (as SDXL's docs recommend).
SHARED_WITH_BASE = {"refiner": ("vae", "text_encoder_2")}


class ModelUnavailableError(RuntimeError):
    """A model that is neither a local folder, nor cached, nor downloadable."""


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype
    cpu_offload: bool = False

    @classmethod
    def choose(cls, device: str = "auto", cpu_offload: bool = False) -> "Placement":
        """CUDA in half precision when there is a GPU, else the CPU in float32."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        return cls(device=device, dtype=dtype, cpu_offload=cpu_offload and device.startswith("cuda"))


@dataclass(frozen=True)
class LoadedModel:
    """A transformers model with its tokenizer or processor (the refiner's LLM, the CLIP scorer)."""

    model: transformers.PreTrainedModel
    processor: object


class PipelineCache:
    def __init__(self, placement: Placement):
        self.placement = placement
        self._loaded: dict[tuple[str, str, str, str], object] = {}
        self.loads = 0  # from_pretrained calls made, for tests and the health page

    def _key(self, role: str, spec: RoleSpec) -> tuple[str, str, str, str]:
        return (role, spec.model, str(self.placement.dtype), self.placement.device)

    def pipeline(self, profile: Profile, role: str) -> diffusers.DiffusionPipeline:
        spec = profile.roles[role]
        key = self._key(role, spec)
        if key not in self._loaded:
            shared = {}
            if role in SHARED_WITH_BASE:
                base = self.pipeline(profile, "base")
                shared = {name: getattr(base, name) for name in SHARED_WITH_BASE[role] if getattr(base, name, None) is not None}
            self._loaded[key] = self._load_pipeline(role, spec, shared)
        return self._loaded[key]

    def image_to_image(self, profile: Profile) -> diffusers.DiffusionPipeline:
        """The base model as an image-to-image pipeline, sharing the base's loaded components."""
        key = ("base:img2img", profile.roles["base"].model, str(self.placement.dtype), self.placement.device)
        if key not in self._loaded:
            base = self.pipeline(profile, "base")
            try:
                pipe = diffusers.AutoPipelineForImage2Image.from_pipe(base)
            except ValueError as exc:
                raise ModelUnavailableError(f"The {profile.name} profile's base model has no image-to-image pipeline.") from exc
            pipe.set_progress_bar_config(disable=True)
            self._loaded[key] = pipe
        return self._loaded[key]

    def model(self, profile: Profile, role: str) -> LoadedModel:
        spec = profile.roles[role]
        key = self._key(role, spec)
        if key not in self._loaded:
            self._loaded[key] = self._load_model(role, spec)
        return self._loaded[key]

    def _from_pretrained(self, role: str, spec: RoleSpec, load):
        log.info("loading %s model %s as %s", role, spec.model, spec.pipeline)
        try:
            loaded = load()
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"Could not load the {role} model {spec.model!r}: it is not a local folder, not in the "
                f"Hugging Face cache, and could not be downloaded ({type(exc).__name__}: {exc})"
            ) from exc
        self.loads += 1
        return loaded

    def _load_model(self, role: str, spec: RoleSpec) -> LoadedModel:
        model_cls = getattr(transformers, spec.pipeline, None)
        if model_cls is None:
            raise ModelUnavailableError(f"The {role} model names an unknown model class {spec.pipeline!r}.")

        def load() -> LoadedModel:
            model = model_cls.from_pretrained(spec.model, dtype=self.placement.dtype).to(self.placement.device).eval()
            return LoadedModel(model, transformers.AutoProcessor.from_pretrained(spec.model))

        return self._from_pretrained(role, spec, load)

    def _load_pipeline(self, role: str, spec: RoleSpec, shared: dict) -> diffusers.DiffusionPipeline:
        pipeline_cls = getattr(diffusers, spec.pipeline, None)
        if pipeline_cls is None:
            raise ModelUnavailableError(f"The {role} model names an unknown pipeline class {spec.pipeline!r}.")
        kwargs = dict(dtype=self.placement.dtype, **shared)
        if spec.variant and self.placement.dtype == torch.float16:
            kwargs["variant"] = spec.variant
        pipe = self._from_pretrained(role, spec, lambda: pipeline_cls.from_pretrained(spec.model, **kwargs))
        if self.placement.cpu_offload:
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.placement.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

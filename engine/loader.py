"""Loading pipelines through ``from_pretrained`` and keeping them in a per-worker cache.

The cache is keyed by (role, model, dtype, device); the second job with the same model loads nothing.
The refiner and the inpainting model borrow the base's VAE and text encoders instead of loading their own
copies; a profile without an inpainting model inpaints with the base's own weights (``from_pipe``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import transformers

from engine.fast_path import DTYPES, FastDenoiser, attention_kernel, denoiser_name, prepare_model, prepare_pipeline
from engine.profiles import Profile, RoleSpec

log = logging.getLogger(__name__)

# Components the refiner takes from the already loaded base pipeline (as SDXL's docs recommend).
SHARED_WITH_BASE = {
    "refiner": ("vae", "text_encoder_2"),
    "inpaint": ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"),
}
# Roles that are one diffusers model rather than a pipeline.
MODEL_ROLES = ("controlnet", "controlnet_pose", "controlnet_depth")


class ModelUnavailableError(RuntimeError):
    """A model that is neither a local folder, nor cached, nor downloadable."""


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype
    cpu_offload: bool = False

    @classmethod
    def choose(cls, device: str = "auto", cpu_offload: bool = False) -> "Placement":
        """CUDA in half precision when there is a GPU, else the CPU in float32 (a profile's fast path may
        name another precision for its pipelines)."""
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
        self._fast_denoisers: dict[int, FastDenoiser] = {}  # by id() of the denoiser module they speed up
        self.loads = 0  # from_pretrained calls made, for tests and the health page

    def _key(self, role: str, spec: RoleSpec, dtype: torch.dtype | None = None) -> tuple[str, str, str, str]:
        return (role, spec.model, str(dtype or self.placement.dtype), self.placement.device)

    def dtype(self, profile: Profile) -> torch.dtype:
        """The precision of the profile's pipelines on this device: its fast path's, or the machine's default."""
        name = profile.fast_path(self.placement.device).dtype
        return DTYPES[name] if name else self.placement.dtype

    def pipeline(self, profile: Profile, role: str) -> diffusers.DiffusionPipeline:
        spec = profile.roles[role]
        key = self._key(role, spec, self.dtype(profile))
        if key not in self._loaded:
            shared = {}
            if role in SHARED_WITH_BASE:
                base = self.pipeline(profile, "base")
                shared = {name: getattr(base, name) for name in SHARED_WITH_BASE[role] if getattr(base, name, None) is not None}
            self._loaded[key] = self._load_pipeline(profile, role, spec, shared)
        return self._loaded[key]

    @contextmanager
    def accelerated(self, pipe: diffusers.DiffusionPipeline, profile: Profile, adapted: bool = False):
        """Run ``pipe`` on the profile's fast path for the block: its attention kernel, and, unless the job
        ``adapted`` the denoiser (LoRAs, an identity adapter, seamless padding), the fused and compiled
        denoiser, made on the first run and kept."""
        fast = profile.fast_path(self.placement.device)
        with attention_kernel(fast):
            name = denoiser_name(pipe)
            if adapted or name is None or not (fast.fuse_qkv or fast.compile):
                yield pipe
                return
            module = getattr(pipe, name)
            denoiser = self._fast_denoisers.get(id(module))
            if denoiser is None:
                denoiser = self._fast_denoisers[id(module)] = FastDenoiser(module, fast)
            with denoiser.applied(pipe):
                yield pipe

    def _derived(self, key: tuple, profile: Profile, build, unavailable: str) -> diffusers.DiffusionPipeline:
        """A pipeline made from loaded ones with ``from_pipe``: it shares their weights and loads nothing.
        ``build`` passes the profile's dtype: ``from_pipe`` casts the shared modules, in place, to the
        dtype it is given (float32 when none is), which would change the loaded pipelines too."""
        key = (*key, str(self.dtype(profile)), self.placement.device)
        if key not in self._loaded:
            try:
                pipe = build()
            except ValueError as exc:
                raise ModelUnavailableError(unavailable) from exc
            pipe.set_progress_bar_config(disable=True)
            self._loaded[key] = pipe
        return self._loaded[key]

    def image_to_image(self, profile: Profile) -> diffusers.DiffusionPipeline:
        """The base model as an image-to-image pipeline, sharing the base's loaded components."""
        return self._derived(("base:img2img", profile.roles["base"].model), profile,
                             lambda: diffusers.AutoPipelineForImage2Image.from_pipe(self.pipeline(profile, "base"), dtype=self.dtype(profile)),
                             f"The {profile.name} profile's base model has no image-to-image pipeline.")

    def inpainting(self, profile: Profile, controlnet: bool = False) -> diffusers.DiffusionPipeline:
        """The profile's inpainting model (or the base as an inpainting pipeline), with its ControlNet
        when ``controlnet`` is set."""
        role = "inpaint" if "inpaint" in profile.roles else "base"
        if role == "inpaint":
            pipe = self.pipeline(profile, "inpaint")
        else:
            pipe = self._derived(("base:inpaint", profile.roles["base"].model), profile,
                                 lambda: diffusers.AutoPipelineForInpainting.from_pipe(self.pipeline(profile, "base"), dtype=self.dtype(profile)),
                                 f"The {profile.name} profile's base model has no inpainting pipeline.")
        if not controlnet:
            return pipe
        if "controlnet" not in profile.roles:
            raise ModelUnavailableError(f"The {profile.name} profile has no ControlNet.")
        return self._derived((f"{role}:inpaint+controlnet", profile.roles[role].model, profile.roles["controlnet"].model), profile,
                             lambda: diffusers.AutoPipelineForInpainting.from_pipe(pipe, controlnet=self.pipeline(profile, "controlnet"),
                                                                                   dtype=self.dtype(profile)),
                             f"The {profile.name} profile's inpainting model cannot take a ControlNet.")

    def with_controlnet(self, profile: Profile, roles: tuple[str, ...] = ("controlnet",),
                        image_to_image: bool = False) -> diffusers.DiffusionPipeline:
        """The base model led by the profile's ControlNets in ``roles`` (several make a MultiControlNetModel,
        in that order), as a text-to-image pipeline or, with ``image_to_image``, an image-to-image one."""
        missing = [role for role in roles if role not in profile.roles]
        if missing:
            raise ModelUnavailableError(f"The {profile.name} profile has no {', '.join(missing)} model.")
        auto = diffusers.AutoPipelineForImage2Image if image_to_image else diffusers.AutoPipelineForText2Image

        def build():
            controlnets = [self.pipeline(profile, role) for role in roles]
            return auto.from_pipe(self.pipeline(profile, "base"), controlnet=controlnets[0] if len(controlnets) == 1 else controlnets,
                                  dtype=self.dtype(profile))

        kind = "img2img+controlnet" if image_to_image else "controlnet"
        return self._derived((f"base:{kind}", profile.roles["base"].model, *(profile.roles[role].model for role in roles)), profile, build,
                             f"The {profile.name} profile's base model cannot take a ControlNet"
                             f"{' in image-to-image' if image_to_image else ''}.")

    def faces(self, profile: Profile):
        """The profile's insightface pack, prepared: a pack name insightface downloads into its own folder
        (``~/.insightface``), or a local folder of ONNX models."""
        if "faces" not in profile.roles:
            raise ModelUnavailableError(f"The {profile.name} profile names no face-analysis pack.")
        spec = profile.roles["faces"]
        key = self._key("faces", spec)
        if key not in self._loaded:
            self._loaded[key] = self._from_pretrained("faces", spec, lambda: self._face_analysis(spec))
        return self._loaded[key]

    def _face_analysis(self, spec: RoleSpec):
        from insightface.app import FaceAnalysis

        from engine.faces import DETECTION_SIZE, FaceAnalyzer

        cuda = self.placement.device.startswith("cuda")
        if "/" in spec.model and not Path(spec.model).is_dir():
            raise OSError(f"no face-analysis pack folder at {spec.model}")
        analysis = FaceAnalysis(name=spec.model, providers=self._onnx_providers(), allowed_modules=["detection", "recognition"])
        analysis.prepare(ctx_id=0 if cuda else -1, det_size=DETECTION_SIZE)
        return FaceAnalyzer(analysis)

    def faceid_weights(self, profile: Profile) -> dict:
        """The profile's IP-Adapter FaceID checkpoint, read once per worker."""
        if "identity" not in profile.roles:
            raise ModelUnavailableError(f"The {profile.name} profile has no identity adapter, so it cannot keep a face: "
                                        "use the sdxl or sd15 profile.")
        from engine.identity import faceid_weight_file, read_faceid_weights

        spec = profile.roles["identity"]
        key = self._key("identity", spec)
        if key not in self._loaded:
            self._loaded[key] = self._from_pretrained("identity", spec, lambda: read_faceid_weights(faceid_weight_file(spec)))
        return self._loaded[key]

    def _onnx_providers(self) -> list[str]:
        import onnxruntime

        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.placement.device.startswith("cuda") else ["CPUExecutionProvider"]
        return [p for p in wanted if p in onnxruntime.get_available_providers()]

    def segmenter(self, profile: Profile):
        """The profile's rembg session: a model rembg knows by name, or a local ONNX file with u2net's inputs."""
        if "segmenter" not in profile.roles:
            raise ModelUnavailableError(f"The {profile.name} profile names no background-removal model.")
        spec = profile.roles["segmenter"]
        key = self._key("segmenter", spec)
        if key not in self._loaded:
            self._loaded[key] = self._from_pretrained("segmenter", spec, lambda: self._rembg_session(spec))
        return self._loaded[key]

    def _rembg_session(self, spec: RoleSpec):
        from rembg import new_session

        providers = self._onnx_providers()
        if spec.model.endswith(".onnx"):
            # rembg accepts custom models only inside its model folder ($U2NET_HOME or $REMBG_HOME).
            return new_session("u2net_custom", model_path=spec.model, providers=providers)
        return new_session(spec.model, providers=providers)

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

    def _load_pipeline(self, profile: Profile, role: str, spec: RoleSpec, shared: dict) -> diffusers.DiffusionPipeline:
        pipeline_cls = getattr(diffusers, spec.pipeline, None)
        if pipeline_cls is None:
            raise ModelUnavailableError(f"The {role} model names an unknown pipeline class {spec.pipeline!r}.")
        dtype = self.dtype(profile)
        kwargs = dict(dtype=dtype, **shared)
        # A half-precision variant (fp16 files) halves the download for bfloat16 too: loading casts it.
        if spec.variant and dtype in (torch.float16, torch.bfloat16):
            kwargs["variant"] = spec.variant
        pipe = self._from_pretrained(role, spec, lambda: pipeline_cls.from_pretrained(spec.model, **kwargs))
        fast = profile.fast_path(self.placement.device)
        if role in MODEL_ROLES:
            prepare_model(pipe, fast)
            return pipe.to(self.placement.device).eval()
        prepare_pipeline(pipe, fast, self.placement.device, self.placement.cpu_offload)
        pipe.set_progress_bar_config(disable=True)
        return pipe

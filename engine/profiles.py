"""Model profiles: which model serves each role, read from ``profiles.json``.

A user adds a profile by editing that data file (or pointing ``STUDIO_PROFILES_FILE`` at another one);
no code changes. This module never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_PROFILES_FILE = Path(__file__).with_name("profiles.json")
# Stages of the cascade in the order they run; the base always runs.
STAGE_ORDER = ("base", "refiner", "latent_x2", "x4")
STAGE_LABELS = {
    "base": "Base",
    "refiner": "Refiner",
    "latent_x2": "Upscale x2 (latent)",
    "x4": "Upscale x4",
}
# Output size factor of each super-resolution stage.
STAGE_SCALE = {"latent_x2": 2, "x4": 4}


# Precisions a profile may name for its pipelines, per device type.
DTYPE_NAMES = ("float32", "float16", "bfloat16")
ATTENTION_KINDS = ("sdpa", "classic")  # PyTorch's scaled_dot_product_attention, or diffusers' plain matmul-softmax
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


class ProfileError(ValueError):
    """An unknown profile name or a malformed profile entry."""


@dataclass(frozen=True)
class FastPath:
    """Switches that make the same weights run faster on one kind of device, set per profile and device type
    in its ``fast_path``. The defaults are plain diffusers: the machine's precision, SDPA attention, nothing else."""

    dtype: str | None = None  # one of DTYPE_NAMES; None: float16 on a GPU, float32 on a CPU
    attention: str = "sdpa"
    sdpa_backend: str = "auto"  # which SDPA kernel to insist on; auto lets PyTorch choose
    channels_last: bool = False  # the denoiser's and VAE's convolutions in NHWC layout
    fuse_qkv: bool = False  # one matmul for query, key and value (diffusers' fuse_qkv_projections)
    compile: bool = False  # torch.compile the denoiser, once per worker
    compile_mode: str = "default"
    vae_tiling: bool = False  # decode pictures larger than the VAE's own size tile by tile
    vae_slicing: bool = False  # decode a batch one picture at a time
    cpu_offload: bool = False  # keep only the running model on the GPU
    batch_max: int = 1  # pictures of several waiting jobs with the same settings drawn in one batch

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> "FastPath":
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ProfileError(f"{where}: unknown fast_path switch {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(cls.__dataclass_fields__)}.")
        fast = cls(**raw)
        if fast.dtype is not None and fast.dtype not in DTYPE_NAMES:
            raise ProfileError(f"{where}: fast_path dtype must be one of {', '.join(DTYPE_NAMES)}.")
        if fast.attention not in ATTENTION_KINDS:
            raise ProfileError(f"{where}: fast_path attention must be one of {', '.join(ATTENTION_KINDS)}.")
        if fast.sdpa_backend not in SDPA_BACKENDS:
            raise ProfileError(f"{where}: fast_path sdpa_backend must be one of {', '.join(SDPA_BACKENDS)}.")
        if not isinstance(fast.batch_max, int) or fast.batch_max < 1:
            raise ProfileError(f"{where}: fast_path batch_max must be a whole number of at least 1.")
        return fast


@dataclass(frozen=True)
class FastMode:
    """A distilled few-step mode ("Fast" in the UI): a LoRA (LCM-LoRA, Lightning, Hyper-SD...) applied over
    the base model, with the sampler, steps and guidance it was distilled for."""

    label: str
    model: str  # a hub repository or a local folder holding the LoRA
    weight_name: str
    sampler: str
    steps: int
    guidance: float


@dataclass(frozen=True)
class RoleSpec:
    model: str
    pipeline: str
    variant: str | None = None
    weight_name: str | None = None  # a file inside ``model`` (an adapter checkpoint)


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    family: str
    roles: dict[str, RoleSpec]
    default_size: tuple[int, int]
    min_size: int
    max_size: int
    steps: int
    guidance: float
    sampler: str
    refiner_start: float = 0.8
    upscale_steps: int = 20
    offline: bool = False
    prompt_language: str = "en"  # "zh": the base model reads Chinese, so Chinese prompts go in as written
    fast_paths: dict[str, FastPath] = field(default_factory=dict)  # device type ("cuda", "cpu") -> its switches
    fast_mode: FastMode | None = None

    @property
    def stages(self) -> list[str]:
        """The cascade stages this profile can run, in order."""
        return [s for s in STAGE_ORDER if s in self.roles]

    def fast_path(self, device: str) -> FastPath:
        """The switches for ``device`` ("cuda:1" counts as "cuda"); plain diffusers where the profile sets none."""
        return self.fast_paths.get(device.split(":")[0], FastPath())

    @property
    def is_noise(self) -> bool:
        """True for the tiny profile, whose random weights only make noise."""
        return self.offline


def load_profiles(path: str | os.PathLike | None = None, models_dir: str | os.PathLike = "data/models") -> dict[str, Profile]:
    """Read every profile from the data file, expanding ``{models_dir}`` in model paths."""
    path = Path(path or DEFAULT_PROFILES_FILE)
    raw = json.loads(path.read_text(encoding="utf-8"))
    models_dir = str(Path(models_dir).resolve())
    profiles = {}
    for name, entry in raw.items():
        try:
            roles = {
                role: RoleSpec(
                    model=spec["model"].replace("{models_dir}", models_dir),
                    pipeline=spec["pipeline"],
                    variant=spec.get("variant"),
                    weight_name=spec.get("weight_name"),
                )
                for role, spec in entry["roles"].items()
            }
            if "base" not in roles:
                raise ProfileError(f"profile {name!r} in {path} has no 'base' role")
            profiles[name] = Profile(
                name=name,
                label=entry.get("label", name),
                family=entry["family"],
                roles=roles,
                default_size=tuple(entry["size"]["default"]),
                min_size=int(entry["size"]["min"]),
                max_size=int(entry["size"]["max"]),
                steps=int(entry["steps"]),
                guidance=float(entry["guidance"]),
                sampler=entry["sampler"],
                refiner_start=float(entry.get("refiner_start", 0.8)),
                upscale_steps=int(entry.get("upscale_steps", 20)),
                offline=bool(entry.get("offline", False)),
                prompt_language=entry.get("prompt_language", "en"),
                fast_paths={device: FastPath.from_dict(switches, f"profile {name!r} in {path}, {device}")
                            for device, switches in entry.get("fast_path", {}).items()},
                fast_mode=_fast_mode(entry.get("fast_mode"), models_dir),
            )
        except KeyError as exc:
            raise ProfileError(f"profile {name!r} in {path} lacks the field {exc.args[0]!r}") from exc
    return profiles


def _fast_mode(raw: dict | None, models_dir: str) -> FastMode | None:
    if raw is None:
        return None
    return FastMode(label=raw["label"], model=raw["model"].replace("{models_dir}", models_dir), weight_name=raw["weight_name"],
                    sampler=raw["sampler"], steps=int(raw["steps"]), guidance=float(raw["guidance"]))


def get_profile(profiles: dict[str, Profile], name: str) -> Profile:
    try:
        return profiles[name]
    except KeyError:
        known = ", ".join(sorted(profiles) + ["auto"])
        raise ProfileError(f"Unknown profile {name!r}. Known profiles: {known}.") from None


def cuda_present() -> bool:
    """Whether an NVIDIA GPU is usable, found without importing torch."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def model_obtainable(model: str, files: tuple[str, ...] = ("model_index.json", "config.json")) -> bool:
    """A local folder exists, the hub id is in the local cache (one of ``files`` is), or the hub answers for it."""
    if Path(model).exists():
        return True
    if "/" not in model or model.startswith(("/", ".")):
        return False
    from huggingface_hub import model_info, try_to_load_from_cache

    # A pipeline's cache has model_index.json; a single model's (a ControlNet, a transformers model) config.json;
    # an adapter's, its weight file.
    if any(isinstance(try_to_load_from_cache(model, name), str) for name in files):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        model_info(model, timeout=5)
        return True
    except Exception as exc:  # any network or hub error means "not obtainable now"
        log.info("model %s is not obtainable: %s", model, exc)
        return False


def resolve_auto(profiles: dict[str, Profile], cuda: bool | None = None, obtainable=model_obtainable) -> Profile:
    """``auto``: sdxl on a CUDA GPU, sd15 on a CPU, each only if its base model can be had; else tiny."""
    cuda = cuda_present() if cuda is None else cuda
    preferred = "sdxl" if cuda else "sd15"
    candidate = profiles.get(preferred)
    if candidate and obtainable(candidate.roles["base"].model):
        return candidate
    return profiles["tiny"]


def select_profile(profiles: dict[str, Profile], name: str) -> Profile:
    return resolve_auto(profiles) if name == "auto" else get_profile(profiles, name)

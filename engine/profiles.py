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
from dataclasses import dataclass
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


class ProfileError(ValueError):
    """An unknown profile name or a malformed profile entry."""


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

    @property
    def stages(self) -> list[str]:
        """The cascade stages this profile can run, in order."""
        return [s for s in STAGE_ORDER if s in self.roles]

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
            )
        except KeyError as exc:
            raise ProfileError(f"profile {name!r} in {path} lacks the field {exc.args[0]!r}") from exc
    return profiles


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


def model_obtainable(model: str) -> bool:
    """A local folder exists, the hub id is in the local cache, or the hub answers for it."""
    if Path(model).exists():
        return True
    if "/" not in model or model.startswith(("/", ".")):
        return False
    from huggingface_hub import model_info, try_to_load_from_cache

    # A pipeline's cache has model_index.json; a single model's (a ControlNet, a transformers model) config.json.
    if any(isinstance(try_to_load_from_cache(model, name), str) for name in ("model_index.json", "config.json")):
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

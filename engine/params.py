"""Generation parameters: defaults from the profile, validation with messages a user can act on.

Torch-free, so the web process validates a request before it becomes a job.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from engine.profiles import STAGE_LABELS, STAGE_ORDER, STAGE_SCALE, Profile
from engine.styles import Style

MAX_PROMPT_CHARS = 2000
MAX_COUNT = 8
MAX_STEPS = 150
MAX_SEED = 2**32 - 1

# Sampler name -> (diffusers scheduler class, extra config). Names follow what users of A1111 and
# Fooocus know; the classes are diffusers' own.
SAMPLERS: dict[str, tuple[str, dict]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddpm": ("DDPMScheduler", {}),
}

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "4:5", "21:9")


class ParamError(ValueError):
    """A generation request a user must correct; the message says how."""


@dataclass
class GenerationParams:
    prompt: str
    negative_prompt: str
    style: str
    full_prompt: str
    full_negative_prompt: str
    width: int
    height: int
    count: int
    steps: int
    guidance: float
    sampler: str
    seed: int
    stages: list[str] = field(default_factory=lambda: ["base"])
    keep_stage_images: bool = False
    profile: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationParams":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def output_size(self) -> tuple[int, int]:
        """Width and height of the final image after every super-resolution stage."""
        scale = 1
        for stage in self.stages:
            scale *= STAGE_SCALE.get(stage, 1)
        return self.width * scale, self.height * scale


def image_seed(batch_seed: int, index: int) -> int:
    """The seed that reproduces image ``index`` of a batch on its own."""
    return (batch_seed + index) % (MAX_SEED + 1)


def size_for_aspect(aspect: str, long_side: int) -> tuple[int, int]:
    """Width and height, multiples of 8, whose longer side is ``long_side`` at the given ratio."""
    try:
        w, h = (int(x) for x in aspect.split(":"))
    except ValueError:
        raise ParamError(f"Aspect ratio {aspect!r} must look like '16:9'.") from None
    if w >= h:
        width, height = long_side, long_side * h / w
    else:
        width, height = long_side * w / h, long_side
    return max(8, round(width / 8) * 8), max(8, round(height / 8) * 8)


def _int(raw: dict, key: str, default: int) -> int:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"{key} must be a whole number, not {value!r}.") from None
    if not as_float.is_integer():
        raise ParamError(f"{key} must be a whole number, not {value!r}.")
    return int(as_float)


def resolve_generation(raw: dict, profile: Profile, styles: dict[str, Style], rng: random.Random | None = None) -> GenerationParams:
    """Fill the profile's defaults into a request, check every field, and pin a random seed."""
    prompt = str(raw.get("prompt") or "").strip()
    if not prompt:
        raise ParamError("The prompt is empty: describe the picture you want.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ParamError(f"The prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.")
    negative = str(raw.get("negative_prompt") or "").strip()
    if len(negative) > MAX_PROMPT_CHARS:
        raise ParamError(f"The negative prompt has {len(negative)} characters; the limit is {MAX_PROMPT_CHARS}.")

    style_name = raw.get("style") or "none"
    if style_name not in styles:
        raise ParamError(f"Unknown style {style_name!r}. Known styles: {', '.join(sorted(styles))}.")
    full_prompt, full_negative = styles[style_name].apply(prompt, negative)

    width = _int(raw, "width", profile.default_size[0])
    height = _int(raw, "height", profile.default_size[1])
    for name, value in (("Width", width), ("Height", height)):
        if value % 8:
            raise ParamError(f"{name} {value} px is not a multiple of 8.")
        if not profile.min_size <= value <= profile.max_size:
            raise ParamError(
                f"{name} {value} px is outside the {profile.name} profile's range "
                f"{profile.min_size}-{profile.max_size} px."
            )

    count = _int(raw, "count", 1)
    if not 1 <= count <= MAX_COUNT:
        raise ParamError(f"Image count {count} is out of range: choose 1 to {MAX_COUNT}.")
    steps = _int(raw, "steps", profile.steps)
    if not 1 <= steps <= MAX_STEPS:
        raise ParamError(f"Steps {steps} is out of range: choose 1 to {MAX_STEPS}.")
    guidance_raw = raw.get("guidance")
    try:
        guidance = profile.guidance if guidance_raw in (None, "") else float(guidance_raw)
    except (TypeError, ValueError):
        raise ParamError(f"Guidance must be a number, not {raw.get('guidance')!r}.") from None
    if not 0 <= guidance <= 30:
        raise ParamError(f"Guidance {guidance} is out of range: choose 0 to 30.")
    sampler = raw.get("sampler") or profile.sampler
    if sampler not in SAMPLERS:
        raise ParamError(f"Unknown sampler {sampler!r}. Known samplers: {', '.join(SAMPLERS)}.")

    seed_raw = raw.get("seed")
    if seed_raw is None or seed_raw == "" or seed_raw == -1 or seed_raw == "random":
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
    else:
        seed = _int(raw, "seed", 0)
        if not 0 <= seed <= MAX_SEED:
            raise ParamError(f"Seed {seed} is out of range: use 0 to {MAX_SEED}, or -1 for random.")

    requested = raw.get("stages") or ["base"]
    if isinstance(requested, str):
        requested = [requested]
    unknown = [s for s in requested if s not in profile.stages]
    if unknown:
        available = ", ".join(f"{s} ({STAGE_LABELS[s]})" for s in profile.stages)
        raise ParamError(f"The {profile.name} profile has no stage {', '.join(map(str, unknown))}; it has {available}.")
    stages = [s for s in STAGE_ORDER if s == "base" or s in requested]

    return GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        style=style_name,
        full_prompt=full_prompt,
        full_negative_prompt=full_negative,
        width=width,
        height=height,
        count=count,
        steps=steps,
        guidance=guidance,
        sampler=sampler,
        seed=seed,
        stages=stages,
        keep_stage_images=bool(raw.get("keep_stage_images", False)),
        profile=profile.name,
    )

"""Generation parameters: defaults from the profile, validation with messages a user can act on.

Torch-free, so the web process validates a request before it becomes a job.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field

from engine.profiles import STAGE_LABELS, STAGE_ORDER, STAGE_SCALE, Profile
from engine.styles import REFERENCE_LONG_SIDE, Style

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
    # The few-step samplers distilled models are made for: LCM-LoRA's, and Lightning's/Turbo's Euler with
    # the timesteps counted from the end.
    "lcm": ("LCMScheduler", {}),
    "euler_trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}

# Stages whose network needs sides in multiples of more than 8 px: the x2 latent upscaler works on
# latents (1/8 of the image) doubled, then halves them three times.
STAGE_SIZE_MULTIPLE = {"latent_x2": 32}
# Sizes picked from an aspect ratio are multiples of this, so every stage accepts them.
ASPECT_SIZE_MULTIPLE = 32

# How much of the source image an image-to-image job redraws unless asked otherwise: enough for new
# details, little enough to keep the composition (the chat's "variations").
DEFAULT_STRENGTH = 0.35

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "4:5", "21:9")


class ParamError(ValueError):
    """A generation request a user must correct; the message says how."""


def is_name(value) -> bool:
    """Whether a request's value can name a catalogue entry (a style, sampler, stage...): only text can. A list
    or an object sent where a name belongs is an unknown name, not a crash on ``value in catalogue``."""
    return isinstance(value, str)


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
    # Image-to-image: the asset (or material) the picture starts from, and how much of it is redrawn (1 = all).
    init_asset_id: str | None = None
    init_material_id: str | None = None
    strength: float = 1.0
    # What image-to-image keeps of the source, each {"kind", "weight"}: a ControlNet reads the kind's map of it.
    controls: list[dict] = field(default_factory=list)
    # LoRAs applied to the base stage, each {"name", "weight"} and either "lora_id" + "file_hash" (trained
    # or uploaded here) or "model" + "weight_name" (a published LoRA a style names).
    loras: list[dict] = field(default_factory=list)
    # Seamless: the picture tiles left-right and top-bottom (circular padding in the networks).
    tileable: bool = False
    # Drawn in the profile's distilled few-step mode: its LoRA is among ``loras``, its sampler, steps and guidance set.
    fast: bool = False

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


def batch_key(params: GenerationParams) -> tuple | None:
    """What jobs drawn together in one batch must share (prompts, styles, seeds and counts may differ);
    None for a job that is drawn alone: one that starts from a picture, or is seamless."""
    if params.init_asset_id or params.init_material_id or params.controls or params.tileable:
        return None
    return (params.profile, params.width, params.height, params.steps, params.guidance, params.sampler,
            tuple(params.stages), params.keep_stage_images, json.dumps(params.loras, sort_keys=True))


MAX_LORAS = 4


def style_size(style: Style, profile: Profile, aspect: str | None = None) -> tuple[int, int]:
    """The style's recommended size (given at SDXL's scale) on this profile, optionally at another aspect."""
    long_side = max(style.size) * max(profile.default_size) / REFERENCE_LONG_SIDE
    w, h = (int(x) for x in (aspect or style.aspect).split(":"))
    width, height = (long_side, long_side * h / w) if w >= h else (long_side * w / h, long_side)
    clamp = lambda v: min(profile.max_size, max(profile.min_size, round(v / 8) * 8))  # noqa: E731
    return clamp(width), clamp(height)


def style_defaults(style: Style, profile: Profile, aspect: str | None = None) -> dict:
    """What a style suggests on this profile (at another aspect when given): width, height, steps and
    guidance; the profile's own defaults where the style (or "none") suggests nothing."""
    if style.name == "none" and aspect is None:
        width, height = profile.default_size
    else:
        width, height = style_size(style, profile, aspect)
    return {"width": width, "height": height, "steps": style.steps or profile.steps,
            "guidance": profile.guidance if style.guidance is None else style.guidance}


def resolve_loras(raw_loras, profile: Profile, style: Style, fast: bool = False) -> list[dict]:
    """The LoRAs a request names (``[{"lora_id", "weight"}]``, checked against the owner's models when the
    job is prepared), the style's own LoRA for this profile, and in ``fast`` mode the profile's distilled one."""
    if raw_loras in (None, ""):
        raw_loras = []
    if not isinstance(raw_loras, list):
        raise ParamError("loras must be a list of {\"lora_id\": ..., \"weight\": ...}.")
    loras = []
    for item in raw_loras:
        if not isinstance(item, dict) or not item.get("lora_id"):
            raise ParamError("Each LoRA needs a lora_id (the id of one of your LoRAs) and a weight.")
        weight = number_field(item, "weight", 1.0, f"The weight of LoRA {item['lora_id']}", -2.0, 2.0, whole=False)
        loras.append({"lora_id": str(item["lora_id"]), "weight": weight})
    if len({lora["lora_id"] for lora in loras}) < len(loras):
        raise ParamError("The same LoRA is named twice; give it one weight.")
    style_lora = style.lora_for(profile.name)
    if style_lora is not None:
        loras.append({"name": f"{style.label} style", "model": style_lora.model, "weight_name": style_lora.weight_name,
                      "weight": style_lora.weight})
    if fast:
        mode = profile.fast_mode
        loras.append({"name": f"Fast mode ({mode.label})", "model": mode.model, "weight_name": mode.weight_name, "weight": 1.0})
    if len(loras) > MAX_LORAS:
        raise ParamError(f"{len(loras)} LoRAs were asked for (with the style's own{' and fast mode' if fast else ''}); "
                         f"at most {MAX_LORAS} can be applied at once.")
    return loras


def image_seed(batch_seed: int, index: int) -> int:
    """The seed that reproduces image ``index`` of a batch on its own."""
    return (batch_seed + index) % (MAX_SEED + 1)


def size_for_aspect(aspect: str, long_side: int) -> tuple[int, int]:
    """Width and height, multiples of 32, whose longer side is about ``long_side`` at the given ratio."""
    try:
        w, h = (int(x) for x in aspect.split(":"))
    except ValueError:
        raise ParamError(f"Aspect ratio {aspect!r} must look like '16:9'.") from None
    if w >= h:
        width, height = long_side, long_side * h / w
    else:
        width, height = long_side * w / h, long_side
    step = ASPECT_SIZE_MULTIPLE
    return max(step, round(width / step) * step), max(step, round(height / step) * step)


def size_like(width: int, height: int, profile: Profile) -> tuple[int, int]:
    """A size with the shape of ``width``×``height`` at the profile's default long side, in multiples of 8
    within its limits: what an image-to-image result of that picture is drawn at."""
    long_side = max(profile.default_size)
    scale = long_side / max(width, height)
    clamp = lambda v: min(profile.max_size, max(profile.min_size, round(v * scale / 8) * 8))  # noqa: E731
    return clamp(width), clamp(height)


def number_field(raw: dict, key: str, default, label: str, low, high, whole: bool = True):
    """``raw[key]`` (or the default) as a number within [low, high], or a ParamError naming the field."""
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or (whole and not number.is_integer()):
        raise ParamError(f"{label} must be a {'whole ' if whole else ''}number, not {value!r}.")
    number = int(number) if whole else number
    if not low <= number <= high:
        raise ParamError(f"{label} {number} is out of range: choose {low} to {high}.")
    return number


def pin_seed(raw: dict, rng: random.Random | None = None) -> int:
    """``raw["seed"]``, or a random seed when it is absent, empty, -1 or "random"."""
    if raw.get("seed") in (None, "", -1, "random"):
        return (rng or random.SystemRandom()).randint(0, MAX_SEED)
    return number_field(raw, "seed", 0, "Seed", 0, MAX_SEED)


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
    if not is_name(style_name) or style_name not in styles:
        raise ParamError(f"Unknown style {style_name!r}. Known styles: {', '.join(sorted(styles))}.")
    style = styles[style_name]
    full_prompt, full_negative = style.apply(prompt, negative)

    # Unset fields take the style's suggestions (size, steps, guidance), then the profile's defaults; in
    # fast mode the steps, guidance and sampler are the distilled model's.
    suggested = style_defaults(style, profile)
    fast = bool(raw.get("fast", False))
    if fast:
        if profile.fast_mode is None:
            raise ParamError(f"The {profile.name} profile has no fast mode (a distilled few-step model): turn Fast off.")
        suggested.update(steps=profile.fast_mode.steps, guidance=profile.fast_mode.guidance)
    width = number_field(raw, "width", suggested["width"], "Width", 1, 100_000)
    height = number_field(raw, "height", suggested["height"], "Height", 1, 100_000)
    for name, value in (("Width", width), ("Height", height)):
        if value % 8:
            raise ParamError(f"{name} {value} px is not a multiple of 8.")
        if not profile.min_size <= value <= profile.max_size:
            raise ParamError(
                f"{name} {value} px is outside the {profile.name} profile's range "
                f"{profile.min_size}-{profile.max_size} px."
            )
    count = number_field(raw, "count", 1, "Image count", 1, MAX_COUNT)
    steps = number_field(raw, "steps", suggested["steps"], "Steps", 1, MAX_STEPS)
    guidance = number_field(raw, "guidance", suggested["guidance"], "Guidance", 0, 30, whole=False)
    sampler = raw.get("sampler") or (profile.fast_mode.sampler if fast else profile.sampler)
    if not is_name(sampler) or sampler not in SAMPLERS:
        raise ParamError(f"Unknown sampler {sampler!r}. Known samplers: {', '.join(SAMPLERS)}.")

    seed = pin_seed(raw, rng)

    requested = raw.get("stages") or ["base"]
    if isinstance(requested, str):
        requested = [requested]
    if not isinstance(requested, list):
        raise ParamError(f"Stages must be a list of stage names, e.g. [\"base\"], not {requested!r}.")
    unknown = [s for s in requested if not is_name(s) or s not in profile.stages]
    if unknown:
        available = ", ".join(f"{s} ({STAGE_LABELS[s]})" for s in profile.stages)
        raise ParamError(f"The {profile.name} profile has no stage {', '.join(map(str, unknown))}; it has {available}.")
    stages = [s for s in STAGE_ORDER if s == "base" or s in requested]
    for stage, multiple in STAGE_SIZE_MULTIPLE.items():
        if stage in stages and (width % multiple or height % multiple):
            raise ParamError(
                f"{STAGE_LABELS[stage]} needs width and height in multiples of {multiple} px; "
                f"{width}×{height} is not. Try {round(width / multiple) * multiple or multiple}×"
                f"{round(height / multiple) * multiple or multiple}."
            )

    tileable = bool(raw.get("tileable", False))
    if tileable and stages != ["base"]:
        raise ParamError("A tileable picture is drawn by the base model alone: turn off the refiner and upscaling stages.")
    if fast and "refiner" in stages:
        raise ParamError("Fast mode draws with the distilled base model, which the refiner does not follow: turn off the refiner.")

    init_asset_id = raw.get("init_asset_id") or None
    strength = number_field(raw, "strength", 1.0 if init_asset_id is None else DEFAULT_STRENGTH, "Strength", 0.05, 1.0, whole=False)

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
        init_asset_id=str(init_asset_id) if init_asset_id else None,
        strength=strength,
        loras=resolve_loras(raw.get("loras"), profile, style, fast),
        tileable=tileable,
        fast=fast,
    )

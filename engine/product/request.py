"""A product-synthesis request, checked in the web process before it becomes a job. Torch-free."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from engine.params import MAX_PROMPT_CHARS, MAX_STEPS, ParamError, image_seed, is_name, number_field, pin_seed
from engine.product.scenes import ProductPlacement, Scene
from engine.profiles import Profile

# The sizes advertising channels ask for (feed square, feed portrait, stories/reels, video/banner).
CANVAS_FORMATS = {
    "1:1": (1080, 1080),
    "4:5": (1080, 1350),
    "9:16": (1080, 1920),
    "16:9": (1920, 1080),
}
CUSTOM_FORMAT = "custom"
MIN_CANVAS_SIDE, MAX_CANVAS_SIDE = 64, 4096
MAX_VARIANTS = 4
MAX_IMAGES = 16  # scenes × variants in one job
DEFAULT_CONTROL_SCALE = 0.5  # enough to keep the scene's lines true to the product, not to redraw it


@dataclass
class ProductRequest:
    material_id: str
    scenes: list[dict]  # engine.product.scenes.Scene as dicts: presets and the user's written scene
    canvas_format: str
    width: int
    height: int
    variants: int
    seed: int
    steps: int
    guidance: float
    profile: str
    placement: dict | None = None  # ProductPlacement fields overriding every scene's own; None: each scene's
    controlnet: bool = False
    control_scale: float = DEFAULT_CONTROL_SCALE
    shadow: bool = True
    rerun_of: str | None = None  # the composite this job re-renders in another format
    # Filled in when the job is created: the files as they were then, so the job renders what was asked.
    material_name: str = ""
    material_hash: str = ""
    mask_hash: str = ""
    outputs: list[dict] = field(default_factory=list)  # one per image: {"index", "scene", "variant", "seed"}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ProductRequest":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def scene(self, index: int) -> Scene:
        return Scene.from_dict(self.scenes[index])

    def placement_for(self, scene: Scene) -> ProductPlacement:
        return ProductPlacement(**self.placement) if self.placement else scene.placement


def generation_size(canvas: tuple[int, int], profile: Profile, multiple: int = 8) -> tuple[int, int]:
    """The size the background is generated at: the canvas's aspect at the profile's native resolution.
    The background is then resized to the canvas; the product is pasted at the canvas's own resolution."""
    width, height = canvas
    long_side = max(profile.default_size)
    scale = long_side / max(width, height)
    sides = []
    for side in (width * scale, height * scale):
        side = max(profile.min_size, min(profile.max_size, side))
        sides.append(max(multiple, round(side / multiple) * multiple))
    return sides[0], sides[1]


def _canvas(raw: dict) -> tuple[str, int, int]:
    name = raw.get("canvas_format") or "1:1"
    if is_name(name) and name in CANVAS_FORMATS:
        return (name, *CANVAS_FORMATS[name])
    if name != CUSTOM_FORMAT:
        raise ParamError(f"Unknown canvas format {name!r}. Choose one of {', '.join(CANVAS_FORMATS)} or custom.")
    width = number_field(raw, "width", None, "Canvas width", MIN_CANVAS_SIDE, MAX_CANVAS_SIDE)
    height = number_field(raw, "height", None, "Canvas height", MIN_CANVAS_SIDE, MAX_CANVAS_SIDE)
    if width is None or height is None:
        raise ParamError("A custom canvas needs both a width and a height in pixels.")
    return name, width, height


def _placement(raw: dict) -> dict | None:
    given = raw.get("placement")
    if not given:
        return None
    if not isinstance(given, dict):
        raise ParamError("Placement must be an object with scale, x and ground (fractions of the canvas).")
    default = ProductPlacement()
    values = {
        "scale": number_field(given, "scale", default.scale, "Product scale", 0.05, 0.95, whole=False),
        "x": number_field(given, "x", default.x, "Product position (x)", 0.0, 1.0, whole=False),
        "ground": number_field(given, "ground", default.ground, "Ground line", 0.1, 1.0, whole=False),
    }
    return asdict(ProductPlacement(**values))


def _scene_specs(specs) -> list[Scene]:
    """Whole scenes given as data (a re-run's stored scene, or an API user's own preset)."""
    scenes = []
    for spec in specs or []:
        try:
            scene = Scene.from_dict(spec)
        except (TypeError, ValueError) as exc:
            raise ParamError(f"A scene given as data is not valid: {exc}. It needs name, label, label_zh, category, "
                             "prompt, negative, lighting, placement {scale, x, ground} and shadow {opacity, softness}.") from exc
        if not scene.prompt.strip() or len(scene.full_prompt) > MAX_PROMPT_CHARS:
            raise ParamError(f"The scene {scene.name!r} needs a prompt of at most {MAX_PROMPT_CHARS} characters.")
        scenes.append(scene)
    return scenes


def resolve_product(raw: dict, profile: Profile, scenes: dict[str, Scene], rng: random.Random | None = None) -> ProductRequest:
    """Check every field of a product request, fill the profile's defaults, and pin the seed."""
    if "inpaint" not in profile.roles and profile.family not in ("sdxl", "sd"):
        raise ParamError(f"The {profile.name} profile has no inpainting model, so it cannot make product pictures. "
                         "Start the studio with the sdxl or sd15 profile for product synthesis.")
    material_id = str(raw.get("material_id") or "").strip()
    if not material_id:
        raise ParamError("Pick the product photo from the material library (or upload one) first.")

    names = raw.get("scenes") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        raise ParamError(f"Scenes must be a list of scene names, not {names!r}.")
    unknown = [n for n in names if not is_name(n) or n not in scenes]
    if unknown:
        raise ParamError(f"Unknown scene {', '.join(map(str, unknown))}. Known scenes: {', '.join(scenes)}.")
    chosen = [scenes[n] for n in dict.fromkeys(names)]
    chosen += _scene_specs(raw.get("scene_specs"))
    scene_prompt = " ".join(str(raw.get("scene_prompt") or "").split())
    if len(scene_prompt) > MAX_PROMPT_CHARS:
        raise ParamError(f"The scene prompt has {len(scene_prompt)} characters; the limit is {MAX_PROMPT_CHARS}.")
    if scene_prompt:
        chosen.append(Scene.custom(scene_prompt))
    if not chosen:
        raise ParamError("Choose at least one scene, or describe your own scene.")

    canvas_format, width, height = _canvas(raw)
    variants = number_field(raw, "variants", 1, "Variants per scene", 1, MAX_VARIANTS)
    if len(chosen) * variants > MAX_IMAGES:
        raise ParamError(f"{len(chosen)} scenes × {variants} variants makes {len(chosen) * variants} pictures; "
                         f"one job makes at most {MAX_IMAGES}. Choose fewer scenes or variants.")
    steps = number_field(raw, "steps", profile.steps, "Steps", 1, MAX_STEPS)
    guidance = number_field(raw, "guidance", profile.guidance, "Guidance", 0, 30, whole=False)
    seed = pin_seed(raw, rng)
    controlnet = bool(raw.get("controlnet", False))
    if controlnet and "controlnet" not in profile.roles:
        raise ParamError(f"The {profile.name} profile has no ControlNet; turn off 'fit the scene to the product's edges'.")
    control_scale = number_field(raw, "control_scale", DEFAULT_CONTROL_SCALE, "ControlNet strength", 0.0, 2.0, whole=False)

    outputs = []
    for scene_index, scene in enumerate(chosen):
        for variant in range(variants):
            index = scene_index * variants + variant
            # Variant v has the same seed in every scene, so one "look" can be compared across scenes.
            outputs.append({"index": index, "scene": scene_index, "variant": variant, "seed": image_seed(seed, variant)})
    return ProductRequest(
        material_id=material_id, scenes=[s.to_dict() for s in chosen], canvas_format=canvas_format,
        width=width, height=height, variants=variants, seed=seed, steps=steps, guidance=guidance,
        profile=profile.name, placement=_placement(raw), controlnet=controlnet, control_scale=control_scale,
        shadow=bool(raw.get("shadow", True)), rerun_of=str(raw["rerun_of"]) if raw.get("rerun_of") else None,
        outputs=outputs,
    )


def rerun_request(asset_id: str, source_params: dict, canvas_format: str, width: int | None = None,
                  height: int | None = None) -> dict:
    """The raw request that re-renders one composite's scene, seed and placement on another canvas:
    only the background is generated anew; the product's pixels and mask are those of the source. The
    scene goes as the composite stored it, so a preset edited or removed since changes nothing."""
    return {
        "material_id": source_params["material_id"], "canvas_format": canvas_format, "width": width, "height": height,
        "variants": 1, "seed": source_params["seed"], "steps": source_params["steps"],
        "guidance": source_params["guidance"], "placement": source_params.get("placement_override"),
        "controlnet": source_params.get("controlnet", False), "control_scale": source_params.get("control_scale"),
        "shadow": source_params.get("shadow", True), "rerun_of": asset_id, "scene_specs": [source_params["scene"]],
    }


@dataclass
class CutoutRequest:
    """Find the product in a material photo and store its mask."""

    material_id: str

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_cutout(raw: dict) -> CutoutRequest:
    material_id = str(raw.get("material_id") or "").strip()
    if not material_id:
        raise ParamError("Pick the product photo to cut out from the material library (or upload one) first.")
    return CutoutRequest(material_id)

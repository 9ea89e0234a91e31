"""Scene presets for product pictures, read from ``templates/product_scenes.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_SCENES_FILE = Path(__file__).resolve().parents[2] / "templates" / "product_scenes.json"
CATEGORIES = ("studio", "surface", "nature", "home", "urban", "seasonal", "abstract")
CUSTOM_SCENE = "custom"
# A written scene prompt keeps these negatives, so it never paints a second product or lettering.
CUSTOM_NEGATIVE = "text, watermark, logo, people, hands, another product, clutter, blurry, lowres"


@dataclass(frozen=True)
class ProductPlacement:
    """Where the product stands, as fractions of the canvas: its height, horizontal centre, ground line."""

    scale: float = 0.5
    x: float = 0.5
    ground: float = 0.85

    def __post_init__(self):
        for name, low, high in (("scale", 0.05, 0.95), ("x", 0.0, 1.0), ("ground", 0.1, 1.0)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"placement {name} {value} is outside {low}-{high}")


@dataclass(frozen=True)
class ShadowSpec:
    opacity: float = 0.5  # darkness of the contact shadow, 0 for a floating product
    softness: float = 0.04  # blur radius as a fraction of the canvas height

    def __post_init__(self):
        if not 0 <= self.opacity <= 1 or not 0 <= self.softness <= 0.25:
            raise ValueError(f"shadow opacity {self.opacity} or softness {self.softness} out of range")


@dataclass(frozen=True)
class Scene:
    name: str
    label: str
    label_zh: str
    category: str
    prompt: str
    negative: str
    lighting: str
    placement: ProductPlacement
    shadow: ShadowSpec

    @property
    def full_prompt(self) -> str:
        return ", ".join(part for part in (self.prompt, self.lighting, "professional product photography") if part)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        fields = dict(data)
        fields["placement"] = ProductPlacement(**fields.get("placement", {}))
        fields["shadow"] = ShadowSpec(**fields.get("shadow", {}))
        return cls(**fields)

    @classmethod
    def custom(cls, prompt: str) -> "Scene":
        """A scene the user wrote: a centred product on a ground line near the bottom."""
        return cls(name=CUSTOM_SCENE, label="Custom scene", label_zh="自定义场景", category="custom", prompt=prompt,
                   negative=CUSTOM_NEGATIVE, lighting="", placement=ProductPlacement(0.5, 0.5, 0.85),
                   shadow=ShadowSpec(0.5, 0.04))


def load_scenes(path: str | Path | None = None) -> dict[str, Scene]:
    path = Path(path or DEFAULT_SCENES_FILE)
    scenes = {}
    for name, entry in json.loads(path.read_text(encoding="utf-8")).items():
        try:
            scene = Scene.from_dict(dict(entry, name=name))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scene {name!r} in {path}: {exc}") from exc
        if scene.category not in CATEGORIES:
            raise ValueError(f"scene {name!r} in {path} has an unknown category {scene.category!r}")
        scenes[name] = scene
    return scenes

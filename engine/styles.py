"""The style catalogue: art styles with a prompt template (a ``{prompt}`` slot), a negative prompt, the
aspect, size, steps and guidance that suit them, and optionally a published LoRA, read from ``templates/``.

Torch-free, so the web side can offer and check styles without a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STYLES_FILE = Path(__file__).resolve().parents[1] / "templates" / "styles.json"
FAMILIES = ("general", "2d", "3d")
# Style sizes are given for SDXL's native budget (about 1024×1024 px) and scaled to the active profile.
REFERENCE_LONG_SIDE = 1024
NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class StyleCatalogueError(ValueError):
    """A catalogue entry that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class StyleCategory:
    name: str
    label: str
    label_zh: str
    family: str  # general | 2d | 3d


@dataclass(frozen=True)
class StyleLora:
    """A published LoRA a style uses on one profile: a hub id (or local folder) and its weight file."""

    profile: str
    model: str
    weight_name: str
    weight: float


@dataclass(frozen=True)
class Style:
    name: str
    label: str
    label_zh: str
    category: str
    prompt: str
    negative: str
    aspect: str = "1:1"
    size: tuple[int, int] = (1024, 1024)
    steps: int | None = None
    guidance: float | None = None
    lora: StyleLora | None = None

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The styled prompt and the user's negative joined with the style's."""
        styled = self.prompt.replace("{prompt}", prompt.strip())
        negatives = [n for n in (negative.strip(), self.negative) if n]
        return styled, ", ".join(negatives)

    def lora_for(self, profile_name: str) -> StyleLora | None:
        return self.lora if self.lora is not None and self.lora.profile == profile_name else None


@dataclass(frozen=True)
class StyleCatalogue:
    categories: dict[str, StyleCategory]
    styles: dict[str, Style]

    def in_category(self, category: str) -> list[Style]:
        return [s for s in self.styles.values() if s.category == category]


def _style(entry: dict, categories: dict[str, StyleCategory]) -> Style:
    name = entry.get("name", "")

    def fail(message: str) -> StyleCatalogueError:
        return StyleCatalogueError(f"style {name!r}: {message}")

    if not NAME_PATTERN.match(name):
        raise fail("the name must be lower-case words joined by '-'")
    for key in ("label", "label_zh", "prompt"):
        if not str(entry.get(key, "")).strip():
            raise fail(f"{key} is empty")
    if entry["prompt"].count("{prompt}") != 1:
        raise fail("the prompt template needs exactly one {prompt} slot")
    if entry.get("category") not in categories:
        raise fail(f"unknown category {entry.get('category')!r}")
    aspect = entry.get("aspect", "1:1")
    if not re.fullmatch(r"\d+:\d+", aspect):
        raise fail(f"aspect {aspect!r} must look like '2:3'")
    size = tuple(entry.get("size", (REFERENCE_LONG_SIDE, REFERENCE_LONG_SIDE)))
    if len(size) != 2 or any(not isinstance(v, int) or v % 64 or not 512 <= v <= 2048 for v in size):
        raise fail(f"size {list(size)} must be two multiples of 64 between 512 and 2048")
    w, h = (int(x) for x in aspect.split(":"))
    if abs(size[0] / size[1] - w / h) > 0.1 * w / h:
        raise fail(f"size {size[0]}×{size[1]} does not have the aspect {aspect}")
    steps, guidance = entry.get("steps"), entry.get("guidance")
    if steps is not None and not (isinstance(steps, int) and 1 <= steps <= 150):
        raise fail(f"steps {steps!r} must be a whole number from 1 to 150")
    if guidance is not None and not (isinstance(guidance, (int, float)) and 0 <= guidance <= 30):
        raise fail(f"guidance {guidance!r} must be a number from 0 to 30")
    lora = entry.get("lora")
    if lora is not None:
        missing = {"profile", "model", "weight_name", "weight"} - set(lora)
        if missing:
            raise fail(f"the LoRA lacks {', '.join(sorted(missing))}")
        if not lora["weight_name"].endswith(".safetensors"):
            raise fail("a style's LoRA must be a .safetensors file")
        if not 0 < float(lora["weight"]) <= 2:
            raise fail("the LoRA weight must be above 0 and at most 2")
        lora = StyleLora(lora["profile"], lora["model"], lora["weight_name"], float(lora["weight"]))
    known = {"name", "label", "label_zh", "category", "prompt", "negative", "aspect", "size", "steps", "guidance", "lora"}
    unknown = set(entry) - known
    if unknown:
        raise fail(f"unknown field(s) {', '.join(sorted(unknown))}")
    return Style(name=name, label=entry["label"], label_zh=entry["label_zh"], category=entry["category"],
                 prompt=entry["prompt"], negative=entry.get("negative", ""), aspect=aspect, size=size,
                 steps=steps, guidance=None if guidance is None else float(guidance), lora=lora)


def load_catalogue(path: str | Path | None = None) -> StyleCatalogue:
    data = json.loads(Path(path or DEFAULT_STYLES_FILE).read_text(encoding="utf-8"))
    categories = {}
    for entry in data["categories"]:
        category = StyleCategory(**entry)
        if category.family not in FAMILIES:
            raise StyleCatalogueError(f"category {category.name!r}: family must be one of {', '.join(FAMILIES)}")
        categories[category.name] = category
    styles: dict[str, Style] = {}
    for entry in data["styles"]:
        style = _style(entry, categories)
        if style.name in styles:
            raise StyleCatalogueError(f"style {style.name!r} appears twice")
        styles[style.name] = style
    if "none" not in styles:
        raise StyleCatalogueError("the catalogue needs the style 'none' (the user's prompt as written)")
    return StyleCatalogue(categories, styles)


def load_styles(path: str | Path | None = None) -> dict[str, Style]:
    return load_catalogue(path).styles

"""Preview pictures of the style catalogue: one subject, one seed, every style, on the active profile.

Run by ``python app.py styles previews``; the pictures show what each style does with this profile's
models (on the tiny profile they are noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from PIL import Image

from engine.cascade import run_cascade
from engine.loader import ModelUnavailableError, PipelineCache
from engine.lora import LoraMismatchError, lora_weights
from engine.params import resolve_generation
from engine.profiles import Profile
from engine.styles import Style

PREVIEW_SUBJECT = "a young adventurer with a backpack and a lantern, standing on a grassy hill"
PREVIEW_SEED = 20261121


@dataclass(frozen=True)
class StylePreview:
    style: str
    image: Image.Image | None
    params: dict
    error: str | None = None


def render_style_previews(styles: dict[str, Style], profile: Profile, cache: PipelineCache,
                          names: list[str] | None = None,
                          should_skip: Callable[[str], bool] = lambda name: False) -> Iterator[StylePreview]:
    """One preview per style (or per name in ``names``), with the style's own size, steps, guidance and
    LoRA; a style whose LoRA cannot be had yields its error instead of a picture."""
    for name in names or list(styles):
        if should_skip(name):
            continue
        # The tiny profile's noise takes no longer with the style's steps, but no better either.
        raw = {"prompt": PREVIEW_SUBJECT, "style": name, "seed": PREVIEW_SEED}
        if profile.is_noise:
            raw["steps"] = profile.steps
        params = resolve_generation(raw, profile, styles)
        try:
            result = run_cascade(params, profile, cache, loras=lora_weights(params.loras, str))
        except (ModelUnavailableError, LoraMismatchError) as exc:
            yield StylePreview(name, None, params.to_dict(), str(exc))
            continue
        yield StylePreview(name, result.images[0], params.to_dict())

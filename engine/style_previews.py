"""Preview pictures of the style catalogue: one subject, one seed, every style, on the active profile.

Run by ``python app.py styles previews``; the pictures show what each style does with this profile's
models (on the tiny profile they are noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from PIL import Image

from engine.cascade import run_cascade
from engine.identity_request import avatar_style_params
from engine.industry_templates import IndustryTemplate, aspect_size
from engine.loader import ModelUnavailableError, PipelineCache
from engine.lora import LoraMismatchError, lora_weights
from engine.params import GenerationParams, resolve_generation
from engine.portraits import PortraitCatalogue
from engine.profiles import Profile
from engine.styles import Style

PREVIEW_SUBJECT = "a young adventurer with a backpack and a lantern, standing on a grassy hill"
PREVIEW_SEED = 20261121
AVATAR_PREVIEW_SUBJECT = "a young woman"


@dataclass(frozen=True)
class StylePreview:
    style: str
    image: Image.Image | None
    params: dict
    error: str | None = None


def render_previews(names: list[str], params_for: Callable[[str], GenerationParams], profile: Profile,
                    cache: PipelineCache, should_skip: Callable[[str], bool] = lambda name: False) -> Iterator[StylePreview]:
    """One preview per name, drawn with ``params_for(name)``; a preset whose LoRA or model cannot be had
    yields its error instead of a picture."""
    for name in names:
        if should_skip(name):
            continue
        params = params_for(name)
        try:
            result = run_cascade(params, profile, cache, loras=lora_weights(params.loras, str))
        except (ModelUnavailableError, LoraMismatchError) as exc:
            yield StylePreview(name, None, params.to_dict(), str(exc))
            continue
        yield StylePreview(name, result.images[0], params.to_dict())


def render_style_previews(styles: dict[str, Style], profile: Profile, cache: PipelineCache,
                          names: list[str] | None = None,
                          should_skip: Callable[[str], bool] = lambda name: False) -> Iterator[StylePreview]:
    """One preview per style (or per name in ``names``), with the style's own size, steps, guidance and LoRA."""
    def params_for(name: str) -> GenerationParams:
        raw = {"prompt": PREVIEW_SUBJECT, "style": name, "seed": PREVIEW_SEED}
        if profile.is_noise:  # the tiny profile's noise takes no longer with the style's steps, but no better either
            raw["steps"] = profile.steps
        return resolve_generation(raw, profile, styles)

    return render_previews(names or list(styles), params_for, profile, cache, should_skip)


def render_avatar_previews(catalogue: PortraitCatalogue, profile: Profile, cache: PipelineCache,
                           names: list[str] | None = None,
                           should_skip: Callable[[str], bool] = lambda name: False) -> Iterator[StylePreview]:
    """One preview per avatar style: a generic person (no face kept), so users see each style's look."""
    def params_for(name: str) -> GenerationParams:
        return avatar_style_params(catalogue.avatar_styles[name], profile, AVATAR_PREVIEW_SUBJECT,
                                   {"seed": PREVIEW_SEED, **({"steps": profile.steps} if profile.is_noise else {})})

    return render_previews(names or list(catalogue.avatar_styles), params_for, profile, cache, should_skip)


def render_template_previews(templates: dict[str, IndustryTemplate], profile: Profile, cache: PipelineCache,
                             names: list[str] | None = None, should_skip: Callable[[str], bool] = lambda name: False,
                             *, styles: dict[str, Style]) -> Iterator[StylePreview]:
    """One preview per industry template: its prompt with each blank's example, in its style and shape, as a
    text-to-image picture of what the template aims at (whichever tab it opens)."""
    def params_for(name: str) -> GenerationParams:
        template = templates[name]
        raw = {"prompt": template.filled_prompt({f.name: f.example for f in template.fields}),
               "negative_prompt": template.negative_prompt, "style": template.settings.get("style", "none"),
               "seed": PREVIEW_SEED}
        if "aspect" in template.settings:
            raw["width"], raw["height"] = aspect_size(template.settings["aspect"], profile)
        if profile.is_noise:
            raw["steps"] = profile.steps
        return resolve_generation(raw, profile, styles)

    return render_previews(names or list(templates), params_for, profile, cache, should_skip)

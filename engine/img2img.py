"""Image-to-image with keeps: the source cropped to the output's shape, each keep's map drawn by its
preprocessor, and the maps handed to the cascade as ControlNet conditions at their weights."""

from __future__ import annotations

from typing import Callable

from PIL import Image, ImageOps

from engine.cascade import ControlCondition
from engine.img2img_request import KEEPS
from engine.loader import PipelineCache
from engine.preprocessors import depth_map, edge_map, pose_map
from engine.profiles import Profile

# keep name -> (source picture, profile, cache) -> the map its ControlNet reads
PREPROCESSORS: dict[str, Callable[[Image.Image, Profile, PipelineCache], Image.Image]] = {
    "edges": lambda image, profile, cache: edge_map(image),
    "pose": lambda image, profile, cache: pose_map(image, cache.model(profile, KEEPS["pose"].preprocessor_role)),
    "depth": lambda image, profile, cache: depth_map(image, cache.model(profile, KEEPS["depth"].preprocessor_role)),
}


def fit_source(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The source scaled to cover ``size`` and centre-cropped, so nothing is stretched."""
    return ImageOps.fit(image.convert("RGB"), size, Image.LANCZOS)


def control_conditions(source: Image.Image, controls: list[dict], profile: Profile, cache: PipelineCache,
                       on_map: Callable[[str], None] = lambda kind: None) -> tuple[list[ControlCondition], dict[str, Image.Image]]:
    """Each keep's map of ``source`` (already fitted to the output size) as a condition for its ControlNet,
    and the maps by keep name; ``on_map`` is told before each map is drawn (a model may load first)."""
    conditions, maps = [], {}
    for control in controls:
        keep = KEEPS[control["kind"]]
        on_map(keep.name)
        maps[keep.name] = PREPROCESSORS[keep.name](source, profile, cache)
        conditions.append(ControlCondition(maps[keep.name], control["weight"], keep.controlnet_role))
    return conditions, maps

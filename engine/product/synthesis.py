"""Rendering a product picture: place the product, inpaint the scene around it, paste the product back,
add its contact shadow, and keep every layer.

Plain values in (the photo, its mask, a scene, the pipelines), a LayeredPicture out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import diffusers
import torch
from PIL import Image

from engine.cascade import set_sampler
from engine.product.compose import composite, contact_shadow, edge_map, inpainting_inputs, place_product
from engine.product.layers import LayeredPicture
from engine.product.scenes import ProductPlacement, Scene
from engine.prompt_encoding import prompt_arguments


@dataclass(frozen=True)
class RenderSettings:
    canvas: tuple[int, int]
    generation_size: tuple[int, int]
    seed: int
    steps: int
    guidance: float
    sampler: str
    shadow: bool = True
    control_scale: float | None = None  # with a ControlNet pipeline: how strongly the product's edges steer


def render_product_picture(
    photo: Image.Image,
    mask: Image.Image,
    scene: Scene,
    placement: ProductPlacement,
    settings: RenderSettings,
    pipe: diffusers.DiffusionPipeline,
    on_step: Callable[[int, int], None] = lambda step, total: None,
) -> LayeredPicture:
    """One picture of the product in ``scene``; ``pipe`` is an inpainting pipeline, with a ControlNet when
    ``settings.control_scale`` is set. ``on_step(step, total)`` may raise to stop."""
    placed = place_product(photo, mask, settings.canvas, placement)
    image, repaint = inpainting_inputs(placed, settings.generation_size)
    width, height = settings.generation_size
    set_sampler(pipe, settings.sampler)
    total = settings.steps

    def step_end(pipeline, step, timestep, callback_kwargs):
        on_step(step + 1, total)
        return callback_kwargs

    extra = {}
    if settings.control_scale is not None:
        extra = dict(control_image=edge_map(placed, settings.generation_size),
                     controlnet_conditioning_scale=settings.control_scale)
    on_step(0, total)
    generated = pipe(
        **prompt_arguments(pipe, [scene.full_prompt], [scene.negative]), image=image, mask_image=repaint,
        width=width, height=height, strength=1.0, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance, generator=torch.Generator("cpu").manual_seed(settings.seed),
        callback_on_step_end=step_end, **extra,
    ).images[0]
    background = generated.convert("RGB").resize(settings.canvas, Image.LANCZOS)
    shadow = contact_shadow(placed, scene.shadow) if settings.shadow and scene.shadow.opacity > 0 else None
    info = {
        "scene": {"name": scene.name, "label": scene.label, "label_zh": scene.label_zh},
        "prompt": scene.full_prompt, "negative_prompt": scene.negative, "seed": settings.seed,
        "steps": settings.steps, "guidance": settings.guidance, "sampler": settings.sampler,
        "placement": {"scale": placement.scale, "x": placement.x, "ground": placement.ground},
        "shadow": {"opacity": scene.shadow.opacity, "softness": scene.shadow.softness} if shadow else None,
        "generated_size": {"width": width, "height": height},
        "controlnet": settings.control_scale is not None,
    }
    return LayeredPicture(background=background, shadow=shadow, product=placed.layer, mask=placed.mask,
                          composite=composite(background, placed, shadow), box=placed.box, info=info)

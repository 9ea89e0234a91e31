"""Seamless (tileable) generation: circular padding in every convolution of the denoiser and the VAE.

With wrap-around padding the networks see the image as the surface of a torus, so the left edge continues
the right one and the top continues the bottom: the texture tiles with no seam. Attention has no position
of its own in these models, so nothing else needs to change.
"""

from __future__ import annotations

from contextlib import contextmanager

import diffusers
import torch


def _convolutions(pipe: diffusers.DiffusionPipeline) -> list[torch.nn.Conv2d]:
    modules = [getattr(pipe, name, None) for name in ("unet", "vae", "controlnet")]
    return [m for module in modules if module is not None for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


@contextmanager
def seamless(pipe: diffusers.DiffusionPipeline, enabled: bool = True):
    """Within the block, ``pipe`` makes images that tile horizontally and vertically."""
    if not enabled:
        yield pipe
        return
    convolutions = _convolutions(pipe)
    previous = [conv.padding_mode for conv in convolutions]
    for conv in convolutions:
        conv.padding_mode = "circular"
    try:
        yield pipe
    finally:
        for conv, mode in zip(convolutions, previous):
            conv.padding_mode = mode

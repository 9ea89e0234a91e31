"""Background removal with rembg: the session named by the profile (u2net, isnet, birefnet or a local ONNX).

A transparent upload needs no model: its own alpha is the mask.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image

from engine.product.mask import clean_mask, mask_from_alpha


def product_mask(photo: Image.Image, segmenter: Callable[[], object]) -> tuple[Image.Image, str]:
    """The cleaned mask of the photo's main object and where it came from ("alpha" or "segmenter").
    ``segmenter`` gives the rembg session; it is not asked for when the photo has its own alpha."""
    if photo.mode == "RGBA" and photo.getchannel("A").getextrema()[0] < 255:
        return clean_mask(mask_from_alpha(photo)), "alpha"
    from rembg import remove

    raw = remove(photo.convert("RGB"), session=segmenter(), only_mask=True)
    return clean_mask(raw), "segmenter"

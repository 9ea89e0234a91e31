"""The product's mask: from a transparent PNG's alpha or a segmenter, cleaned, checked, and corrected with a brush.

Masks are PIL "L" images the size of the photo: 255 on the product, 0 on the background.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

# Below this share of the photo nothing was found; above it the cut-out is the whole frame.
MIN_COVERAGE = 0.002
FULL_FRAME_COVERAGE = 0.95
# Brush colours of the correction editor: paint in green to add to the product, in red to erase.
ADD_COLOR = "#22cc44"
ERASE_COLOR = "#ee2233"


class MaskError(ValueError):
    """A mask that cannot make a product picture; the message tells the user what to do."""


def binary(mask: Image.Image, threshold: int = 128) -> np.ndarray:
    return np.asarray(mask.convert("L")) >= threshold


def to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(array, 255, 0).astype(np.uint8), mode="L")


def mask_from_alpha(image: Image.Image) -> Image.Image:
    """A transparent PNG's own alpha, as the mask."""
    return image.getchannel("A")


def clean_mask(mask: Image.Image) -> Image.Image:
    """Keep the largest object and fill its holes: a segmenter's specks and see-through labels go away."""
    solid = binary(mask)
    labels, count = ndimage.label(solid)
    if count > 1:
        sizes = ndimage.sum_labels(solid, labels, index=range(1, count + 1))
        solid = labels == (1 + int(np.argmax(sizes)))
    return to_image(ndimage.binary_fill_holes(solid))


def coverage(mask: Image.Image) -> float:
    return float(binary(mask).mean())


def check_mask(mask: Image.Image) -> str | None:
    """Refuse a mask with no product; return a note when the product fills the frame."""
    share = coverage(mask)
    if share < MIN_COVERAGE:
        raise MaskError("No product was found in the photo: the cut-out is empty. Paint the product with the green "
                        "brush, or upload a photo of the product on a plain, contrasting background.")
    if share > FULL_FRAME_COVERAGE:
        return (f"The cut-out covers {share:.0%} of the photo: the product fills the whole frame, so it is used as a "
                "rectangle. If the photo has a background, erase it with the red brush.")
    return None


def bounding_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the product, right and bottom exclusive."""
    box = to_image(binary(mask)).getbbox()
    if box is None:
        raise MaskError("The mask is empty: there is no product to place.")
    return box


def apply_brush(mask: Image.Image, strokes: Image.Image) -> Image.Image:
    """Apply the editor's strokes (an RGBA layer the photo's size): green adds to the product, red erases."""
    if strokes.size != mask.size:
        strokes = strokes.resize(mask.size, Image.NEAREST)
    layer = np.asarray(strokes.convert("RGBA")).astype(np.int16)
    painted = layer[..., 3] > 0
    adds = painted & (layer[..., 1] > layer[..., 0])
    erases = painted & ~adds
    solid = binary(mask)
    solid[adds] = True
    solid[erases] = False
    return to_image(solid)


def overlay(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The photo with its background dimmed and tinted, so the mask shows where it is wrong."""
    photo = np.asarray(image.convert("RGB")).astype(np.float32)
    background = ~binary(mask)
    tint = np.array([40, 60, 140], dtype=np.float32)
    photo[background] = photo[background] * 0.35 + tint * 0.65
    edge = binary(mask) & ~ndimage.binary_erosion(binary(mask), iterations=max(1, min(image.size) // 200))
    photo[edge] = (255, 220, 0)
    return Image.fromarray(photo.astype(np.uint8), mode="RGB")


def cut_out(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The product alone on transparency, cropped to its box."""
    rgba = image.convert("RGB").copy()
    rgba.putalpha(to_image(binary(mask)))
    return rgba.crop(bounding_box(mask))

"""Transparent sprites: background removed with the profile's rembg session, trimmed to the subject, and
several sprites packed into one sprite sheet with the frame of each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

# Pieces of the mask smaller than this share of the largest piece are specks, not parts of the subject
# (a character's separate sword or a floating gem is kept; noise is not).
SPECK_SHARE = 0.02
# Alpha below this counts as background when trimming.
TRIM_ALPHA = 8
MARGIN = 2


@dataclass(frozen=True)
class Sprite:
    image: Image.Image  # RGBA, trimmed
    box: tuple[int, int, int, int]  # where the trimmed sprite was in the generated picture
    note: str | None = None


def _without_specks(alpha: np.ndarray) -> np.ndarray:
    solid = alpha >= 128
    labels, count = ndimage.label(solid)
    if count <= 1:
        return alpha
    sizes = ndimage.sum_labels(solid, labels, index=range(1, count + 1))
    keep = np.isin(labels, 1 + np.flatnonzero(sizes >= SPECK_SHARE * sizes.max()))
    # Soft edges next to a kept piece stay; everything around a dropped speck goes.
    near = ndimage.binary_dilation(keep, iterations=2)
    return np.where(near, alpha, 0).astype(np.uint8)


def cut_sprite(image: Image.Image, session) -> Sprite:
    """The picture's subject on transparency, trimmed to its bounding box with a small margin. Holes stay
    transparent (the gap between an arm and a body is background too). When nothing can be separated the
    whole picture is kept, with a note."""
    from rembg import remove

    rgb = image.convert("RGB")
    alpha = _without_specks(np.asarray(remove(rgb, session=session, only_mask=True).convert("L")))
    sprite = rgb.copy()
    box = Image.fromarray(np.where(alpha >= TRIM_ALPHA, 255, 0).astype(np.uint8)).getbbox()
    if box is None:
        sprite.putalpha(255)
        return Sprite(sprite, (0, 0, rgb.width, rgb.height),
                      "No subject could be separated from the background; the whole picture is kept.")
    sprite.putalpha(Image.fromarray(alpha))
    left, top, right, bottom = box
    box = (max(0, left - MARGIN), max(0, top - MARGIN), min(rgb.width, right + MARGIN), min(rgb.height, bottom + MARGIN))
    return Sprite(sprite.crop(box), box)


def sprite_sheet(sprites: list[Image.Image], columns: int | None = None, padding: int = 4,
                 align: str = "bottom") -> tuple[Image.Image, list[dict]]:
    """Sprites on one transparent canvas in a grid of equal cells (the largest sprite's size), each centred
    horizontally and standing on the cell's bottom (``align="bottom"``, for characters) or centred. Returns
    the sheet and each frame's rectangle ``{"index", "x", "y", "w", "h"}``, as atlas tools read them."""
    if not sprites:
        raise ValueError("a sprite sheet needs at least one sprite")
    columns = columns or math.ceil(math.sqrt(len(sprites)))
    rows = math.ceil(len(sprites) / columns)
    cell_w = max(s.width for s in sprites) + 2 * padding
    cell_h = max(s.height for s in sprites) + 2 * padding
    sheet = Image.new("RGBA", (columns * cell_w, rows * cell_h), (0, 0, 0, 0))
    frames = []
    for index, sprite in enumerate(sprites):
        column, row = index % columns, index // columns
        x = column * cell_w + (cell_w - sprite.width) // 2
        y = row * cell_h + (cell_h - padding - sprite.height if align == "bottom" else (cell_h - sprite.height) // 2)
        sheet.alpha_composite(sprite.convert("RGBA"), (x, y))
        frames.append({"index": index, "x": x, "y": y, "w": sprite.width, "h": sprite.height})
    return sheet, frames

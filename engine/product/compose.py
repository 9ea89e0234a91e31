"""Placing the product on a canvas, its contact shadow, and the composite. Plain numpy and PIL.

The product's pixels are never redrawn: inside its mask (less a thin edge) the composite holds exactly
the pixels of the placed product, and when the product is placed at its photo's own size those are the
photo's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from engine.product.mask import binary, bounding_box, to_image
from engine.product.scenes import ProductPlacement, ShadowSpec

# Largest share of the canvas width a product may take, so the scene shows on both sides.
MAX_WIDTH_SHARE = 0.9
# The neutral grey the area to repaint starts from.
FILL_GREY = (127, 127, 127)


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


@dataclass
class PlacedProduct:
    """The product on the canvas: its RGBA layer (feathered edge), its hard mask, and its box."""

    layer: Image.Image  # RGBA, canvas-sized
    mask: Image.Image  # L, canvas-sized, 255 on the product
    box: Box
    edge: int  # width in pixels of the blended edge inside the mask

    @property
    def canvas(self) -> tuple[int, int]:
        return self.layer.size


def edge_width(canvas: tuple[int, int]) -> int:
    """A thin blended edge: about 0.4% of the canvas's shorter side, at least one pixel."""
    return max(1, round(min(canvas) * 0.004))


def product_box(product_size: tuple[int, int], canvas: tuple[int, int], placement: ProductPlacement) -> Box:
    """Where the product goes: ``scale`` of the canvas height, bottom on the ground line, centred on ``x``,
    shrunk when it would be wider than the canvas allows or reach above the top."""
    width, height = canvas
    product_w, product_h = product_size
    target_h = min(placement.scale * height, placement.ground * height)
    target_w = target_h * product_w / product_h
    if target_w > MAX_WIDTH_SHARE * width:
        target_w = MAX_WIDTH_SHARE * width
        target_h = target_w * product_h / product_w
    box_w, box_h = max(1, round(target_w)), max(1, round(target_h))
    left = min(max(0, round(placement.x * width - box_w / 2)), width - box_w)
    top = min(max(0, round(placement.ground * height) - box_h), height - box_h)
    return Box(left, top, box_w, box_h)


def place_product(photo: Image.Image, mask: Image.Image, canvas: tuple[int, int], placement: ProductPlacement) -> PlacedProduct:
    """Crop the product to its mask's box, scale it as placed, and lay it on a transparent canvas."""
    crop = bounding_box(mask)
    product = photo.convert("RGB").crop(crop)
    product_mask = mask.convert("L").crop(crop)
    box = product_box(product.size, canvas, placement)
    if (box.width, box.height) != product.size:
        product = product.resize((box.width, box.height), Image.LANCZOS)
        product_mask = product_mask.resize((box.width, box.height), Image.LANCZOS)
    edge = edge_width(canvas)
    # Opacity ramps up over ``edge`` pixels inside the mask; the core (the mask eroded by ``edge``, the
    # part inpainting keeps) is exactly 1, so its pixels are copied, never blended. Computed on the box
    # with a one-pixel border: the canvas outside it is background anyway.
    inside = np.pad(binary(product_mask), 1)
    alpha = np.clip(ndimage.distance_transform_edt(inside) / (edge + 1), 0.0, 1.0)
    alpha[product_core(inside, edge)] = 1.0
    hard = np.zeros((canvas[1], canvas[0]), dtype=bool)
    layer = np.zeros((canvas[1], canvas[0], 4), dtype=np.uint8)
    region = (slice(box.top, box.bottom), slice(box.left, box.right))
    hard[region] = inside[1:-1, 1:-1]
    layer[region] = np.dstack([np.asarray(product), np.round(alpha[1:-1, 1:-1] * 255).astype(np.uint8)])
    return PlacedProduct(Image.fromarray(layer, mode="RGBA"), to_image(hard), box, edge)


def product_core(hard: np.ndarray, edge: int) -> np.ndarray:
    """The product less its blended edge: the pixels that stay exactly the product's."""
    return ndimage.binary_erosion(hard, iterations=edge)


def contact_shadow(placed: PlacedProduct, spec: ShadowSpec) -> Image.Image:
    """A soft shadow where the product meets the ground: its silhouette flattened onto the ground line,
    a wide blurred pool and a tight dark contact line under its base."""
    width, height = placed.canvas
    box = placed.box
    silhouette = placed.mask.crop((box.left, box.top, box.right, box.bottom))
    softness = max(1.0, spec.softness * height)
    fields = []
    for squash, spread in ((0.10, 1.08), (0.035, 1.0)):
        footprint_w, footprint_h = max(1, round(box.width * spread)), max(1, round(box.height * squash))
        footprint = binary(silhouette.resize((footprint_w, footprint_h), Image.BILINEAR), threshold=64)
        field = np.zeros((height, width), dtype=np.float32)
        left = round(box.left + box.width / 2 - footprint_w / 2)
        top = round(box.bottom - footprint_h / 2)
        # Clip the footprint to the canvas.
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(width, left + footprint_w), min(height, top + footprint_h)
        if x1 > x0 and y1 > y0:
            field[y0:y1, x0:x1] = footprint[y0 - top:y1 - top, x0 - left:x1 - left]
        fields.append(field)
    # Blur only around the footprint: beyond four sigmas the blur adds nothing visible.
    reach = int(4 * softness) + 2
    window = (slice(max(0, box.bottom - box.height // 10 - reach), min(height, box.bottom + box.height // 10 + reach)),
              slice(max(0, box.left - box.width // 10 - reach), min(width, box.right + box.width // 10 + reach)))
    alpha = np.zeros((height, width), dtype=np.float32)
    blurred = []
    for field, blur in zip(fields, (softness, softness / 3)):
        # Pillow's Gaussian blur costs the same at any radius; 8 bits are plenty for a soft shadow.
        part = Image.fromarray((field[window] * 255).astype(np.uint8), mode="L").filter(ImageFilter.GaussianBlur(blur))
        part = np.asarray(part).astype(np.float32)
        peak = part.max()
        blurred.append(part / peak if peak > 0 else part)
    alpha[window] = spec.opacity * np.clip(0.6 * blurred[0] + 0.8 * blurred[1], 0.0, 1.0)
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    layer[..., 3] = np.round(alpha * 255).astype(np.uint8)
    return Image.fromarray(layer, mode="RGBA")


def composite(background: Image.Image, placed: PlacedProduct, shadow: Image.Image | None) -> Image.Image:
    """Background, then shadow, then the product; fully opaque product pixels are copied, not blended."""
    if background.size != placed.canvas:
        raise ValueError(f"background {background.size} is not the canvas size {placed.canvas}")
    base = background.convert("RGB")
    if shadow is not None:
        base = Image.alpha_composite(base.convert("RGBA"), shadow).convert("RGB")
    out = np.array(base)
    box = placed.box
    # Only the product's box has anything to blend.
    region = (slice(box.top, box.bottom), slice(box.left, box.right))
    layer = np.asarray(placed.layer)[region]
    alpha = layer[..., 3:4].astype(np.float32) / 255.0
    blended = np.round(out[region].astype(np.float32) * (1 - alpha) + layer[..., :3].astype(np.float32) * alpha)
    out[region] = np.where(layer[..., 3:4] == 255, layer[..., :3], blended.astype(np.uint8))
    return Image.fromarray(out, mode="RGB")


def inpainting_inputs(placed: PlacedProduct, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The picture to inpaint (product on grey) and the mask of what to repaint (all but the product's
    core; its thin edge is repainted too, so the scene meets the product), both at the generation size."""
    canvas = Image.new("RGB", placed.canvas, FILL_GREY)
    canvas.paste(placed.layer.convert("RGB"), mask=placed.mask)
    repaint = to_image(~product_core(binary(placed.mask), placed.edge))
    return canvas.resize(size, Image.LANCZOS), repaint.resize(size, Image.NEAREST)


def edge_map(placed: PlacedProduct, size: tuple[int, int]) -> Image.Image:
    """The product's edges (Canny) at the generation size, white on black: the ControlNet's condition."""
    from skimage.feature import canny

    grey = np.asarray(placed.layer.convert("L").resize(size, Image.LANCZOS)).astype(np.float32) / 255.0
    inside = binary(placed.mask.resize(size, Image.NEAREST))
    edges = canny(grey, sigma=1.0) | (inside ^ ndimage.binary_erosion(inside))
    return to_image(edges).convert("RGB")

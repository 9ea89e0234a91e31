"""Product synthesis: cut-out, placement, shadow, composite, layer exports and the render with the tiny models.

Product photos are drawn here with PIL, so every test knows the true mask. The tiny profile's segmenter is a
u2net-shaped ONNX that thresholds brightness: it finds a dark or coloured object on a light background.
"""

import dataclasses
import io
import json
import random
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw
from psd_tools import PSDImage
from scipy import ndimage
from skimage.filters import threshold_otsu

from engine.cascade import Cancelled
from engine.params import MAX_SEED, ParamError, image_seed
from engine.product.compose import (
    MAX_WIDTH_SHARE,
    composite,
    contact_shadow,
    edge_width,
    place_product,
    product_box,
)
from engine.product.layers import LayeredPicture, manifest_bytes, psd_bytes, zip_bytes
from engine.product.mask import (
    ADD_COLOR,
    ERASE_COLOR,
    MaskError,
    apply_brush,
    binary,
    bounding_box,
    check_mask,
    clean_mask,
    cut_out,
    overlay,
    to_image,
)
from engine.product.request import CANVAS_FORMATS, generation_size, rerun_request, resolve_product
from engine.product.scenes import CATEGORIES, ProductPlacement, Scene, ShadowSpec, load_scenes
from engine.product.segment import product_mask
from engine.product.synthesis import RenderSettings, render_product_picture
from engine.profiles import load_profiles

BACKGROUND = (240, 240, 240)
PHOTO_SIZE = (120, 180)


# --- synthetic product photos -------------------------------------------------------------------------


def _blank(size, noise_seed):
    """A plain light backdrop, or one with a lighting gradient and sensor noise."""
    width, height = size
    if noise_seed is None:
        return Image.new("RGB", size, BACKGROUND), Image.new("L", size, 0)
    rng = np.random.default_rng(noise_seed)
    ramp = np.linspace(-8, 8, width)[None, :, None] + np.linspace(-6, 6, height)[:, None, None]
    pixels = np.array(BACKGROUND, dtype=np.float64) + ramp + rng.normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)), Image.new("L", size, 0)


def _draw(size, parts, noise_seed=None, decorations=()):
    """Draw ``parts`` (shape, box, colour) on the photo and on the known mask; ``decorations`` (a label
    printed on the product) go on the photo only."""
    photo, mask = _blank(size, noise_seed)
    on_photo, on_mask = ImageDraw.Draw(photo), ImageDraw.Draw(mask)
    for shape, box, colour in parts:
        getattr(on_photo, shape)(box, fill=colour)
        getattr(on_mask, shape)(box, fill=255)
    for shape, box, colour in decorations:
        getattr(on_photo, shape)(box, fill=colour)
    return photo, mask


def bottle_photo(noise_seed=None, body=(30, 90, 160), cap=(170, 40, 40)):
    """A bottle: a body, a rounded shoulder and a narrower cap; 50×140 px, standing at x 35-84, y 20-159."""
    parts = [("rectangle", [35, 60, 84, 159], body), ("ellipse", [35, 40, 84, 80], body),
             ("rectangle", [50, 20, 69, 50], cap)]
    return _draw(PHOTO_SIZE, parts, noise_seed, decorations=[("rectangle", [40, 95, 79, 125], (20, 60, 120))])


def box_photo(noise_seed=None, speck=False):
    """A carton with a near-white label inside its front (a see-through hole for a brightness segmenter),
    60×140 px at x 30-89, y 20-159; ``speck``: a speck of dust on the backdrop, which is no product."""
    decorations = [("rectangle", [40, 70, 79, 100], (250, 250, 250))]
    if speck:
        decorations.append(("rectangle", [4, 4, 6, 6], (60, 60, 60)))
    return _draw(PHOTO_SIZE, [("rectangle", [30, 20, 89, 159], (200, 110, 50))], noise_seed, decorations)


PHOTOS = {
    "bottle": lambda: bottle_photo(),
    "box": lambda: box_photo(speck=True),
    "bottle on a noisy backdrop": lambda: bottle_photo(noise_seed=5),
}


def iou(a, b) -> float:
    a, b = binary(a) if isinstance(a, Image.Image) else a, binary(b) if isinstance(b, Image.Image) else b
    return float((a & b).sum() / (a | b).sum())


def noise_background(canvas, seed=0) -> Image.Image:
    """Random pixels: any blend of background into the product shows at once."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (canvas[1], canvas[0], 3), dtype=np.uint8))


def interior(placed) -> np.ndarray:
    """The product less its blended edge: the mask eroded by ``edge`` pixels, the part inpainting keeps."""
    return ndimage.binary_erosion(binary(placed.mask), iterations=placed.edge)


def rgb(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# --- segmentation -------------------------------------------------------------------------------------


@pytest.fixture
def segmenter(tiny, cache, models_dir, monkeypatch):
    """The tiny profile's rembg session; rembg only opens a custom ONNX from inside its model folder."""
    monkeypatch.setenv("REMBG_HOME", str(models_dir))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    return lambda: cache.segmenter(tiny)


def otsu_mask(photo: Image.Image) -> np.ndarray:
    """A classical cut-out: each pixel's colour distance to the median border colour, split at Otsu's
    threshold, then the largest object with its holes filled."""
    pixels = np.asarray(photo.convert("RGB")).astype(np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    distance = np.linalg.norm(pixels - np.median(border, axis=0), axis=-1)
    found = distance > threshold_otsu(distance)
    labels, count = ndimage.label(found)
    sizes = ndimage.sum_labels(found, labels, index=range(1, count + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


@pytest.mark.parametrize("name", list(PHOTOS))
def test_segmenter_finds_the_product(segmenter, name):
    photo, known = PHOTOS[name]()
    mask, source = product_mask(photo, segmenter)
    assert source == "segmenter"
    assert mask.size == photo.size and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert iou(mask, known) >= 0.95
    assert iou(binary(mask), otsu_mask(photo)) >= 0.95
    # The speck of dust on the box's backdrop and the hole of its white label are cleaned away.
    assert bounding_box(mask) == bounding_box(known)


def test_segmenter_follows_the_product_around_the_frame(segmenter):
    photo, known = bottle_photo()
    moved, moved_known = Image.new("RGB", photo.size, BACKGROUND), Image.new("L", photo.size, 0)
    moved.paste(photo, (-25, 0))
    moved_known.paste(known, (-25, 0))
    mask, _ = product_mask(moved, segmenter)
    assert iou(mask, moved_known) >= 0.95
    assert iou(mask, known) < 0.5


def test_transparent_photo_uses_its_own_alpha_and_no_segmenter():
    photo, known = bottle_photo()
    # Black where transparent: a segmenter would take all of it for the product.
    rgba = Image.new("RGB", photo.size, (0, 0, 0))
    rgba.paste(photo, mask=known)
    rgba.putalpha(known)

    def no_segmenter():
        raise AssertionError("a transparent photo must not load the segmenter")

    mask, source = product_mask(rgba, no_segmenter)
    assert source == "alpha"
    assert np.array_equal(binary(mask), binary(known))


def test_opaque_rgba_photo_goes_to_the_segmenter(segmenter):
    photo, known = box_photo()
    mask, source = product_mask(photo.convert("RGBA"), segmenter)
    assert source == "segmenter"
    assert iou(mask, known) >= 0.95


# --- mask cleaning, checks and the correction brush ---------------------------------------------------


def test_clean_mask_keeps_the_largest_object_and_fills_its_holes():
    solid = np.zeros((60, 60), dtype=bool)
    solid[10:50, 15:45] = True
    dirty = solid.copy()
    dirty[25:35, 25:35] = False  # a see-through label
    dirty[1:3, 1:3] = True  # a speck, found first in scan order
    dirty[55:58, 50:58] = True  # a second, larger speck
    cleaned = clean_mask(to_image(dirty))
    assert cleaned.mode == "L" and cleaned.size == (60, 60)
    assert np.array_equal(binary(cleaned), solid)
    assert np.array_equal(binary(clean_mask(to_image(solid))), solid)


def test_check_mask_refuses_an_empty_cut_out_and_notes_a_whole_frame_one():
    with pytest.raises(MaskError, match="No product was found"):
        check_mask(Image.new("L", (100, 100), 0))
    nearly_empty = np.zeros((100, 100), dtype=bool)
    nearly_empty[0, :10] = True  # 0.1 % of the photo
    with pytest.raises(MaskError, match="No product was found"):
        check_mask(to_image(nearly_empty))
    note = check_mask(Image.new("L", (100, 100), 255))
    assert note is not None and "whole frame" in note and "100%" in note
    normal = np.zeros((100, 100), dtype=bool)
    normal[20:80, 30:70] = True
    assert check_mask(to_image(normal)) is None


def test_brush_green_adds_red_erases_transparent_changes_nothing():
    solid = np.zeros((40, 40), dtype=bool)
    solid[10:30, 10:30] = True
    mask = to_image(solid)
    # Red and green everywhere, but fully transparent: nothing was painted.
    untouched = Image.new("RGBA", (40, 40), (238, 34, 51, 0))
    untouched.paste(Image.new("RGBA", (20, 40), (34, 204, 68, 0)), (0, 0))
    assert np.array_equal(binary(apply_brush(mask, untouched)), solid)

    strokes = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    draw = ImageDraw.Draw(strokes)
    draw.rectangle([0, 0, 39, 3], fill=ADD_COLOR)  # add a strip above the product
    draw.rectangle([10, 20, 29, 29], fill=ERASE_COLOR)  # erase the product's lower half
    result = binary(apply_brush(mask, strokes))
    expected = solid.copy()
    expected[0:4, :] = True
    expected[20:30, 10:30] = False
    assert np.array_equal(result, expected)


def test_brush_layer_of_another_size_is_stretched_over_the_photo():
    mask = Image.new("L", (40, 40), 0)
    strokes = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).rectangle([0, 0, 9, 19], fill=ADD_COLOR)  # the left half
    result = binary(apply_brush(mask, strokes))
    assert result[:, :20].all() and not result[:, 20:].any()


def test_overlay_and_cut_out_show_the_mask():
    photo, known = box_photo()
    shown = rgb(overlay(photo, known))
    inside, outside = ndimage.binary_erosion(binary(known), iterations=3), ~binary(known)
    assert np.array_equal(shown[inside], rgb(photo)[inside])
    assert (np.abs(shown[outside].astype(int) - rgb(photo)[outside]).sum(-1) > 30).all()
    piece = cut_out(photo, known)
    assert piece.mode == "RGBA" and piece.size == (60, 140)
    assert np.asarray(piece.getchannel("A")).min() == 255
    assert np.array_equal(rgb(piece), rgb(photo.crop((30, 20, 90, 160))))


# --- placement ----------------------------------------------------------------------------------------

CANVASES = {"1:1": (160, 160), "9:16": (90, 160), "16:9": (160, 90)}


@pytest.mark.parametrize("canvas", list(CANVASES.values()), ids=list(CANVASES))
def test_product_box_scale_ground_line_and_centre(canvas):
    width, height = canvas
    placement = ProductPlacement(scale=0.5, x=0.5, ground=0.85)
    box = product_box((50, 100), canvas, placement)
    assert box.height == round(0.5 * height)
    assert box.width == round(box.height * 50 / 100)
    assert box.bottom == round(0.85 * height)
    assert abs((box.left + box.right) / 2 - width / 2) <= 1
    # Another x moves it, another scale resizes it.
    right = product_box((50, 100), canvas, ProductPlacement(scale=0.3, x=0.7, ground=0.85))
    assert right.height == round(0.3 * height) and abs((right.left + right.right) / 2 - 0.7 * width) <= 1


@pytest.mark.parametrize("canvas", list(CANVASES.values()), ids=list(CANVASES))
@pytest.mark.parametrize("x", [0.0, 1.0])
def test_product_box_stays_on_the_canvas_at_its_edges(canvas, x):
    width, height = canvas
    box = product_box((80, 100), canvas, ProductPlacement(scale=0.6, x=x, ground=1.0))
    assert 0 <= box.left and box.right <= width and 0 <= box.top and box.bottom <= height
    assert (box.left == 0) if x == 0.0 else (box.right == width)
    assert box.bottom == height


@pytest.mark.parametrize("canvas", list(CANVASES.values()), ids=list(CANVASES))
def test_wide_product_shrinks_to_leave_scene_on_both_sides(canvas):
    width, height = canvas
    box = product_box((400, 100), canvas, ProductPlacement(scale=0.5, x=0.5, ground=0.85))
    assert box.width <= round(MAX_WIDTH_SHARE * width)
    assert box.width >= MAX_WIDTH_SHARE * width - 1
    assert box.height < round(0.5 * height)
    assert abs(box.width / box.height - 4) < 0.15
    assert box.left >= 1 and box.right <= width - 1


def test_product_never_reaches_above_the_canvas():
    box = product_box((50, 100), (100, 100), ProductPlacement(scale=0.9, x=0.5, ground=0.4))
    assert box.top == 0 and box.bottom == 40


# --- the composite keeps the product's own pixels -----------------------------------------------------

@pytest.mark.parametrize("photo_of", [box_photo, bottle_photo],
                         ids=["box", "bottle"])
@pytest.mark.parametrize("x", [0.5, 0.3])
def test_at_its_own_size_the_product_keeps_the_photos_pixels(photo_of, x):
    photo, known = photo_of()
    canvas = (160, 200)
    # The crop is 140 px high: scale 0.7 of a 200 px canvas places it at its own size.
    placed = place_product(photo, known, canvas, ProductPlacement(scale=0.7, x=x, ground=0.85))
    left, top, right, bottom = bounding_box(known)
    assert (placed.box.width, placed.box.height) == (right - left, bottom - top)
    background = noise_background(canvas)
    picture = rgb(composite(background, placed, contact_shadow(placed, ShadowSpec(0.6, 0.05))))
    core = interior(placed)
    assert core.sum() > 0.8 * binary(known).sum()
    ys, xs = np.nonzero(core)
    original = rgb(photo)[ys - placed.box.top + top, xs - placed.box.left + left]
    changed = np.any(picture[ys, xs] != original, axis=-1)
    where = list(zip(xs[changed][:3].tolist(), ys[changed][:3].tolist()))
    assert changed.sum() == 0, f"{changed.sum()} interior pixels differ from the photo, e.g. at (x, y) {where}"


@pytest.mark.parametrize("photo_of", [box_photo, bottle_photo],
                         ids=["box", "bottle"])
@pytest.mark.parametrize("canvas, placement", [
    ((150, 150), ProductPlacement(scale=0.45, x=0.35, ground=0.9)),
    ((90, 160), ProductPlacement(scale=0.6, x=0.5, ground=0.8)),
    ((160, 90), ProductPlacement(scale=0.8, x=0.8, ground=0.95)),
], ids=["1:1 smaller", "9:16", "16:9"])
def test_at_other_scales_the_product_keeps_the_placed_layers_pixels(photo_of, canvas, placement):
    photo, known = photo_of()
    placed = place_product(photo, known, canvas, placement)
    assert placed.layer.size == placed.mask.size == canvas and placed.edge == edge_width(canvas)
    background = noise_background(canvas, seed=1)
    shadow = contact_shadow(placed, ShadowSpec(0.5, 0.04))
    picture = rgb(composite(background, placed, shadow))
    core = interior(placed)
    layer = rgb(placed.layer)
    changed = core & np.any(picture != layer, axis=-1)
    assert changed.sum() == 0, f"{changed.sum()} interior pixels differ from the placed product"
    # The placed layer is the product, resized: close to the photo's own pixels.
    left, top, right, bottom = bounding_box(known)
    expected = rgb(photo.crop((left, top, right, bottom)).resize((placed.box.width, placed.box.height), Image.BILINEAR))
    box = placed.box
    crop_core = core[box.top:box.bottom, box.left:box.right]
    near = np.abs(layer[box.top:box.bottom, box.left:box.right].astype(int) - expected.astype(int))[crop_core]
    assert near.mean() < 6
    # Outside the product: exactly the background under its shadow.
    outside = ~binary(placed.mask)
    shaded = rgb(Image.alpha_composite(background.convert("RGBA"), shadow))
    assert np.array_equal(picture[outside], shaded[outside])


# --- contact shadow -----------------------------------------------------------------------------------


def _placed_box(canvas=(120, 160), placement=None):
    photo, known = box_photo()
    return place_product(photo, known, canvas, placement or ProductPlacement(scale=0.5, x=0.4, ground=0.85))


def test_contact_shadow_lies_under_the_product():
    placed = _placed_box()
    box = placed.box
    alpha = np.asarray(contact_shadow(placed, ShadowSpec(opacity=0.5, softness=0.04)).getchannel("A"))
    assert alpha.shape == (160, 120)
    assert alpha[:box.top].max() == 0  # nothing far above the ground
    centre = (box.left + box.right) // 2
    assert alpha[box.bottom - 1, centre] > 60 and alpha[box.bottom, centre] > 60
    assert alpha.max() == round(0.5 * 255)
    rows, cols = np.nonzero(alpha == alpha.max())
    assert abs(rows.mean() - box.bottom) <= 3
    assert abs(cols.mean() - (box.left + box.right) / 2) <= box.width / 4
    # Wider than the product's base, but not across the canvas.
    cols_hit = np.nonzero(alpha[box.bottom] > 0)[0]
    assert cols_hit.min() < box.left and cols_hit.max() >= box.right and cols_hit.min() > 0


def test_no_opacity_no_shadow():
    alpha = np.asarray(contact_shadow(_placed_box(), ShadowSpec(opacity=0.0, softness=0.04)).getchannel("A"))
    assert alpha.max() == 0


def test_softer_shadow_spreads_wider():
    placed = _placed_box()
    sharp = np.asarray(contact_shadow(placed, ShadowSpec(0.5, 0.02)).getchannel("A"))
    soft = np.asarray(contact_shadow(placed, ShadowSpec(0.5, 0.1)).getchannel("A"))
    assert (soft > 0).sum() > 1.5 * (sharp > 0).sum()
    # How far above the ground line the shade reaches: a few blur radii (softness × canvas height).
    reach = lambda alpha: placed.box.bottom - np.nonzero(alpha.max(axis=1))[0].min()
    assert reach(soft) >= 2 * 0.1 * 160
    assert reach(sharp) <= 5 * 0.02 * 160


def test_shadow_follows_the_product_across_the_canvas():
    def column(x):
        """The shadow's mean column for a product centred at ``x`` of a 120 px wide canvas."""
        placed = _placed_box(placement=ProductPlacement(0.4, x, 0.8))
        alpha = np.asarray(contact_shadow(placed, ShadowSpec()).getchannel("A"))
        return np.average(np.arange(alpha.shape[1]), weights=alpha.sum(axis=0))

    assert abs(column(0.2) - 24) < 4 and abs(column(0.8) - 96) < 4


# --- layer exports ------------------------------------------------------------------------------------


def layered(shadow=True, canvas=(120, 150)) -> LayeredPicture:
    photo, known = box_photo()
    placed = place_product(photo, known, canvas, ProductPlacement(scale=0.5, x=0.4, ground=0.8))
    background = noise_background(canvas, seed=2)
    shade = contact_shadow(placed, ShadowSpec(0.5, 0.04)) if shadow else None
    return LayeredPicture(background=background, shadow=shade, product=placed.layer, mask=placed.mask,
                          composite=composite(background, placed, shade), box=placed.box,
                          info={"seed": 42, "scene": {"name": "studio_seamless", "label_zh": "棚拍无缝背景"}})


def test_psd_has_the_layers_a_designer_needs():
    picture = layered()
    psd = PSDImage.open(io.BytesIO(psd_bytes(picture)))
    assert psd.size == (120, 150)
    assert [layer.name for layer in psd] == ["Background", "Shadow", "Product", "Mask"]
    assert [layer.visible for layer in psd] == [True, True, True, False]
    box = picture.box
    product = psd[2]
    assert product.bbox == (box.left, box.top, box.right, box.bottom)
    opaque = np.asarray(picture.product.crop(product.bbox).getchannel("A")) == 255
    assert np.array_equal(rgb(product.topil())[opaque], rgb(picture.product.crop(product.bbox))[opaque])
    assert np.array_equal(rgb(psd[0].topil()), rgb(picture.background))
    # Opened as a designer sees it, the layers make the composite (PSD 8-bit rounding aside).
    assert np.abs(rgb(psd.composite()).astype(int) - rgb(picture.composite).astype(int)).max() <= 2


def test_psd_without_a_shadow_has_three_layers():
    psd = PSDImage.open(io.BytesIO(psd_bytes(layered(shadow=False))))
    assert [layer.name for layer in psd] == ["Background", "Product", "Mask"]
    assert psd.size == (120, 150)


def test_zip_holds_every_layer_and_a_manifest():
    picture = layered()
    data = zip_bytes(picture)
    assert data == zip_bytes(picture)  # the same picture gives the same file
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["background.png", "shadow.png", "product.png", "mask.png", "composite.png", "manifest.json"])
        images = {name: Image.open(io.BytesIO(archive.read(f"{name}.png")))
                  for name in ("background", "shadow", "product", "mask", "composite")}
        manifest = json.loads(archive.read("manifest.json"))
    assert all(image.size == (120, 150) for image in images.values())
    assert images["product"].mode == "RGBA" and images["mask"].mode == "L"
    assert np.array_equal(np.asarray(images["composite"]), np.asarray(picture.composite))
    assert np.array_equal(np.asarray(images["product"]), np.asarray(picture.product))
    box = picture.box
    assert manifest["canvas"] == {"width": 120, "height": 150}
    assert manifest["product_box"] == {"left": box.left, "top": box.top, "width": box.width, "height": box.height}
    positions = {layer["name"]: (layer["file"], layer["left"], layer["top"], layer["width"], layer["height"])
                 for layer in manifest["layers"]}
    for name in ("background", "shadow", "product", "mask", "composite"):
        assert positions[name] == (f"{name}.png", 0, 0, 120, 150)
    assert manifest["seed"] == 42 and manifest["scene"]["label_zh"] == "棚拍无缝背景"
    assert "棚拍无缝背景".encode() in manifest_bytes(picture)


def test_manifest_positions_match_the_files_in_the_zip():
    """A tool that lays each file at its manifest position must rebuild the composite's layout."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes(layered()))) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        sizes = {layer["name"]: Image.open(io.BytesIO(archive.read(layer["file"]))).size
                 for layer in manifest["layers"]}
    for layer in manifest["layers"]:
        assert sizes[layer["name"]] == (layer["width"], layer["height"]), layer["name"]


def test_zip_without_a_shadow_leaves_the_shadow_out():
    with zipfile.ZipFile(io.BytesIO(zip_bytes(layered(shadow=False)))) as archive:
        assert "shadow.png" not in archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
    assert [layer["name"] for layer in manifest["layers"]] == ["background", "product", "mask", "composite"]


# --- the full render with the tiny pipelines ----------------------------------------------------------


def render(tiny, pipe, canvas=(120, 150), seed=1, steps=2, controlnet=False, on_step=None, scene=None):
    photo, known = box_photo()
    # A short written scene: the tiny models make noise whatever the prompt, and short prompts encode fast.
    scene = scene or Scene.custom("a wooden table")
    settings = RenderSettings(canvas=canvas, generation_size=generation_size(canvas, tiny), seed=seed, steps=steps,
                              guidance=tiny.guidance, sampler=tiny.sampler, shadow=True,
                              control_scale=0.5 if controlnet else None)
    kwargs = {"on_step": on_step} if on_step else {}
    return render_product_picture(photo, known, scene, scene.placement, settings, pipe, **kwargs)


def check_layers(picture, canvas):
    assert picture.canvas == canvas
    assert all(image.size == canvas for image in picture.layers().values())
    # The product is pasted back, not repainted.
    core = ndimage.binary_erosion(binary(picture.mask), iterations=edge_width(canvas))
    assert core.sum() > 0.5 * binary(picture.mask).sum()
    assert np.array_equal(rgb(picture.composite)[core], rgb(picture.product)[core])
    outside = ~binary(picture.mask)
    shaded = rgb(Image.alpha_composite(picture.background.convert("RGBA"), picture.shadow))
    assert np.array_equal(rgb(picture.composite)[outside], shaded[outside])


def test_render_on_a_custom_canvas(tiny, cache, scenes):
    canvas = (120, 150)
    picture = render(tiny, cache.inpainting(tiny), canvas=canvas, scene=scenes["studio_dark"])
    check_layers(picture, canvas)
    assert picture.info["controlnet"] is False
    assert picture.info["scene"]["name"] == "studio_dark"
    assert picture.info["seed"] == 1
    assert (picture.info["generated_size"]["width"], picture.info["generated_size"]["height"]) == \
        generation_size(canvas, tiny)


def test_render_nine_by_sixteen_with_controlnet(tiny, cache):
    canvas = (90, 160)  # 9:16, small
    assert generation_size(CANVAS_FORMATS["9:16"], tiny) == generation_size(canvas, tiny)
    pipe = cache.inpainting(tiny, controlnet=True)
    picture = render(tiny, pipe, canvas=canvas, controlnet=True, seed=5)
    check_layers(picture, canvas)
    assert picture.info["controlnet"] is True
    # The second picture loads nothing and is the same for the same seed.
    loads = cache.loads
    assert cache.inpainting(tiny, controlnet=True) is pipe
    again = render(tiny, pipe, canvas=canvas, controlnet=True, seed=5)
    assert cache.loads == loads
    assert np.array_equal(rgb(again.background), rgb(picture.background))


def test_generation_size_keeps_the_canvas_aspect(tiny):
    small = generation_size(CANVAS_FORMATS["9:16"], tiny)
    assert small[0] < small[1] and all(side % 8 == 0 for side in small)
    assert tiny.min_size <= min(small) and max(small) <= max(tiny.default_size)
    sdxl = load_profiles()["sdxl"]
    assert generation_size(CANVAS_FORMATS["9:16"], sdxl) == (576, 1024)
    assert generation_size(CANVAS_FORMATS["16:9"], sdxl) == (1024, 576)
    assert generation_size(CANVAS_FORMATS["1:1"], sdxl) == (1024, 1024)
    assert generation_size(CANVAS_FORMATS["4:5"], sdxl) == (816, 1024)


def test_same_seed_same_scene_other_seed_other_scene(tiny, cache):
    pipe = cache.inpainting(tiny)
    first = render(tiny, pipe, seed=11)
    loads = cache.loads
    again, other = render(tiny, cache.inpainting(tiny), seed=11), render(tiny, pipe, seed=12)
    assert cache.loads == loads
    assert np.array_equal(rgb(first.background), rgb(again.background))
    assert np.array_equal(rgb(first.composite), rgb(again.composite))
    assert np.abs(rgb(first.background).astype(int) - rgb(other.background).astype(int)).max() > 10
    # The product is the same in both scenes.
    assert np.array_equal(np.asarray(first.product), np.asarray(other.product))


def test_on_step_reports_every_step_and_can_stop_the_render(tiny, cache):
    pipe = cache.inpainting(tiny)
    seen = []
    render(tiny, pipe, steps=4, on_step=lambda step, total: seen.append((step, total)))
    assert seen == [(step, 4) for step in range(5)]

    stopped = []

    def cancel_at_two(step, total):
        stopped.append(step)
        if step == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        render(tiny, pipe, steps=4, on_step=cancel_at_two)
    assert stopped == [0, 1, 2]


# --- requests -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    return load_scenes()


def resolve(profile, catalogue, **raw):
    raw.setdefault("material_id", "m1")
    raw.setdefault("scenes", ["studio_seamless"])
    return resolve_product(raw, profile, catalogue, random.Random(0))


@pytest.mark.parametrize("raw, message", [
    ({"material_id": ""}, "Pick the product photo"),
    ({"scenes": []}, "Choose at least one scene"),
    ({"scenes": ["studio_seamless", "nowhere"]}, "Unknown scene nowhere"),
    ({"variants": 4, "scenes": ["studio_seamless", "studio_dark", "beach_sand", "wooden_desk"],
      "scene_prompt": "on a mossy rock"}, "5 scenes × 4 variants makes 20 pictures; one job makes at most 16"),
    ({"canvas_format": "custom", "height": 300}, "custom canvas needs both a width and a height"),
    ({"canvas_format": "custom", "width": 10, "height": 300}, "Canvas width"),
    ({"canvas_format": "3:2"}, "Unknown canvas format"),
    ({"variants": 0}, "Variants per scene"),
    ({"placement": {"scale": 2}}, "Product scale"),
])
def test_bad_product_requests_say_what_to_fix(tiny, scenes, raw, message):
    with pytest.raises(ParamError, match=message):
        resolve(tiny, scenes, **raw)


def test_controlnet_needs_a_profile_with_one(tiny, scenes):
    bare = dataclasses.replace(tiny, roles={k: v for k, v in tiny.roles.items() if k != "controlnet"})
    with pytest.raises(ParamError, match="has no ControlNet"):
        resolve(bare, scenes, controlnet=True)
    assert resolve(bare, scenes).controlnet is False
    assert resolve(tiny, scenes, controlnet=True).controlnet is True


def test_profile_without_inpainting_cannot_make_product_pictures(scenes):
    hunyuan = load_profiles()["hunyuan"]
    with pytest.raises(ParamError, match="hunyuan profile has no inpainting model"):
        resolve(hunyuan, scenes)


def test_valid_request_enumerates_scenes_and_variants_with_shared_seeds(tiny, scenes):
    request = resolve(tiny, scenes, scenes=["studio_seamless", "studio_dark"], variants=3, seed=100,
                      scene_prompt="  on a   mossy rock ")
    assert [s["name"] for s in request.scenes] == ["studio_seamless", "studio_dark", "custom"]
    assert request.scene(2).prompt == "on a mossy rock"
    assert request.scene(2).label_zh
    assert (request.canvas_format, request.width, request.height) == ("1:1", *CANVAS_FORMATS["1:1"])
    assert request.steps == tiny.steps and request.guidance == tiny.guidance
    assert [(o["index"], o["scene"], o["variant"]) for o in request.outputs] == \
        [(s * 3 + v, s, v) for s in range(3) for v in range(3)]
    for output in request.outputs:
        assert output["seed"] == image_seed(100, output["variant"])
    assert len({o["seed"] for o in request.outputs}) == 3


def test_random_seed_is_pinned_and_placement_overrides_every_scene(tiny, scenes):
    request = resolve(tiny, scenes, seed="random", placement={"scale": 0.3, "x": 0.25, "ground": 0.9})
    assert 0 <= request.seed <= MAX_SEED
    assert request.outputs[0]["seed"] == request.seed
    assert request.placement_for(request.scene(0)) == ProductPlacement(0.3, 0.25, 0.9)
    assert resolve(tiny, scenes).placement_for(request.scene(0)) == scenes["studio_seamless"].placement


def composite_params(request, output_index) -> dict:
    """The params a stored composite records (as tasks.product does), for a rerun."""
    output = request.outputs[output_index]
    return {"material_id": request.material_id, "scene": request.scenes[output["scene"]], "seed": output["seed"],
            "variant": output["variant"], "steps": request.steps, "guidance": request.guidance,
            "placement_override": request.placement, "controlnet": request.controlnet,
            "control_scale": request.control_scale, "shadow": request.shadow}


def test_rerun_keeps_the_stored_scene_when_the_preset_changed_or_went(tiny, scenes):
    source = resolve(tiny, scenes, scenes=["snow"], seed=11)
    params = composite_params(source, 0)
    edited = {name: scene for name, scene in scenes.items() if name != "snow"}
    rerun = resolve_product(rerun_request("asset-3", params, "4:5"), tiny, edited)
    assert rerun.scenes == [scenes["snow"].to_dict()]
    assert rerun.outputs[0]["seed"] == 11


def test_a_scene_given_as_data_is_checked(tiny, scenes):
    broken = dict(scenes["snow"].to_dict(), placement={"scale": 3.0, "x": 0.5, "ground": 0.8})
    with pytest.raises(ParamError, match="not valid"):
        resolve(tiny, scenes, scenes=[], scene_specs=[broken])
    with pytest.raises(ParamError, match="needs a prompt"):
        resolve(tiny, scenes, scenes=[], scene_specs=[dict(scenes["snow"].to_dict(), prompt=" ")])


def test_rerun_renders_the_same_scene_and_seed_on_another_canvas(tiny, scenes):
    source = resolve(tiny, scenes, scenes=["studio_dark", "beach_sand"], variants=3, seed=500, steps=3,
                     guidance=4.5, shadow=False, placement={"scale": 0.4, "x": 0.6, "ground": 0.8})
    params = composite_params(source, 5)  # beach_sand, variant 2
    rerun = resolve_product(rerun_request("asset-9", params, "9:16"), tiny, scenes)
    assert [s["name"] for s in rerun.scenes] == ["beach_sand"]
    assert [o["seed"] for o in rerun.outputs] == [image_seed(500, 2)]
    assert (rerun.canvas_format, rerun.width, rerun.height) == ("9:16", *CANVAS_FORMATS["9:16"])
    assert (rerun.steps, rerun.guidance, rerun.shadow, rerun.rerun_of) == (3, 4.5, False, "asset-9")
    assert rerun.placement == source.placement

    custom = resolve(tiny, scenes, scenes=[], scene_prompt="a marble plinth", seed=7)
    again = resolve_product(rerun_request("asset-1", composite_params(custom, 0), "custom", 100, 120), tiny, scenes)
    assert again.scene(0).prompt == "a marble plinth" and again.scenes[0]["name"] == "custom"
    assert (again.width, again.height, again.outputs[0]["seed"]) == (100, 120, 7)


def test_rerun_keeps_the_controlnet_strength(tiny, scenes):
    source = resolve(tiny, scenes, controlnet=True, control_scale=1.2)
    rerun = resolve_product(rerun_request("asset-2", composite_params(source, 0), "16:9"), tiny, scenes)
    assert rerun.controlnet is True
    assert rerun.control_scale == 1.2


# --- scene presets ------------------------------------------------------------------------------------


def test_every_scene_is_complete_and_keeps_the_product_on_the_canvas(scenes):
    assert len(scenes) >= 24
    assert {scene.category for scene in scenes.values()} == set(CATEGORIES)
    assert len({scene.label for scene in scenes.values()}) == len(scenes)
    for name, scene in scenes.items():
        assert scene.name == name and scene.label
        assert any("\u4e00" <= c <= "\u9fff" for c in scene.label_zh), name
        assert scene.prompt.strip() and scene.negative.strip(), name
        assert scene.prompt in scene.full_prompt
        assert Scene.from_dict(scene.to_dict()) == scene
        for fmt in ("1:1", "9:16"):
            width, height = CANVAS_FORMATS[fmt]
            for product in ((300, 900), (900, 300)):
                box = product_box(product, (width, height), scene.placement)
                assert 0 <= box.left and box.right <= width and 0 <= box.top and box.bottom <= height, (name, fmt)
                assert box.bottom == round(scene.placement.ground * height), (name, fmt)


def test_a_bad_scene_file_names_the_scene(tmp_path):
    path = tmp_path / "scenes.json"
    entry = {"label": "L", "label_zh": "场景", "category": "studio", "prompt": "p", "negative": "n", "lighting": "",
             "placement": {"scale": 0.5}, "shadow": {}}
    path.write_text(json.dumps({"ok": entry, "odd": dict(entry, category="space")}), encoding="utf-8")
    with pytest.raises(ValueError, match="'odd'.*unknown category 'space'"):
        load_scenes(path)
    path.write_text(json.dumps({"big": dict(entry, placement={"scale": 1.5})}), encoding="utf-8")
    with pytest.raises(ValueError, match="'big'.*scale 1.5"):
        load_scenes(path)

"""Game assets on the tiny profile: seamless textures, transparent sprites, sprite sheets, and the requests
that ask for them (asset types, style LoRAs, the LoRA list).

Sprite pictures are drawn here with PIL; the tiny profile's segmenter is a u2net-shaped ONNX that finds
dark or coloured objects on a light background, so every test knows the true mask.
"""

import dataclasses
import itertools
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.cascade import run_cascade
from engine.game.request import load_asset_types, resolve_game_asset
from engine.game.sprites import MARGIN, cut_sprite, sprite_sheet
from engine.game.tiling import seamless
from engine.params import MAX_LORAS, ParamError, resolve_generation
from engine.styles import load_styles

FIGURE = (140, 20, 20)



@pytest.fixture(scope="module")
def styles():
    return load_styles()


@pytest.fixture(scope="module")
def asset_types():
    return load_asset_types()


@pytest.fixture(scope="module")
def pipe(tiny, cache):
    return cache.pipeline(tiny, "base")


def padding_modes(pipe) -> set[str]:
    return {m.padding_mode for module in (pipe.unet, pipe.vae) for m in module.modules() if isinstance(m, torch.nn.Conv2d)}


# --- seamless tiling ----------------------------------------------------------------------------------


def from_latents(pipe, latents) -> np.ndarray:
    with torch.no_grad():
        return pipe("mossy stone bricks", num_inference_steps=4, width=64, height=64, latents=latents.clone(),
                    output_type="np", generator=torch.Generator().manual_seed(1)).images[0]


def test_seamless_pictures_wrap_around(pipe):
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(latents, 4, dims=3)  # 4 latent columns: 16 px, the tiny VAE scales by 4
    assert padding_modes(pipe) == {"zeros"}
    with seamless(pipe) as same:
        assert same is pipe and padding_modes(pipe) == {"circular"}
        first, second = from_latents(pipe, latents), from_latents(pipe, shifted)
    assert padding_modes(pipe) == {"zeros"}

    # The picture from the shifted latents is the first picture shifted, wrapped around at the edges...
    assert first.shape == (64, 64, 3)
    assert np.abs(second - np.roll(first, 16, axis=1)).max() < 1e-4
    # ...so the first picture's seam (its last column next to its first) is drawn in the second picture as
    # two interior neighbours: its right edge continues into its left one.
    assert np.abs(second[:, 15] - first[:, -1]).max() < 1e-4
    assert np.abs(second[:, 16] - first[:, 0]).max() < 1e-4

    # Without circular padding the edges are edges, and the same shift makes another picture.
    plain_first, plain_second = from_latents(pipe, latents), from_latents(pipe, shifted)
    assert np.abs(plain_second - np.roll(plain_first, 16, axis=1)).max() > 0.1


def test_seamless_disabled_changes_nothing_and_an_error_restores_the_padding(pipe):
    with seamless(pipe, enabled=False):
        assert padding_modes(pipe) == {"zeros"}
    with pytest.raises(RuntimeError, match="boom"), seamless(pipe):
        raise RuntimeError("boom")
    assert padding_modes(pipe) == {"zeros"}


def test_the_cascade_draws_a_tileable_picture(tiny, cache, styles, pipe):
    raw = {"prompt": "mossy stone bricks", "seed": 5, "width": 64, "height": 64}
    tileable = resolve_generation(dict(raw, tileable=True), tiny, styles, random.Random(0))
    assert tileable.tileable and tileable.stages == ["base"]
    tiled = run_cascade(tileable, tiny, cache).images
    assert [image.size for image in tiled] == [(64, 64)]
    assert padding_modes(pipe) == {"zeros"}
    plain = run_cascade(resolve_generation(raw, tiny, styles), tiny, cache).images[0]
    assert np.abs(np.asarray(tiled[0], dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max() > 0


def test_a_tileable_picture_has_no_refiner_or_upscaler(tiny, styles):
    for stages in (["refiner"], ["latent_x2"]):
        with pytest.raises(ParamError, match="tileable picture is drawn by the base model alone"):
            resolve_generation({"prompt": "bricks", "tileable": True, "stages": stages}, tiny, styles)


# --- sprites ------------------------------------------------------------------------------------------


@pytest.fixture
def segmenter(tiny, cache, models_dir, monkeypatch):
    """The tiny profile's rembg session; rembg only opens a custom ONNX from inside its model folder."""
    monkeypatch.setenv("REMBG_HOME", str(models_dir))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    return cache.segmenter(tiny)


def figure_picture() -> Image.Image:
    """A dark red figure on white, 64×96: a body (x 16-35, y 20-79) with a white hole in it, a separate
    square sword (x 42-49, y 40-47), and a one-pixel speck far away at (60, 92)."""
    picture = Image.new("RGB", (64, 96), "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle([16, 20, 35, 79], fill=FIGURE)
    draw.rectangle([22, 40, 29, 49], fill="white")  # the hole
    draw.rectangle([42, 40, 49, 47], fill=FIGURE)  # the sword
    draw.point((60, 92), fill=FIGURE)  # the speck
    return picture


def test_cut_sprite_trims_to_the_figure_keeps_its_sword_and_hole_and_drops_the_speck(segmenter):
    sprite = cut_sprite(figure_picture(), segmenter)
    assert sprite.note is None and sprite.image.mode == "RGBA"
    # The figure (body and sword) spans x 16-49 and y 20-79; the box adds the margin. The segmenter works on
    # a 320 px copy, so its mask's edges may be a pixel softer.
    expected = (16 - MARGIN, 20 - MARGIN, 50 + MARGIN, 80 + MARGIN)
    assert all(abs(got - want) <= 1 for got, want in zip(sprite.box, expected)), sprite.box
    left, top, right, bottom = sprite.box
    assert sprite.image.size == (right - left, bottom - top)
    assert right < 60 and bottom < 92  # the speck is not in the sprite

    alpha = np.asarray(sprite.image)[..., 3]
    rgb = np.asarray(sprite.image)[..., :3]

    def at(x, y):  # picture coordinates -> sprite array index
        return y - top, x - left

    assert alpha[at(25, 30)] == 255 and tuple(rgb[at(25, 30)]) == FIGURE  # the body
    assert alpha[at(45, 43)] == 255 and tuple(rgb[at(45, 43)]) == FIGURE  # the separate sword
    assert alpha[at(25, 44)] == 0  # the hole stays see-through
    assert alpha[at(40, 30)] == 0  # between body and sword
    assert (alpha[:, :1] < 128).all() and (alpha[:1, :] < 128).all()  # the margin is background


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # rembg normalises a flat mask by 0
def test_cut_sprite_keeps_a_picture_with_no_subject_whole(segmenter):
    blank = Image.new("RGB", (64, 96), "white")
    sprite = cut_sprite(blank, segmenter)
    assert sprite.box == (0, 0, 64, 96) and sprite.image.size == (64, 96) and sprite.image.mode == "RGBA"
    assert (np.asarray(sprite.image)[..., 3] == 255).all()
    assert "No subject could be separated" in sprite.note


# --- sprite sheets ------------------------------------------------------------------------------------

SPRITE_SIZES = [(10, 20), (16, 12), (8, 8), (20, 24), (12, 30)]


def opaque_sprites() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sprites = []
    for w, h in SPRITE_SIZES:
        pixels = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        pixels[..., 3] = 255
        sprites.append(Image.fromarray(pixels, "RGBA"))
    return sprites


def overlaps(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


@pytest.mark.parametrize("align", ["bottom", "center"])
def test_sprite_sheet_packs_each_sprite_in_its_cell(align):
    sprites, padding = opaque_sprites(), 4
    sheet, frames = sprite_sheet(sprites, columns=3, padding=padding, align=align)
    cell_w, cell_h = 20 + 2 * padding, 30 + 2 * padding  # the largest sprite's size plus padding
    assert sheet.mode == "RGBA" and sheet.size == (3 * cell_w, 2 * cell_h)
    assert [f["index"] for f in frames] == list(range(5))
    assert not any(overlaps(a, b) for a, b in itertools.combinations(frames, 2))

    pixels = np.asarray(sheet)
    covered = np.zeros(pixels.shape[:2], dtype=bool)
    for frame, sprite in zip(frames, sprites):
        column, row = frame["index"] % 3, frame["index"] // 3
        x, y, w, h = frame["x"], frame["y"], frame["w"], frame["h"]
        assert (w, h) == sprite.size
        assert column * cell_w <= x and x + w <= (column + 1) * cell_w  # inside its own cell
        assert row * cell_h <= y and y + h <= (row + 1) * cell_h
        assert x - column * cell_w == (cell_w - w) // 2  # centred horizontally
        if align == "bottom":
            assert y + h == (row + 1) * cell_h - padding
        else:
            assert y - row * cell_h == (cell_h - h) // 2
        assert (pixels[y:y + h, x:x + w] == np.asarray(sprite)).all()
        covered[y:y + h, x:x + w] = True
    assert (pixels[~covered] == 0).all()  # transparent everywhere else


def test_sprite_sheet_default_columns_and_empty_list():
    sheet, _ = sprite_sheet(opaque_sprites(), padding=0)
    assert sheet.size == (3 * 20, 2 * 30)  # ceil(sqrt(5)) = 3 columns
    with pytest.raises(ValueError, match="at least one sprite"):
        sprite_sheet([])


# --- game-asset requests ------------------------------------------------------------------------------


def asset(tiny, styles, asset_types, **raw):
    raw.setdefault("prompt", "a knight with a lantern")
    raw.setdefault("seed", 3)
    return resolve_game_asset(raw, tiny, styles, asset_types, random.Random(0))


def test_character_stands_in_a_tall_frame_on_transparency(tiny, styles, asset_types):
    params = asset(tiny, styles, asset_types, asset_type="character")
    assert params.subject == "a knight with a lantern"
    assert "a knight with a lantern" in params.prompt and "full-body" in params.prompt
    assert "a knight with a lantern" in params.full_prompt
    assert "cut off feet" in params.full_negative_prompt
    assert params.height > params.width and (params.width, params.height) == (40, 64)  # 2:3 at 64 px
    assert params.transparent is True and params.tileable is False and params.sheet_align == "bottom"
    assert params.sprite_sheet is False and params.loras == []


def test_icon_is_square_and_texture_tiles(tiny, styles, asset_types):
    icon = asset(tiny, styles, asset_types, asset_type="icon")
    assert icon.width == icon.height and icon.transparent and icon.sheet_align == "center"
    texture = asset(tiny, styles, asset_types, asset_type="texture", prompt="cobblestones")
    assert texture.tileable is True and texture.transparent is False and texture.width == texture.height
    assert texture.prompt.startswith("seamless tileable texture of cobblestones")
    # The texture always tiles, so it runs on the base model alone.
    with pytest.raises(ParamError, match="tileable"):
        asset(tiny, styles, asset_types, asset_type="texture", stages=["refiner"])


@pytest.mark.parametrize("asset_type, label", [("texture", "tileable texture"), ("environment", "environment")])
def test_pictures_that_fill_their_frame_refuse_transparency(tiny, styles, asset_types, asset_type, label):
    with pytest.raises(ParamError, match=f"A {label} fills its frame; transparent output is for characters"):
        asset(tiny, styles, asset_types, asset_type=asset_type, transparent=True)


def test_sprite_sheet_needs_variations_and_transparency(tiny, styles, asset_types):
    with pytest.raises(ParamError, match="at least 2 variations"):
        asset(tiny, styles, asset_types, sprite_sheet=True, count=1)
    with pytest.raises(ParamError, match="turn on transparent output"):
        asset(tiny, styles, asset_types, sprite_sheet=True, transparent=False, count=4)
    sheet = asset(tiny, styles, asset_types, sprite_sheet=True, count=4, sheet_columns=2)
    assert sheet.sprite_sheet and sheet.count == 4 and sheet.sheet_columns == 2
    with pytest.raises(ParamError, match="Sheet columns 9 is out of range"):
        asset(tiny, styles, asset_types, sprite_sheet=True, count=4, sheet_columns=9)


def test_unknown_type_and_empty_subject_are_refused(tiny, styles, asset_types):
    with pytest.raises(ParamError, match="Unknown asset type 'vehicle'"):
        asset(tiny, styles, asset_types, asset_type="vehicle")
    with pytest.raises(ParamError, match="Describe the asset"):
        asset(tiny, styles, asset_types, prompt="  ")


def test_a_styles_lora_is_added_only_on_its_profile(tiny, styles, asset_types):
    assert styles["pixel-art"].lora is not None and styles["pixel-art"].lora.profile == "sdxl"
    on_tiny = asset(tiny, styles, asset_types, style="pixel-art")
    assert on_tiny.loras == []
    assert "pixel art of full-body character design of a knight with a lantern" in on_tiny.full_prompt
    assert on_tiny.height > on_tiny.width  # the asset type's aspect, not the style's square

    fake_sdxl = dataclasses.replace(tiny, name="sdxl")
    on_sdxl = asset(fake_sdxl, styles, asset_types, style="pixel-art")
    assert on_sdxl.loras == [{"name": "Pixel art style", "model": "nerijs/pixel-art-xl",
                              "weight_name": "pixel-art-xl.safetensors", "weight": 0.8}]


# --- the LoRA list of a generation request ------------------------------------------------------------


def generation(tiny, styles, **raw):
    return resolve_generation({"prompt": "a fox", **raw}, tiny, styles, random.Random(0))


def test_named_loras_are_kept_with_their_weights(tiny, styles):
    loras = [{"lora_id": "a", "weight": 0.7}, {"lora_id": "b", "weight": "-0.5"}, {"lora_id": "c"}]
    params = generation(tiny, styles, loras=loras)
    assert params.loras == [{"lora_id": "a", "weight": 0.7}, {"lora_id": "b", "weight": -0.5}, {"lora_id": "c", "weight": 1.0}]
    assert generation(tiny, styles).loras == [] and generation(tiny, styles, loras="").loras == []


@pytest.mark.parametrize("loras, message", [
    ([{"lora_id": "a", "weight": 0.5}, {"lora_id": "a", "weight": 1.0}], "The same LoRA is named twice"),
    ([{"lora_id": "a", "weight": 3}], "The weight of LoRA a 3.0 is out of range: choose -2.0 to 2.0"),
    ([{"lora_id": "a", "weight": "heavy"}], "The weight of LoRA a must be a number"),
    ([{"lora_id": str(i)} for i in range(MAX_LORAS + 1)], "5 LoRAs were asked for .* at most 4"),
    ([{"weight": 1.0}], "Each LoRA needs a lora_id"),
    ({"lora_id": "a"}, "loras must be a list"),
])
def test_bad_lora_lists_are_refused(tiny, styles, loras, message):
    with pytest.raises(ParamError, match=message):
        generation(tiny, styles, loras=loras)


def test_the_styles_lora_counts_towards_the_limit(tiny, styles):
    fake_sdxl = dataclasses.replace(tiny, name="sdxl")
    four = [{"lora_id": str(i)} for i in range(MAX_LORAS)]
    assert len(generation(fake_sdxl, styles, loras=four).loras) == MAX_LORAS
    with pytest.raises(ParamError, match=r"5 LoRAs were asked for \(with the style's own\)"):
        generation(fake_sdxl, styles, loras=four, style="pixel-art")

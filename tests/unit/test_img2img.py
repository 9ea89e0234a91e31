"""Image-to-image: requests, keeps and their availability, and several ControlNets at their own weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.cascade import ControlCondition, run_cascade
from engine.img2img import control_conditions, fit_source
from engine.img2img_request import KEEPS, UNNAMED_SUBJECT, keep_problem, resolve_img2img
from engine.params import GenerationParams, ParamError, size_like
from engine.profiles import load_profiles
from engine.styles import load_styles
from tests.support import figure_drawing

SIZE = (64, 48)


@pytest.fixture(scope="module")
def styles():
    return load_styles()


def params_for(tiny, styles, **raw) -> GenerationParams:
    request = dict(source_asset_id="a1", prompt="a knight in armour", width=SIZE[0], height=SIZE[1], steps=2, seed=7)
    return resolve_img2img({**request, **raw}, tiny, styles)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def test_a_request_names_one_source_and_its_keeps_in_order(tiny, styles):
    params = params_for(tiny, styles, keeps=[{"kind": "depth", "weight": 0.5}, "edges"], strength=0.4)
    assert params.init_asset_id == "a1" and params.init_material_id is None
    assert params.controls == [{"kind": "depth", "weight": 0.5}, {"kind": "edges", "weight": KEEPS["edges"].default_weight}]
    assert params.strength == 0.4
    material = resolve_img2img({"source_material_id": "m1", "prompt": "x"}, tiny, styles)
    assert material.init_material_id == "m1" and material.controls == [] and material.strength == 0.6


@pytest.mark.parametrize("raw, message", [
    ({"prompt": "x"}, "Choose one source picture"),
    ({"prompt": "x", "source_asset_id": "a", "source_material_id": "m"}, "Choose one source picture"),
    ({"source_asset_id": "a"}, "Describe the result in the prompt, pick a style, or both"),
    ({"source_asset_id": "a", "prompt": "x", "keeps": [{"kind": "outline"}]}, "Unknown keep 'outline'"),
    ({"source_asset_id": "a", "prompt": "x", "keeps": ["pose", {"kind": "pose", "weight": 1}]}, "named twice"),
    ({"source_asset_id": "a", "prompt": "x", "keeps": [{"kind": "depth", "weight": 2.5}]}, "The weight of Depth 2.5 is out of range"),
    ({"source_asset_id": "a", "prompt": "x", "keeps": "pose"}, "keeps must be a list"),
    ({"source_asset_id": "a", "prompt": "x", "keeps": [{"kind": ["pose"]}]}, "Unknown keep"),
    ({"source_asset_id": "a", "prompt": "x", "strength": 0}, "Strength 0.0 is out of range"),
])
def test_bad_requests_say_what_to_correct(tiny, styles, raw, message):
    with pytest.raises(ParamError, match=message):
        resolve_img2img(raw, tiny, styles)


def test_a_style_alone_restyles_the_source(tiny, styles):
    params = resolve_img2img({"source_asset_id": "a", "style": "watercolor"}, tiny, styles)
    assert params.prompt == ""
    assert UNNAMED_SUBJECT in params.full_prompt and "watercolor" in params.full_prompt.lower()


def test_a_profile_without_the_models_of_a_keep_refuses_it_by_name(styles):
    hunyuan = load_profiles()["hunyuan"]
    with pytest.raises(ParamError, match="Pose .* cannot be kept on the hunyuan profile"):
        resolve_img2img({"source_asset_id": "a", "prompt": "x", "keeps": ["pose"]}, hunyuan, styles)


def test_keeps_whose_models_are_missing_say_which_model(tiny):
    sdxl = load_profiles()["sdxl"]
    assert keep_problem(KEEPS["edges"], tiny, lambda model: True) is None
    problem = keep_problem(KEEPS["depth"], sdxl, lambda model: "controlnet" in model)
    assert problem == "Depth: its preprocessor model depth-anything/Depth-Anything-V2-Small-hf is not on this machine."
    assert "names no ControlNet" in keep_problem(KEEPS["pose"], load_profiles()["hunyuan"], lambda model: True)


def test_the_size_follows_the_source_shape_within_the_profile(tiny):
    assert size_like(1600, 1000, tiny) == (64, 40)
    sdxl = load_profiles()["sdxl"]
    assert size_like(1600, 900, sdxl) == (1024, 576)
    assert size_like(300, 3000, sdxl) == (512, 1024)  # clamped up to the profile's minimum


def test_the_source_is_cropped_to_the_output_shape_not_stretched():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    ImageDraw.Draw(wide).rectangle((0, 0, 49, 99), fill=(0, 0, 255))  # a blue band the crop cuts off
    fitted = fit_source(wide, (64, 64))
    assert fitted.size == (64, 64)
    assert np.asarray(fitted)[:, :, 2].max() < 40


def test_each_keep_draws_its_map_at_the_output_size(tiny, cache):
    source = fit_source(figure_drawing(), SIZE)
    controls = [{"kind": "pose", "weight": 1.0}, {"kind": "edges", "weight": 0.8}, {"kind": "depth", "weight": 0.5}]
    drawn = []
    conditions, maps = control_conditions(source, controls, tiny, cache, drawn.append)
    assert drawn == ["pose", "edges", "depth"] and list(maps) == drawn
    assert [(c.role, c.scale) for c in conditions] == [("controlnet_pose", 1.0), ("controlnet", 0.8), ("controlnet_depth", 0.5)]
    assert all(m.size == SIZE and m.mode == "RGB" for m in maps.values())
    edges = np.asarray(maps["edges"])
    assert edges.any() and set(np.unique(edges)) <= {0, 255}


def test_a_keep_at_weight_zero_changes_nothing(tiny, cache, styles):
    source = fit_source(figure_drawing(), SIZE)
    conditions, _ = control_conditions(source, [{"kind": "edges", "weight": 0.8}, {"kind": "depth", "weight": 0.0}], tiny, cache)
    params = params_for(tiny, styles)
    both = run_cascade(params, tiny, cache, init_images=[source], control=conditions)
    edges_only = run_cascade(params, tiny, cache, init_images=[source], control=conditions[:1])
    assert np.array_equal(pixels(both), pixels(edges_only))


def test_each_weight_belongs_to_its_controlnet_whatever_the_order(tiny, cache, styles):
    source = fit_source(figure_drawing(), SIZE)
    edges, depth = (control_conditions(source, [{"kind": kind, "weight": 1.5}], tiny, cache)[0][0] for kind in ("edges", "depth"))
    depth = ControlCondition(depth.image, 0.7, depth.role)
    params = params_for(tiny, styles)
    forward = run_cascade(params, tiny, cache, control=[edges, depth])
    backward = run_cascade(params, tiny, cache, control=[depth, edges])
    assert np.array_equal(pixels(forward), pixels(backward))
    # Another weight for one of them changes the picture.
    stronger = run_cascade(params, tiny, cache, control=[edges, ControlCondition(depth.image, 2.0, depth.role)])
    assert np.abs(pixels(stronger) - pixels(forward)).max() > 0
    # The multi-ControlNet pipeline is built once and shares the loaded ControlNets.
    loads = cache.loads
    assert cache.with_controlnet(tiny, ("controlnet", "controlnet_depth")) is cache.with_controlnet(tiny, ("controlnet", "controlnet_depth"))
    assert cache.with_controlnet(tiny, ("controlnet", "controlnet_depth")).controlnet.nets[0] is cache.pipeline(tiny, "controlnet")
    assert cache.loads == loads


def test_image_to_image_with_keeps_makes_pictures_of_the_asked_size(tiny, cache, styles):
    source = fit_source(figure_drawing(), SIZE)
    conditions, _ = control_conditions(source, [{"kind": "pose", "weight": 1.0}, {"kind": "edges", "weight": 0.5}], tiny, cache)
    params = params_for(tiny, styles, count=2, strength=0.5)
    result = run_cascade(params, tiny, cache, init_images=[source], control=conditions)
    assert [image.size for image in result.images] == [SIZE, SIZE]
    plain = run_cascade(params, tiny, cache, init_images=[source])
    assert np.abs(pixels(plain) - pixels(result)).max() > 0


def test_another_map_leads_to_another_picture(tiny, cache, styles):
    source = fit_source(figure_drawing(), SIZE)
    edges = control_conditions(source, [{"kind": "edges", "weight": 1.0}], tiny, cache)[0]
    blank = [ControlCondition(Image.new("RGB", SIZE), 1.0, "controlnet")]
    params = params_for(tiny, styles)
    assert np.abs(pixels(run_cascade(params, tiny, cache, control=edges)) - pixels(run_cascade(params, tiny, cache, control=blank))).max() > 0

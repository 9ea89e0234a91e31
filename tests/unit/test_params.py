import random

import pytest

from engine.params import ParamError, image_seed, resolve_generation, size_for_aspect
from engine.profiles import load_profiles
from engine.styles import load_styles


@pytest.fixture(scope="module")
def tiny():
    return load_profiles()["tiny"]


@pytest.fixture(scope="module")
def styles():
    return load_styles()


def resolve(tiny, styles, **raw):
    raw.setdefault("prompt", "a red fox")
    return resolve_generation(raw, tiny, styles, random.Random(1))


def test_defaults_come_from_the_profile(tiny, styles):
    params = resolve(tiny, styles)
    assert (params.width, params.height) == tiny.default_size
    assert params.steps == tiny.steps and params.sampler == tiny.sampler and params.guidance == tiny.guidance
    assert params.stages == ["base"] and params.count == 1 and params.profile == "tiny"


def test_random_seed_is_pinned_at_submit(tiny, styles):
    assert 0 <= resolve(tiny, styles, seed=-1).seed < 2**32
    assert resolve(tiny, styles, seed=42).seed == 42
    assert image_seed(2**32 - 1, 1) == 0


def test_style_wraps_prompt_and_joins_negatives(tiny, styles):
    params = resolve(tiny, styles, style="watercolor", negative_prompt="text")
    assert params.full_prompt.startswith("watercolor painting of a red fox")
    assert params.full_negative_prompt.startswith("text, ")
    assert params.prompt == "a red fox"


def test_stages_are_ordered_and_base_always_runs(tiny, styles):
    assert resolve(tiny, styles, stages=["x4", "refiner"]).stages == ["base", "refiner", "x4"]
    assert resolve(tiny, styles, stages=["latent_x2"]).output_size == (128, 128)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x" * 2001}, "2001 characters; the limit is 2000"),
        ({"width": 60}, "Width 60 px is not a multiple of 8"),
        ({"height": 1024}, "outside the tiny profile's range 32-256"),
        ({"count": 9}, "Image count 9 is out of range"),
        ({"count": 0}, "Image count 0 is out of range"),
        ({"count": "two"}, "Image count must be a whole number, not 'two'"),
        ({"steps": 2.5}, "Steps must be a whole number"),
        ({"steps": 0}, "Steps 0 is out of range"),
        ({"guidance": 99}, "Guidance 99.0 is out of range: choose 0 to 30"),
        ({"sampler": "magic"}, "Unknown sampler 'magic'. Known samplers: euler"),
        ({"style": "nope"}, "Unknown style 'nope'"),
        ({"stages": ["x8"]}, "has no stage x8; it has base"),
        ({"stages": ["latent_x2"], "width": 64, "height": 48}, "Upscale x2 (latent) needs width and height in multiples of 32 px; 64×48 is not. Try 64×64"),
        ({"seed": 2**40}, "Seed 1099511627776 is out of range"),
    ],
)
def test_bad_requests_get_a_message_the_user_can_act_on(tiny, styles, raw, message):
    raw = {"prompt": "a red fox", **raw}
    with pytest.raises(ParamError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        resolve_generation(raw, tiny, styles)


def test_size_for_aspect_keeps_the_long_side_in_multiples_of_32():
    assert size_for_aspect("16:9", 1024) == (1024, 576)
    assert size_for_aspect("9:16", 1024) == (576, 1024)
    assert size_for_aspect("1:1", 64) == (64, 64)
    assert size_for_aspect("4:3", 1024) == (1024, 768)
    assert size_for_aspect("3:2", 1024) == (1024, 672)
    with pytest.raises(ParamError, match="must look like"):
        size_for_aspect("wide", 512)


def test_every_style_has_a_prompt_slot_and_both_names(styles):
    assert len(styles) >= 12
    for style in styles.values():
        assert "{prompt}" in style.prompt and style.label and style.label_zh

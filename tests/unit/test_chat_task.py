"""How a chat turn becomes cascade parameters: the prompt language per profile, and each tweak."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.profiles import load_profiles
from engine.refiner.result import RefinedTurn
from storage.models import Turn
from tasks.chat import _generation_request
from tasks.generate import JobError

REFINED = RefinedTurn(intent="edit", prompt="a cat, at dusk, golden hour light", prompt_original="猫，黄昏",
                      negative_prompt="people", reply="", language="zh", style="watercolor")
SOURCE = {"width": 64, "height": 64, "stages": ["base", "refiner"], "seed": 77}


def request(turn: Turn, profile_name: str = "tiny", refined: RefinedTurn = REFINED, source=None) -> dict:
    return _generation_request(load_profiles()[profile_name], turn, refined, 5, source)


def test_english_models_get_the_english_prompt_and_a_chinese_reading_model_the_chinese_one():
    turn = Turn(settings={"count": 4, "aspect": "1:1"})
    assert request(turn)["prompt"] == "a cat, at dusk, golden hour light"
    assert request(turn, "hunyuan")["prompt"] == "猫，黄昏"
    assert request(turn, "hunyuan", replace(REFINED, language="en"))["prompt"] == REFINED.prompt
    plain = request(turn)
    assert plain["style"] == "watercolor" and plain["negative_prompt"] == "people" and plain["seed"] == 5
    assert plain["count"] == 4 and plain["stages"] == ["base", "refiner"]


def test_tweaks_start_from_the_chosen_image():
    settings = {"count": 3, "aspect": "16:9"}
    upscale = request(Turn(settings=settings, tweak={"kind": "upscale", "asset_id": "a"}), source=SOURCE)
    assert upscale["stages"] == ["base", "refiner", "latent_x2"] and upscale["count"] == 1
    assert (upscale["width"], upscale["height"]) == (64, 64)
    wide = request(Turn(settings=settings, tweak={"kind": "aspect", "asset_id": "a", "aspect": "16:9"}), source=SOURCE)
    assert wide["width"] > wide["height"] and wide["count"] == 1
    variations = request(Turn(settings=settings, tweak={"kind": "variations", "asset_id": "a"}), source=SOURCE)
    assert variations["init_asset_id"] == "a" and variations["count"] == 3


def test_an_image_at_the_last_stage_cannot_go_higher():
    top = dict(SOURCE, stages=["base", "refiner", "latent_x2", "x4"])
    with pytest.raises(JobError, match="no further super-resolution stage"):
        request(Turn(settings={}, tweak={"kind": "upscale", "asset_id": "a"}), source=top)

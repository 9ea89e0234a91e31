"""Engine pieces of the creation chat on the tiny profile: long prompts, CLIP ranking, the tiny LLM,
and image-to-image variations, all loaded back from disk through from_pretrained."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cascade import run_cascade
from engine.params import resolve_generation
from engine.prompt_encoding import prompt_arguments
from engine.refiner import RuleRefiner, TermDictionary, refine_turn
from engine.refiner.llm import ask
from engine.rerank import clip_scores, ranked
from engine.styles import load_styles

# The tiny tokenizer has one token per character, so the 77-token window ends at character 75.
HEAD = "a lighthouse on a cliff above a stormy sea, dramatic clouds, crashing waves, " * 2


@pytest.mark.parametrize("role", ["base", "refiner"])
def test_words_past_token_77_change_the_conditioning(tiny, cache, role):
    pipe = cache.pipeline(tiny, role)
    assert len(pipe.tokenizer_2(HEAD).input_ids) > 77
    first = prompt_arguments(pipe, [HEAD + "red umbrella"], [""])
    second = prompt_arguments(pipe, [HEAD + "blue bicycle"], [""])
    assert first["prompt_embeds"].shape[1] > 77  # encoded in chunks, not cut
    assert not torch.allclose(first["prompt_embeds"], second["prompt_embeds"])
    # The plain pipeline encoding cuts at 77: there, the tail makes no difference.
    plain_a = pipe.encode_prompt(HEAD + "red umbrella", device="cpu", do_classifier_free_guidance=False)[0]
    plain_b = pipe.encode_prompt(HEAD + "blue bicycle", device="cpu", do_classifier_free_guidance=False)[0]
    assert torch.allclose(plain_a, plain_b)


def test_a_long_prompt_generates_at_the_right_size(tiny, cache):
    params = resolve_generation({"prompt": HEAD * 3, "negative_prompt": "blurry " * 40, "seed": 3, "count": 2,
                                 "stages": ["refiner"]}, tiny, load_styles())
    result = run_cascade(params, tiny, cache)
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]


def test_clip_scores_rank_candidates_best_first(tiny, cache):
    scorer = cache.model(tiny, "scorer")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]
    scores = clip_scores(scorer, images, "a red fox in snow")
    assert len(scores) == 4 and len(set(scores)) > 1
    assert scores == clip_scores(scorer, images, "a red fox in snow")  # deterministic
    order = ranked(scores)
    assert [scores[i] for i in order] == sorted(scores, reverse=True)
    assert ranked([1.0, 3.0, 3.0, 2.0]) == [1, 2, 3, 0]


def test_the_tiny_llm_answers_noise_and_the_turn_falls_back_to_the_rules(tiny, cache):
    llm = cache.model(tiny, "llm")
    rules = RuleRefiner(TermDictionary.load(), load_styles())
    answer = ask(llm.model, llm.processor, [{"role": "user", "content": "画一只猫"}], max_new_tokens=32)
    assert isinstance(answer, str)
    result = refine_turn([{"text": "画一只猫坐在窗台上"}, {"text": "改成黄昏"}], rules,
                         ask_llm=lambda messages: ask(llm.model, llm.processor, messages, max_new_tokens=64))
    assert result.source == "rules" and result.fallback
    assert "dusk" in result.prompt


def test_variations_start_from_the_image_and_differ_with_the_seed(tiny, cache):
    source = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).convert("RGB")
    params = resolve_generation({"prompt": "a fox", "seed": 11, "count": 2, "init_asset_id": "src", "strength": 0.3},
                                tiny, load_styles(), random.Random(0))
    result = run_cascade(params, tiny, cache, init_images=[source])
    a, b = (np.asarray(im, dtype=np.int16) for im in result.images)
    assert result.images[0].size == (64, 64) and np.abs(a - b).mean() > 0
    loads = cache.loads
    run_cascade(params, tiny, cache, init_images=[source])
    assert cache.loads == loads  # the image-to-image pipeline shares the loaded base

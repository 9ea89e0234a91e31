"""The engine's fast path on the tiny profile: each switch keeps the picture close to the plain path's (within
what its precision allows), really takes effect, and loads nothing again on the next job; the compiled
denoiser is made once per worker; batches give each job its own pictures; the distilled fast mode."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch._dynamo.utils import counters

from engine.cascade import run_cascade
from engine.loader import PipelineCache, Placement
from engine.lora import lora_weights
from engine.params import ParamError, batch_key, resolve_generation
from engine.profiles import FastPath, ProfileError, load_profiles
from engine.prompt_encoding import encoded_length
from engine.styles import load_styles

STYLES = load_styles()
REQUEST = {"prompt": "a lighthouse on a cliff", "negative_prompt": "blurry", "seed": 11, "count": 2, "width": 64, "height": 64}
# Largest differences from the plain path, in 8-bit levels: float32 kernels that add in another order move a
# pixel by a level at most; bfloat16 keeps 8 bits of mantissa.
FLOAT32_TOLERANCE = {"max": 2, "mean": 0.05}
BFLOAT16_TOLERANCE = {"max": 24, "mean": 2.0}


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float32) for image in images])


def with_fast_path(profile, **switches):
    return replace(profile, fast_paths={"cpu": FastPath(**switches)})


def draw(profile, cache, **changes):
    params = resolve_generation(dict(REQUEST, **changes), profile, STYLES)
    return run_cascade(params, profile, cache, loras=lora_weights(params.loras, str))


def assert_close(images, reference, tolerance):
    difference = np.abs(pixels(images) - reference)
    assert difference.max() <= tolerance["max"] and difference.mean() <= tolerance["mean"], (difference.max(), difference.mean())


@pytest.fixture(scope="module")
def plain(tiny):
    """The plain path's pictures, and at 128 px (twice the tiny VAE's own size)."""
    cache = PipelineCache(Placement.choose("cpu"))
    return {64: pixels(draw(tiny, cache).images), 128: pixels(draw(tiny, cache, width=128, height=128, count=1).images)}


def first_conv(pipe) -> torch.nn.Conv2d:
    return pipe.unet.conv_in


CHECKS = {
    "dtype": ({"dtype": "bfloat16"}, BFLOAT16_TOLERANCE, lambda pipe: pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16),
    "attention": ({"attention": "classic"}, FLOAT32_TOLERANCE,
                  lambda pipe: all(isinstance(p, AttnProcessor) for p in pipe.unet.attn_processors.values())),
    "sdpa_backend": ({"sdpa_backend": "math"}, FLOAT32_TOLERANCE,
                     lambda pipe: all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())),
    "channels_last": ({"channels_last": True}, FLOAT32_TOLERANCE,
                      lambda pipe: first_conv(pipe).weight.is_contiguous(memory_format=torch.channels_last)
                      and pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)),
    "vae_slicing": ({"vae_slicing": True}, FLOAT32_TOLERANCE, lambda pipe: pipe.vae.use_slicing),
    "cpu_offload": ({"cpu_offload": True}, FLOAT32_TOLERANCE, lambda pipe: hasattr(pipe.unet, "_hf_hook")),
}


@pytest.mark.parametrize("switch", list(CHECKS))
def test_each_switch_keeps_the_picture_takes_effect_and_loads_once(tiny, plain, switch):
    switches, tolerance, took_effect = CHECKS[switch]
    profile, cache = with_fast_path(tiny, **switches), PipelineCache(Placement.choose("cpu"))
    first = draw(profile, cache)
    loads = cache.loads
    assert_close(first.images, plain[64], tolerance)
    assert took_effect(cache.pipeline(profile, "base"))
    again = draw(profile, cache)
    assert cache.loads == loads
    assert np.array_equal(pixels(again.images), pixels(first.images))


def test_vae_tiling_changes_nothing_at_the_vae_size_and_little_above_it(tiny, plain):
    profile, cache = with_fast_path(tiny, vae_tiling=True), PipelineCache(Placement.choose("cpu"))
    assert np.array_equal(pixels(draw(profile, cache).images), plain[64])
    tiled = pixels(draw(profile, cache, width=128, height=128, count=1).images)
    assert tiled.shape == plain[128].shape
    # Tiles are decoded apart and blended at their seams: close, not equal.
    assert np.abs(tiled - plain[128]).mean() < 8
    assert np.corrcoef(tiled.ravel(), plain[128].ravel())[0, 1] > 0.95
    assert cache.pipeline(profile, "base").vae.use_tiling


def test_fused_projections_run_only_for_plain_jobs_and_the_denoiser_is_plain_between_runs(tiny, plain):
    profile, cache = with_fast_path(tiny, fuse_qkv=True), PipelineCache(Placement.choose("cpu"))
    pipe = cache.pipeline(profile, "base")
    attention = pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1
    calls = []
    draw(profile, cache)  # makes the fused projections
    attention.to_qkv.register_forward_hook(lambda *_: calls.append("fused"))
    assert_close(draw(profile, cache).images, plain[64], FLOAT32_TOLERANCE)
    assert calls and all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    calls.clear()
    # A LoRA adapts to_q, to_k and to_v, which the fused projection would skip: that job runs unfused.
    with_lora = draw(profile, cache, fast=True, steps=4, guidance=5.0, sampler="euler")
    assert not calls
    plain_with_lora = draw(tiny, PipelineCache(Placement.choose("cpu")), fast=True, steps=4, guidance=5.0, sampler="euler")
    assert_close(with_lora.images, pixels(plain_with_lora.images), FLOAT32_TOLERANCE)


def test_compiled_denoiser_is_made_once_and_kept_across_jobs_with_and_without_adapters(tiny, plain):
    torch._dynamo.reset()
    counters.clear()
    profile = with_fast_path(tiny, compile=True, fuse_qkv=True, channels_last=True)
    cache = PipelineCache(Placement.choose("cpu"))
    assert_close(draw(profile, cache).images, plain[64], FLOAT32_TOLERANCE)
    graphs, loads = counters["stats"]["unique_graphs"], cache.loads
    assert graphs >= 1
    second = draw(profile, cache)
    # A LoRA job (here the distilled fast mode's) runs the same weights eagerly and leaves the graph valid.
    fast = draw(profile, cache, fast=True)
    third = draw(profile, cache)
    assert counters["stats"]["unique_graphs"] == graphs and cache.loads == loads
    assert np.array_equal(pixels(second.images), pixels(third.images))
    assert not np.allclose(pixels(fast.images), plain[64][:, :, :, :], atol=8)


def test_a_batch_gives_each_job_its_own_pictures_in_order(tiny):
    cache = PipelineCache(Placement.choose("cpu"))
    requests = [dict(REQUEST, prompt="a red fox", seed=1, count=1), dict(REQUEST, prompt="a blue whale", seed=500, count=2),
                dict(REQUEST, prompt="a green frog", negative_prompt="", seed=7, count=1, steps=4, guidance=5.0)]
    jobs = [resolve_generation(raw, tiny, STYLES) for raw in requests]
    alone = [pixels(run_cascade(job, tiny, cache).images) for job in jobs]
    together = run_cascade(jobs[0], tiny, cache, batch=jobs[1:])
    parts = together.split([job.count for job in jobs])
    assert [len(part.images) for part in parts] == [1, 2, 1]
    for part, own in zip(parts, alone):
        assert_close(part.images, own, FLOAT32_TOLERANCE)
    assert not np.allclose(alone[0], alone[1][:1], atol=8)
    # A prompt past one 75-token window pads the others in its batch, so it is not batched with them.
    pipe = cache.pipeline(tiny, "base")
    long = resolve_generation(dict(REQUEST, style="watercolor"), tiny, STYLES)
    assert encoded_length(pipe, long.full_prompt, long.full_negative_prompt) > encoded_length(pipe, jobs[0].full_prompt, "")


def test_only_jobs_with_the_same_batch_key_share_a_batch(tiny):
    base = resolve_generation(REQUEST, tiny, STYLES)
    assert batch_key(base) == batch_key(resolve_generation(dict(REQUEST, prompt="other", seed=3, count=1), tiny, STYLES))
    for change in ({"width": 128}, {"steps": 3}, {"guidance": 2.0}, {"sampler": "ddim"}, {"fast": True}, {"stages": ["base", "refiner"]}):
        assert batch_key(resolve_generation(dict(REQUEST, **change), tiny, STYLES)) != batch_key(base), change
    assert batch_key(resolve_generation(dict(REQUEST, tileable=True), tiny, STYLES)) is None
    with pytest.raises(ValueError, match="same batch_key"):
        run_cascade(base, tiny, PipelineCache(Placement.choose("cpu")), batch=[resolve_generation(dict(REQUEST, width=128), tiny, STYLES)])


def test_fast_mode_sets_the_distilled_sampler_steps_and_guidance_and_its_lora(tiny):
    params = resolve_generation(dict(REQUEST, fast=True), tiny, STYLES)
    mode = tiny.fast_mode
    assert (params.steps, params.guidance, params.sampler, params.fast) == (mode.steps, mode.guidance, "lcm", True)
    assert params.loras[-1] == {"name": f"Fast mode ({mode.label})", "model": mode.model, "weight_name": mode.weight_name, "weight": 1.0}
    # The user may still set the steps.
    assert resolve_generation(dict(REQUEST, fast=True, steps=3), tiny, STYLES).steps == 3
    with pytest.raises(ParamError, match="turn off the refiner"):
        resolve_generation(dict(REQUEST, fast=True, stages=["base", "refiner"]), tiny, STYLES)
    with pytest.raises(ParamError, match="hunyuan profile has no fast mode"):
        resolve_generation(dict(REQUEST, fast=True, width=1024, height=1024), load_profiles()["hunyuan"], STYLES)


def test_fast_mode_draws_with_its_lora_in_its_few_steps(tiny, plain):
    cache = PipelineCache(Placement.choose("cpu"))
    steps = []
    params = resolve_generation(dict(REQUEST, fast=True), tiny, STYLES)
    result = run_cascade(params, tiny, cache, progress=lambda p: steps.append(p.step), loras=lora_weights(params.loras, str))
    assert max(steps) == tiny.fast_mode.steps and len(result.images) == 2
    assert not np.allclose(pixels(result.images), plain[64], atol=8)
    # The LoRA is gone after the job.
    assert np.array_equal(pixels(draw(tiny, cache).images), plain[64])


def test_profiles_name_their_switches_per_device(tmp_path):
    profiles = load_profiles()
    sdxl = profiles["sdxl"].fast_path("cuda:0")
    assert sdxl.dtype == "bfloat16" and sdxl.compile and sdxl.fuse_qkv and sdxl.channels_last
    assert profiles["sdxl"].fast_path("cpu") == FastPath()
    bad = tmp_path / "profiles.json"
    bad.write_text('{"x": {"family": "sd", "roles": {"base": {"model": "m", "pipeline": "P"}}, "size": {"default": [64, 64], '
                   '"min": 32, "max": 64}, "steps": 2, "guidance": 1, "sampler": "euler", "fast_path": {"cuda": {"turbo": true}}}}')
    with pytest.raises(ProfileError, match="unknown fast_path switch turbo"):
        load_profiles(bad)

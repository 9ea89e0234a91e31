"""The cascade on the tiny profile, loaded back from disk through from_pretrained."""

import random

import numpy as np
import pytest

from engine.cascade import Cancelled, run_cascade
from engine.loader import ModelUnavailableError, PipelineCache, Placement
from engine.params import image_seed, resolve_generation
from engine.profiles import RoleSpec
from engine.styles import load_styles


def params_for(tiny, **raw):
    raw.setdefault("prompt", "a lighthouse at dusk")
    raw.setdefault("seed", 7)
    return resolve_generation(raw, tiny, load_styles(), random.Random(0))


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize(
    "stages, size",
    [([], (64, 64)), (["refiner"], (64, 64)), (["latent_x2"], (128, 128)), (["x4"], (256, 256)), (["refiner", "latent_x2"], (128, 128))],
)
def test_each_stage_gives_its_size(tiny, cache, stages, size):
    result = run_cascade(params_for(tiny, stages=stages, count=2, width=64, height=64), tiny, cache, keep_stage_images=True)
    assert [im.size for im in result.images] == [size, size]
    assert list(result.stage_images) == ["base", *stages]


def test_non_square_sizes(tiny, cache):
    result = run_cascade(params_for(tiny, width=128, height=64, stages=["latent_x2"]), tiny, cache)
    assert result.images[0].size == (256, 128)


def test_same_seed_same_image_and_each_batch_image_reproducible_alone(tiny, cache):
    batch = run_cascade(params_for(tiny, count=3, seed=100), tiny, cache).images
    again = run_cascade(params_for(tiny, count=3, seed=100), tiny, cache).images
    single = run_cascade(params_for(tiny, count=1, seed=image_seed(100, 2)), tiny, cache).images[0]
    other = run_cascade(params_for(tiny, count=1, seed=555), tiny, cache).images[0]
    assert all((pixels(a) == pixels(b)).all() for a, b in zip(batch, again))
    assert np.abs(pixels(batch[2]) - pixels(single)).max() <= 1
    assert np.abs(pixels(batch[0]) - pixels(other)).max() > 10


def test_progress_rises_through_every_stage_to_one(tiny, cache):
    seen = []
    run_cascade(params_for(tiny, steps=5, stages=["refiner", "latent_x2"]), tiny, cache, progress=seen.append)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [p.stage for p in seen if p.step == 0] == ["base", "refiner", "latent_x2"]


def test_cancel_stops_between_steps(tiny, cache):
    seen = []
    with pytest.raises(Cancelled, match="cancelled during base at step 2"):
        run_cascade(params_for(tiny, steps=50), tiny, cache, progress=seen.append,
                    should_cancel=lambda: len(seen) >= 3)
    assert seen[-1].step == 2 and len(seen) == 3


def test_second_job_loads_nothing_and_refiner_shares_base_components(tiny):
    cache = PipelineCache(Placement.choose("cpu"))
    run_cascade(params_for(tiny, stages=["refiner"]), tiny, cache)
    assert cache.loads == 2
    run_cascade(params_for(tiny, stages=["refiner"], seed=3), tiny, cache)
    assert cache.loads == 2
    assert cache.pipeline(tiny, "refiner").vae is cache.pipeline(tiny, "base").vae


def test_missing_model_fails_with_a_readable_reason(tiny, tmp_path):
    broken = type(tiny)(**{**tiny.__dict__, "roles": {"base": RoleSpec(str(tmp_path / "nowhere"), "StableDiffusionXLPipeline")}})
    with pytest.raises(ModelUnavailableError, match="Could not load the base model .*nowhere.* could not be downloaded"):
        PipelineCache(Placement.choose("cpu")).pipeline(broken, "base")
    hub = type(tiny)(**{**tiny.__dict__, "roles": {"base": RoleSpec("nobody/no-such-model", "StableDiffusionXLPipeline")}})
    with pytest.raises(ModelUnavailableError, match="nobody/no-such-model"):
        PipelineCache(Placement.choose("cpu")).pipeline(hub, "base")

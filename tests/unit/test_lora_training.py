"""Style-LoRA training on the tiny profile: the loss falls, the file loads and changes pictures, a cancelled
run resumes where it stopped, and check_lora tells a fitting file from one that does not fit.

The data set is five flat-colour pictures, which the tiny denoiser can fit in a hundred steps.
"""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from engine.cascade import Cancelled
from engine.loader import PipelineCache, Placement
from engine.lora import LoraMismatchError, LoraWeights, check_lora, loras_applied
from engine.lora_request import DEFAULT_RANK, DEFAULT_STEPS, resolve_training
from engine.lora_training import LoraTrainer, TrainingExample, prepare_image
from engine.params import ParamError
from storage.loras import safetensors_keys

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 200, 220)]
TRAIN_STEPS = 100



@pytest.fixture(scope="module")
def pipe(tiny, cache):
    return cache.pipeline(tiny, "base")


@pytest.fixture(scope="module")
def examples():
    return [TrainingExample(Image.new("RGB", (64, 64), colour), f"flat colour {i}") for i, colour in enumerate(COLOURS)]


def request_for(tiny, **raw):
    raw = {"lora_id": "lora-1", "trigger": "flatstyle", "rank": 8, "learning_rate": 5e-3, "batch_size": 4,
           "sample_every": 0, "seed": 1, **raw}
    return resolve_training(raw, tiny)


def generate(pipe) -> np.ndarray:
    with torch.no_grad():
        image = pipe("a red flower", num_inference_steps=4, width=64, height=64,
                     generator=torch.Generator().manual_seed(3)).images[0]
    return np.asarray(image, dtype=np.int16)


def lora_parameters(pipe) -> int:
    return sum(1 for module in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
               for name, _ in module.named_parameters() if "lora_" in name)


@pytest.fixture(scope="module")
def baseline(pipe):
    """The base pipeline's picture, taken before anything is trained."""
    return generate(pipe)


@pytest.fixture(scope="module")
def training(tiny, pipe, examples, baseline, tmp_path_factory):
    trainer = LoraTrainer(pipe, request_for(tiny, steps=TRAIN_STEPS))
    steps = []
    result = trainer.train(examples, tmp_path_factory.mktemp("checkpoints"), on_step=lambda state: steps.append(state.step))
    assert steps == list(range(1, TRAIN_STEPS + 1))
    return trainer, result


@pytest.fixture(scope="module")
def trained(training):
    return training[1]


@pytest.fixture(scope="module")
def lora_path(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    path.write_bytes(trained.weights)
    return path


# --- training -----------------------------------------------------------------------------------------


def test_the_loss_falls(trained):
    losses = trained.state.losses
    assert len(losses) == TRAIN_STEPS and trained.state.step == TRAIN_STEPS
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.95 * first, f"smoothed loss {first:.4f} -> {last:.4f}"


def test_training_leaves_the_base_pipeline_alone(pipe, trained, baseline):
    assert lora_parameters(pipe) == 0
    assert (generate(pipe) == baseline).all()


def test_the_file_is_peft_layout_for_the_denoiser_and_a_valid_safetensors(trained):
    tensors = load_safetensors(trained.weights)
    assert tensors and all(key.startswith("unet.") for key in tensors)
    assert any(".lora_A." in key for key in tensors) and any(".lora_B." in key for key in tensors)
    rank = {value.shape[0] for key, value in tensors.items() if key.endswith("lora_A.weight")}
    assert rank == {8}
    # lora_B starts at zero: trained weights are not.
    assert any(value.abs().max() > 0 for key, value in tensors.items() if key.endswith("lora_B.weight"))
    header = safetensors_keys(trained.weights)
    assert set(header) == set(tensors)


def test_the_lora_changes_the_picture_at_weight_one_not_at_zero_and_unloads(pipe, lora_path, baseline):
    assert (generate(pipe) == baseline).all()
    with loras_applied(pipe, [LoraWeights("style", str(lora_path), 1.0)]):
        assert lora_parameters(pipe) > 0
        full = generate(pipe)
    assert np.abs(full - baseline).max() > 0
    with loras_applied(pipe, [LoraWeights("style", str(lora_path), 0.0)]):
        off = generate(pipe)
    assert (off == baseline).all()
    assert lora_parameters(pipe) == 0 and pipe.get_list_adapters() == {}
    assert (generate(pipe) == baseline).all()


def test_the_loaded_file_draws_what_the_trainer_drew(pipe, training, lora_path):
    """The file keeps the LoRA's scale: at weight 1 the base pipeline with the file loaded is the trainer's
    own adapted pipeline."""
    trainer, _ = training
    for module in trainer.trained_modules.values():
        module.eval()
    own = generate(trainer.pipe)
    with loras_applied(pipe, [LoraWeights("style", str(lora_path), 1.0)]):
        loaded = generate(pipe)
    assert np.abs(own - loaded).max() <= 1


def test_training_the_text_encoders_too(tiny, pipe, examples, baseline, tmp_path):
    trainer = LoraTrainer(pipe, request_for(tiny, steps=10, train_text_encoder=True))
    assert set(trainer.trained_modules) == {"unet", "text_encoder", "text_encoder_2"}
    result = trainer.train(examples, tmp_path / "checkpoints")
    assert len(result.state.losses) == 10
    tensors = load_safetensors(result.weights)
    prefixes = {key.split(".")[0] for key in tensors}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    for prefix in ("text_encoder.", "text_encoder_2."):
        trained_b = [v for k, v in tensors.items() if k.startswith(prefix) and k.endswith("lora_B.weight")]
        assert trained_b and any(v.abs().max() > 0 for v in trained_b), f"{prefix} was not trained"
    path = tmp_path / "with-te.safetensors"
    path.write_bytes(result.weights)
    assert check_lora(pipe, str(path))["targets"] == ["text_encoder", "text_encoder_2", "unet"]
    with loras_applied(pipe, [LoraWeights("style", str(path), 1.0)]):
        assert sum(1 for n, _ in pipe.text_encoder.named_parameters() if "lora_" in n) > 0
        assert sum(1 for n, _ in pipe.text_encoder_2.named_parameters() if "lora_" in n) > 0
        changed = generate(pipe)
    assert np.abs(changed - baseline).max() > 0
    assert lora_parameters(pipe) == 0
    assert (generate(pipe) == baseline).all()


# --- checkpoints and resume ---------------------------------------------------------------------------


def test_a_cancelled_run_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_one(tiny, pipe, examples, tmp_path):
    request = request_for(tiny, steps=30, checkpoint_every=10, sample_every=10, seed=11)
    folder = tmp_path / "checkpoints"
    samples = []

    def on_sample(step, image):
        assert image.size == (64, 64)
        samples.append(step)

    # The LoRA's initial weights come from torch's global generator (see the report), so both runs start
    # from the same seed here.
    torch.manual_seed(0)
    done = []
    with pytest.raises(Cancelled, match="step 25"):
        LoraTrainer(pipe, request).train(examples, folder, on_step=lambda state: done.append(state.step),
                                         on_sample=on_sample, should_cancel=lambda: len(done) >= 25)
    assert done == list(range(1, 26)) and samples == [10, 20]
    assert (folder / "latest").read_text().strip() == "step-20"

    resumed = LoraTrainer(pipe, request).train(examples, folder, on_sample=on_sample)
    assert resumed.state.resumed_from == 20 and resumed.state.step == 30
    assert len(resumed.state.losses) == 30
    assert samples == [10, 20, 30] and resumed.state.sampled == [10, 20, 30]

    torch.manual_seed(0)
    whole = LoraTrainer(pipe, request_for(tiny, steps=30, checkpoint_every=10, seed=11)).train(examples, tmp_path / "other")
    assert whole.state.resumed_from is None
    np.testing.assert_allclose(resumed.state.losses, whole.state.losses, rtol=1e-4)
    resumed_weights, whole_weights = load_safetensors(resumed.weights), load_safetensors(whole.weights)
    assert set(resumed_weights) == set(whole_weights)
    for key in whole_weights:
        torch.testing.assert_close(resumed_weights[key], whole_weights[key], rtol=1e-4, atol=1e-6)


def test_the_same_seed_trains_the_same_lora(tiny, pipe, examples, tmp_path):
    request = request_for(tiny, steps=10, seed=4)
    torch.manual_seed(1)
    first = LoraTrainer(pipe, request).train(examples, tmp_path / "first")
    torch.manual_seed(2)  # whatever else used the global generator before this job
    second = LoraTrainer(pipe, request).train(examples, tmp_path / "second")
    assert first.state.losses == second.state.losses and first.weights == second.weights


def test_an_interrupted_run_without_a_checkpoint_starts_again(tiny, pipe, examples, tmp_path):
    request = request_for(tiny, steps=20, checkpoint_every=10)
    with pytest.raises(Cancelled):
        LoraTrainer(pipe, request).train(examples, tmp_path, should_cancel=lambda: True)
    result = LoraTrainer(pipe, request).train(examples, tmp_path)
    assert result.state.resumed_from is None and len(result.state.losses) == 20


# --- checking a LoRA file -----------------------------------------------------------------------------


def test_check_lora_accepts_the_trained_file(pipe, lora_path, baseline):
    summary = check_lora(pipe, str(lora_path), label="My style")
    tensors = load_safetensors(lora_path.read_bytes())
    assert summary == {"tensors": len(tensors), "matrices": len(tensors), "targets": ["unet"]}
    assert lora_parameters(pipe) == 0 and pipe.get_list_adapters() == {}
    assert (generate(pipe) == baseline).all()


def _write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def test_check_lora_refuses_files_that_do_not_fit(pipe, lora_path, baseline, tmp_path):
    tensors = load_safetensors(lora_path.read_bytes())

    renamed = {k.replace("unet.down_blocks.1.", "unet.down_blocks.7."): v for k, v in tensors.items()}
    assert sum("down_blocks.7" in k for k in renamed) > 0
    mismatch = r"Only \d+ of the file's \d+ LoRA matrices match layers .*different architecture"
    with pytest.raises(LoraMismatchError, match=mismatch):
        check_lora(pipe, _write(tmp_path / "renamed.safetensors", renamed))
    assert lora_parameters(pipe) == 0 and (generate(pipe) == baseline).all()

    everything_renamed = {k.replace("unet.", "unet.down_blocks.7.", 1): v for k, v in tensors.items()}
    with pytest.raises(LoraMismatchError, match="'Nowhere' does not fit this base model") as caught:
        check_lora(pipe, _write(tmp_path / "nowhere.safetensors", everything_renamed), label="Nowhere")
    assert "down_blocks.7" in str(caught.value)
    assert lora_parameters(pipe) == 0 and (generate(pipe) == baseline).all()

    reshaped = {k: torch.zeros(v.shape[0], v.shape[1] + 3) if k.endswith("lora_A.weight") else v
                for k, v in tensors.items()}
    wrong_shape = r"'Wide' does not fit this base model: the layer .*\.lora_A\.weight is \[8, 19\] in the file but needs \[8, 16\] \(and \d+ more layers\)"
    with pytest.raises(LoraMismatchError, match=wrong_shape) as caught:
        check_lora(pipe, _write(tmp_path / "wide.safetensors", reshaped), label="Wide")
    assert "size mismatch" not in str(caught.value)
    assert lora_parameters(pipe) == 0 and (generate(pipe) == baseline).all()

    with pytest.raises(LoraMismatchError, match="holds no LoRA weights"):
        check_lora(pipe, _write(tmp_path / "empty.safetensors", {"conv.weight": torch.zeros(4, 4)}))
    mixed = dict(tensors, **{"unet.conv_in.weight": torch.zeros(4, 4)})
    with pytest.raises(LoraMismatchError, match="not LoRA weights, e.g. unet.conv_in.weight"):
        check_lora(pipe, _write(tmp_path / "mixed.safetensors", mixed))
    assert pipe.get_list_adapters() == {} and (generate(pipe) == baseline).all()


# --- images and requests ------------------------------------------------------------------------------


def test_prepare_image_scales_the_short_side_and_crops_the_centre():
    image = Image.new("RGB", (200, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 50, 100))  # a red quarter on the left, cropped away
    cropped, original, (top, left) = prepare_image(image, 64)
    assert cropped.size == (64, 64) and cropped.mode == "RGB"
    assert original == (100, 200)
    assert (top, left) == (0, 32)  # scaled to 128×64, the centre 64 px start at x 32
    pixels = np.asarray(cropped)
    assert (pixels[:, :, 2] > 200).all() and (pixels[:, :, 0] < 50).all()

    tall, original, (top, left) = prepare_image(Image.new("L", (30, 90)), 64)
    assert tall.size == (64, 64) and tall.mode == "RGB" and original == (90, 30) and (top, left) == (64, 0)


def test_resolve_training_defaults(tiny):
    request = resolve_training({"lora_id": "abc", "trigger": "  inkwash "}, tiny, random.Random(0))
    assert (request.rank, request.steps) == (DEFAULT_RANK, DEFAULT_STEPS) == (16, 500)
    assert request.resolution == 64 and request.profile == "tiny" and request.trigger == "inkwash"
    assert request.sample_every == 100 and request.checkpoint_every == 50
    assert request.train_text_encoder is False and 0 <= request.seed < 2**32
    assert request.sample_prompt.startswith("inkwash, ")
    assert request.caption(" a red fox ") == "inkwash, a red fox" and request.caption("") == "inkwash"
    assert type(request).from_dict(request.to_dict()) == request


@pytest.mark.parametrize("field, value, message", [
    ("rank", 5, "Rank 5 is not offered: choose one of 4, 8, 16"),
    ("steps", 5, "Training steps 5 is out of range: choose 10 to 10000"),
    ("learning_rate", 1, "Learning rate 1.0 is out of range"),
    ("batch_size", 1.5, "Batch size must be a whole number"),
    ("trigger", "x" * 41, "trigger word has 41 characters"),
    ("lora_id", "", "Name the LoRA to train"),
])
def test_resolve_training_refuses_bad_settings(tiny, field, value, message):
    with pytest.raises(ParamError, match=message):
        resolve_training({"lora_id": "abc", field: value}, tiny)


def test_training_in_half_precision_leaves_the_cached_pipelines_as_they_were(tiny, examples, tmp_path):
    """The trainer and the derived pipelines (image-to-image, inpainting) share the base's modules: none of
    them may cast those to another dtype, or the next job on the worker fails with a dtype mismatch."""
    cache = PipelineCache(Placement(device="cpu", dtype=torch.bfloat16))
    base = cache.pipeline(tiny, "base")
    request = request_for(tiny, steps=10, sample_every=5)
    result = LoraTrainer(base, request).train(examples, tmp_path)
    assert np.isfinite(result.state.losses).all() and result.state.sampled == [5, 10]
    cache.image_to_image(tiny)
    cache.inpainting(tiny)
    assert {m.dtype for m in (base.unet, base.vae, base.text_encoder, base.text_encoder_2)} == {torch.bfloat16}
    with torch.no_grad():
        assert base("a red flower", num_inference_steps=2, width=64, height=64).images[0].size == (64, 64)

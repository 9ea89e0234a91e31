"""Identity-preserving generation on the tiny profile: its IP-Adapter FaceID checkpoint (engine/tiny_faces.py,
the published key layout with random weights), the identity embeddings the pipeline takes, and the
cascade with an identity: each person draws their own picture, reproducibly, beside a user's LoRA, and
the next plain job draws the plain picture again.

The identities are those of drawn photos (tests/support_faces.py) analysed by the tiny face pack.
"""

import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.cascade import run_cascade
from engine.identity import IdentityCondition, faceid_weight_file, identity_embeds, read_faceid_weights
from engine.lora import LoraWeights
from engine.params import resolve_generation
from engine.styles import load_styles
from tests.support_faces import PERSON_A, PERSON_B, face_photo

COUNT = 2


@pytest.fixture(scope="module")
def pipe(tiny, cache):
    return cache.pipeline(tiny, "base")


@pytest.fixture(scope="module")
def params(tiny):
    raw = {"prompt": "a portrait of a woman", "seed": 11, "width": 64, "height": 64, "steps": 3, "count": COUNT}
    generation = resolve_generation(raw, tiny, load_styles(), random.Random(0))
    assert generation.stages == ["base"] and generation.guidance > 1
    return generation


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in result.images])


@pytest.fixture(scope="module")
def plain(tiny, cache, params):
    """The job without an identity, drawn before any identity job has run."""
    return pixels(run_cascade(params, tiny, cache))


@pytest.fixture(scope="module")
def identities(tiny, cache):
    analyzer = cache.faces(tiny)
    return {name: analyzer.faces(face_photo([(140, 200, 200, colour)], seed=i))[0].embedding
            for i, (name, colour) in enumerate({"a": PERSON_A, "b": PERSON_B}.items())}


def faceid_state(pipe) -> dict:
    """What an identity job leaves in the pipeline: the projection, IP attention processors, LoRA adapters."""
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    return {"encoder_hid_proj": pipe.unet.encoder_hid_proj is not None, "processors": sorted(processors),
            "adapters": dict(pipe.get_list_adapters()) if getattr(pipe.unet, "peft_config", None) else {}}


@pytest.fixture(scope="module")
def user_lora(pipe, tmp_path_factory):
    """A rank-4 LoRA on every attention layer's query and value, in the peft layout the trainer writes."""
    generator = torch.Generator().manual_seed(5)
    tensors = {}
    for name, module in pipe.unet.named_modules():
        if name.endswith((".to_q", ".to_v")) and isinstance(module, torch.nn.Linear):
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    save_file(tensors, str(path))
    return LoraWeights("lora0", str(path), 1.0, label="style")


# --- the checkpoint and the embeddings ----------------------------------------------------------------


def test_the_tiny_checkpoint_has_the_faceid_layout(tiny, pipe):
    weights = read_faceid_weights(faceid_weight_file(tiny.roles["identity"]))
    assert set(weights) == {"image_proj", "ip_adapter"}
    assert set(weights["image_proj"]) == {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias",
                                          "norm.weight", "norm.bias"}
    assert weights["image_proj"]["proj.0.weight"].shape[1] == 512  # takes insightface's 512-d identity
    cross_attention = sum(1 for name in pipe.unet.attn_processors if name.endswith("attn2.processor"))
    keys = weights["ip_adapter"]
    assert sum(key.endswith("to_k_ip.weight") for key in keys) == cross_attention > 0
    assert sum(key.endswith("to_v_ip.weight") for key in keys) == cross_attention
    assert sum(key.endswith("to_q_lora.down.weight") for key in keys) == len(pipe.unet.attn_processors)


def test_a_file_without_adapter_weights_is_refused(tmp_path):
    path = tmp_path / "not-faceid.safetensors"
    save_file({"image_proj.proj.0.weight": torch.zeros(4, 512)}, str(path))
    with pytest.raises(ValueError, match="not an IP-Adapter checkpoint"):
        read_faceid_weights(path)


def test_identity_embeds_for_a_batch_with_and_without_guidance(identities):
    condition = IdentityCondition(identities["a"])
    guided = identity_embeds(condition, 3, 5.0, torch.float32, "cpu")
    assert len(guided) == 1 and guided[0].shape == (6, 1, 1, 512)
    # The unconditional half first, with no identity; then the person for every image.
    person = torch.from_numpy(identities["a"]).view(1, 1, 1, 512).expand(3, 1, 1, 512)
    assert guided[0][:3].abs().max() == 0
    assert torch.equal(guided[0][3:], person)
    # Without guidance there is no unconditional half: the person only, in the pipeline's dtype.
    unguided = identity_embeds(condition, 3, 1.0, torch.float16, "cpu")
    assert len(unguided) == 1 and unguided[0].shape == (3, 1, 1, 512) and unguided[0].dtype == torch.float16
    assert torch.allclose(unguided[0].float(), person, atol=1e-3)


# --- generation ---------------------------------------------------------------------------------------


def test_an_identity_draws_its_own_picture_and_leaves_the_pipeline_plain(tiny, cache, params, pipe, plain, identities):
    before = faceid_state(pipe)
    assert before == {"encoder_hid_proj": False, "processors": ["AttnProcessor2_0"], "adapters": {}}

    person_a = pixels(run_cascade(params, tiny, cache, identity=IdentityCondition(identities["a"])))
    loads = cache.loads
    again = pixels(run_cascade(params, tiny, cache, identity=IdentityCondition(identities["a"])))
    person_b = pixels(run_cascade(params, tiny, cache, identity=IdentityCondition(identities["b"])))
    assert cache.loads == loads  # the checkpoint is read once per worker

    assert person_a.shape == plain.shape == (COUNT, 64, 64, 3)
    for index in range(COUNT):  # every image of the batch, not only the first
        assert np.abs(person_a[index] - plain[index]).mean() > 0.5
        assert np.abs(person_a[index] - person_b[index]).mean() > 0.5
    assert (again == person_a).all()

    assert faceid_state(pipe) == before
    assert (pixels(run_cascade(params, tiny, cache)) == plain).all()


def test_the_adapter_scale_weighs_the_identity(tiny, cache, params, plain, identities):
    def drawn(scale):
        return pixels(run_cascade(params, tiny, cache, identity=IdentityCondition(identities["a"], scale=scale)))

    weak, strong = drawn(0.2), drawn(1.2)
    person_b_strong = pixels(run_cascade(params, tiny, cache, identity=IdentityCondition(identities["b"], scale=1.2)))
    # Two people drift further apart the more the identity counts.
    weak_b = pixels(run_cascade(params, tiny, cache, identity=IdentityCondition(identities["b"], scale=0.2)))
    assert np.abs(strong - person_b_strong).mean() > np.abs(weak - weak_b).mean()
    assert (pixels(run_cascade(params, tiny, cache)) == plain).all()


def test_a_user_lora_beside_the_identity(tiny, cache, params, pipe, plain, identities, user_lora):
    identity = IdentityCondition(identities["a"])
    alone = pixels(run_cascade(params, tiny, cache, identity=identity))
    lora_only = pixels(run_cascade(params, tiny, cache, loras=[user_lora]))
    active = []

    def progress(stage_progress):
        if stage_progress.step == 1:
            active.append(sorted(pipe.get_active_adapters()))

    both = pixels(run_cascade(params, tiny, cache, progress=progress, loras=[user_lora], identity=identity))
    # The identity adapter's own LoRA stays on beside the user's while the picture is drawn.
    assert len(active) == 1 and "lora0" in active[0] and any(name.startswith("faceid_") for name in active[0]), active
    assert np.abs(both - alone).mean() > 0.5
    assert np.abs(both - lora_only).mean() > 0.5

    assert faceid_state(pipe) == {"encoder_hid_proj": False, "processors": ["AttnProcessor2_0"], "adapters": {}}
    assert (pixels(run_cascade(params, tiny, cache)) == plain).all()
    # Nothing of the user's LoRA stayed behind either: the identity alone draws what it drew before.
    assert (pixels(run_cascade(params, tiny, cache, identity=identity)) == alone).all()

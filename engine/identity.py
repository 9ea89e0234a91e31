"""Identity-preserving generation through IP-Adapter FaceID: diffusers' ``load_ip_adapter`` with an
insightface identity embedding in place of a CLIP image embedding.

The adapter's weights are read once per worker (``read_faceid_weights``) and put into the cached base
pipeline only for the jobs that ask for a face (``identity_applied``), so the other jobs run the plain
model. A FaceID checkpoint carries LoRA weights for the attention layers too; diffusers loads them as the
adapters ``faceid_<i>``, and the block removes them with the rest.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
from safetensors.torch import load_file

from engine.profiles import RoleSpec

FACEID_PARTS = ("image_proj", "ip_adapter")


@dataclass(frozen=True)
class IdentityCondition:
    """Whose face a generation keeps, and how strongly (the adapter's scale, 0 to 1.5)."""

    embedding: np.ndarray  # 512-d, unit length: one person, several photos averaged, or a mix of two
    scale: float = 0.8


def faceid_weight_file(spec: RoleSpec) -> Path:
    """The checkpoint file named by the profile's ``identity`` role: ``model`` is a local folder or a hub
    repository, ``weight_name`` the file inside it (as in ``h94/IP-Adapter-FaceID``)."""
    if not spec.weight_name:
        raise ValueError(f"The identity role {spec.model!r} names no weight file (its 'weight_name').")
    folder = Path(spec.model)
    if folder.is_dir():
        return folder / spec.weight_name
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(spec.model, spec.weight_name))


def read_faceid_weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"image_proj": ..., "ip_adapter": ...}`` from a ``.bin`` (a nested dict, as published) or a
    ``.safetensors`` file (flat keys with those prefixes), the layout ``load_ip_adapter`` takes."""
    if path.suffix == ".safetensors":
        flat = load_file(str(path))
        nested = {part: {k.removeprefix(part + "."): v for k, v in flat.items() if k.startswith(part + ".")} for part in FACEID_PARTS}
    else:
        nested = torch.load(str(path), map_location="cpu", weights_only=True)
    if not all(nested.get(part) for part in FACEID_PARTS):
        raise ValueError(f"{path.name} is not an IP-Adapter checkpoint: it lacks image_proj or ip_adapter weights.")
    return nested


def identity_embeds(condition: IdentityCondition, count: int, guidance: float, dtype: torch.dtype, device) -> list[torch.Tensor]:
    """``ip_adapter_image_embeds`` for a batch of ``count`` prompts: (count, 1, 1, 512), with zeros (no
    identity) first for the unconditional half when classifier-free guidance is on."""
    embedding = torch.from_numpy(np.asarray(condition.embedding, dtype=np.float32)).view(1, 1, 1, -1).repeat(count, 1, 1, 1)
    if guidance > 1:
        embedding = torch.cat([torch.zeros_like(embedding), embedding])
    return [embedding.to(device=device, dtype=dtype)]


def _faceid_adapters(pipe: diffusers.DiffusionPipeline) -> list[str]:
    config = getattr(pipe.unet, "peft_config", None) or {}
    return [name for name in config if name.startswith("faceid_")]


@contextmanager
def identity_applied(pipe: diffusers.DiffusionPipeline, weights: dict, condition: IdentityCondition | None):
    """Put the FaceID adapter into ``pipe`` at the condition's scale for the block; no-op without one."""
    if condition is None:
        yield pipe
        return
    try:
        pipe.load_ip_adapter([{part: dict(weights[part]) for part in FACEID_PARTS}], subfolder=[""], weight_name=[""],
                             image_encoder_folder=None)
        pipe.set_ip_adapter_scale(condition.scale)
        yield pipe
    finally:
        if _faceid_adapters(pipe):
            pipe.unload_lora_weights()
        pipe.unload_ip_adapter()

"""Applying LoRAs to a loaded pipeline for one job, and checking a LoRA file against the base model.

Files from users are read with safetensors only (never pickle). A LoRA is loaded into the cached pipeline
for the job that asks for it and unloaded afterwards, so the next job sees the base model unchanged.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import diffusers
import torch
from safetensors.torch import load_file

from engine.loader import ModelUnavailableError

# Suffixes of the tensors a LoRA holds per adapted layer, in the layouts diffusers converts from
# (peft/diffusers, the older diffusers "lora.down", kohya/A1111 "lora_down", and their alphas).
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora.down.weight", ".lora.up.weight",
                 ".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.bias", ".lora_B.bias")


class LoraMismatchError(ValueError):
    """A LoRA file that does not fit the base model; the message says what does not match."""


@dataclass(frozen=True)
class LoraWeights:
    """A LoRA to apply: a local safetensors file, or a hub repository and its weight file, at a weight."""

    name: str  # the adapter's name while it is loaded; unique within a job
    source: str
    weight: float
    weight_name: str | None = None  # the file inside a hub repository; None for a local file
    label: str = ""  # how messages name it: the LoRA's name in the studio, or its hub id

    @property
    def title(self) -> str:
        return self.label or self.source

    def state_dict(self) -> dict[str, torch.Tensor] | str:
        return load_file(self.source) if self.weight_name is None else self.source


def lora_weights(loras: list[dict], file_path: Callable[[str], str]) -> list[LoraWeights]:
    """The LoRAs of a request's ``loras`` list: files stored here (by hash, found with ``file_path``) and
    published ones (a hub repository and weight file)."""
    weights = []
    for index, lora in enumerate(loras):
        label = lora.get("name", "")
        if lora.get("file_hash"):
            weights.append(LoraWeights(f"lora{index}", file_path(lora["file_hash"]), lora["weight"], label=label))
        else:
            weights.append(LoraWeights(f"lora{index}", lora["model"], lora["weight"], lora["weight_name"], label=label))
    return weights


def _load(pipe: diffusers.DiffusionPipeline, lora: LoraWeights) -> None:
    kwargs = {} if lora.weight_name is None else {"weight_name": lora.weight_name, "use_safetensors": True}
    try:
        pipe.load_lora_weights(lora.state_dict(), adapter_name=lora.name, **kwargs)
    except OSError as exc:
        raise ModelUnavailableError(
            f"Could not load the LoRA {lora.title!r}: it is not a local file, not in the Hugging Face cache, "
            f"and could not be downloaded ({type(exc).__name__}: {exc})") from exc
    except (ValueError, RuntimeError, KeyError) as exc:
        raise LoraMismatchError(f"The LoRA {lora.title!r} does not fit this base model: {_first_problem(exc, lora.name)}") from exc


SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) from "
                           r"checkpoint, the shape in current model is (torch\.Size\(\[[^\]]*\]\))")
MAX_MESSAGE_CHARS = 300


def _first_problem(exc: Exception, adapter: str) -> str:
    """The first layer whose shape differs and how many more do, instead of torch's whole list; other
    errors cut to a readable length."""
    mismatches = SIZE_MISMATCH.findall(str(exc))
    if not mismatches:
        text = str(exc)
        return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " …"
    layer, in_file, in_model = mismatches[0]
    layer = layer.replace(f".{adapter}.", ".")
    shape = lambda size: size.removeprefix("torch.Size(").removesuffix(")")  # noqa: E731
    more = f" (and {len(mismatches) - 1} more layers)" if len(mismatches) > 1 else ""
    return f"the layer {layer} is {shape(in_file)} in the file but needs {shape(in_model)}{more}"


def _active_adapters(pipe: diffusers.DiffusionPipeline) -> list[str]:
    return list(pipe.get_active_adapters()) if getattr(pipe.unet, "peft_config", None) else []


@contextmanager
def loras_applied(pipe: diffusers.DiffusionPipeline, loras: list[LoraWeights]):
    """Load ``loras`` into ``pipe`` with their weights for the duration of the block, then unload them.
    Adapters already active (an identity adapter's LoRA) stay active, at full weight, beside them."""
    if not loras:
        yield pipe
        return
    others = _active_adapters(pipe)
    names = [lora.name for lora in loras]
    try:
        for lora in loras:
            _load(pipe, lora)
        pipe.set_adapters(others + names, adapter_weights=[1.0] * len(others) + [lora.weight for lora in loras])
        yield pipe
    finally:
        if others:
            present = {name for adapters in pipe.get_list_adapters().values() for name in adapters}
            pipe.delete_adapters([name for name in names if name in present])
            pipe.set_adapters(others)
        else:
            pipe.unload_lora_weights()


MATRIX_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora.down.weight", ".lora.up.weight")
ADAPTED_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")


def _adapted_matrices(pipe: diffusers.DiffusionPipeline, adapter: str) -> set[str]:
    """``component.layer.lora_A``-style names of the LoRA matrices ``adapter`` put into the pipeline."""
    found = set()
    for component in ADAPTED_COMPONENTS:
        module = getattr(pipe, component, None)
        for name, _ in module.named_parameters() if module is not None else ():
            if f".{adapter}." in name and ".lora_" in name:
                found.add(f"{component}.{name.replace(f'.{adapter}', '').removesuffix('.weight')}")
    return found


def check_lora(pipe: diffusers.DiffusionPipeline, path: str, label: str = "") -> dict:
    """Load a LoRA file into ``pipe`` as a trial and check that every layer it adapts exists in the base
    model with the same shape; return a summary, or raise LoraMismatchError saying what does not fit."""
    state = load_file(path)
    lora_keys = [k for k in state if k.endswith(LORA_SUFFIXES)]
    if not lora_keys:
        raise LoraMismatchError("The file holds no LoRA weights (no lora_A/lora_B, lora.down/lora.up or lora_down/lora_up tensors).")
    if len(lora_keys) < len(state):
        strays = sorted(set(state) - set(lora_keys))[:3]
        raise LoraMismatchError(f"The file holds tensors that are not LoRA weights, e.g. {', '.join(strays)}.")
    converted, _ = type(pipe).lora_state_dict(dict(state))
    # In peft's naming (lora.down/up are lora_A/B), as the loaded parameters are named.
    expected = {k.removesuffix(".weight").replace(".lora.down", ".lora_A").replace(".lora.up", ".lora_B")
                for k in converted if k.endswith(MATRIX_SUFFIXES)}
    adapter = "studio_lora_check"
    try:
        _load(pipe, LoraWeights(adapter, path, 1.0, label=label))
        loaded = _adapted_matrices(pipe, adapter)
    finally:
        pipe.unload_lora_weights()
    unmatched = sorted(expected - loaded)
    if unmatched:
        layer = unmatched[0].rsplit(".lora_", 1)[0]
        raise LoraMismatchError(
            f"Only {len(expected) - len(unmatched)} of the file's {len(expected)} LoRA matrices match layers of this "
            f"base model (it has no layer {layer}, for one): it was trained for a different architecture.")
    targets = sorted({k.split(".")[0] for k in converted})
    return {"tensors": len(state), "matrices": len(expected), "targets": targets}

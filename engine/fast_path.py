"""The engine's fast path: a profile's switches (``FastPath``) applied to the pipelines it loads.

Switches that keep the model's structure (precision, attention kernel, channels-last layout, VAE tiling and
slicing, CPU offload) are set once when a pipeline is loaded. Fused QKV projections and ``torch.compile``
change how the denoiser runs, so ``FastDenoiser`` puts them on only for the runs that leave the denoiser as
loaded: a LoRA, an identity adapter or seamless padding wraps layers that the fused projections would
bypass, and would make the compiled graph be traced again for every adapter and weight. Those runs use the
same weights eagerly. The compiled denoiser is built once per worker and kept with the pipeline cache.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import diffusers
import torch
from diffusers.models.attention_processor import AttnProcessor
from torch.nn.attention import SDPBackend, sdpa_kernel

from engine.profiles import FastPath

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SDPA_KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
# The networks a pipeline denoises with, by the attribute diffusers gives them.
DENOISER_NAMES = ("unet", "transformer")


def denoiser_name(pipe: diffusers.DiffusionPipeline) -> str | None:
    return next((name for name in DENOISER_NAMES if getattr(pipe, name, None) is not None), None)


def prepare_model(model: torch.nn.Module, fast: FastPath) -> None:
    """The switches that keep a network's structure: the attention kernel and the memory layout. The weights
    are frozen too: loading a LoRA freezes them anyway, and a compiled graph's guards would fail on the change."""
    model.requires_grad_(False)
    if fast.attention == "classic" and hasattr(model, "set_attn_processor"):
        model.set_attn_processor(AttnProcessor())
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)


def prepare_pipeline(pipe: diffusers.DiffusionPipeline, fast: FastPath, device: str, cpu_offload: bool) -> None:
    """Apply ``fast``'s load-time switches to a freshly loaded pipeline and place it on ``device``. Modules it
    shares with an already prepared pipeline (the refiner's VAE) are prepared again, which changes nothing."""
    for name in (*DENOISER_NAMES, "controlnet"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            prepare_model(module, fast)
    for name in ("text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        prepare_model(vae, fast)
        # The VAE is never adapted, so its attention can stay fused.
        if fast.fuse_qkv and hasattr(vae, "fuse_qkv_projections") and not _fused(vae):
            vae.fuse_qkv_projections()
        if fast.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()  # acts only on pictures larger than the VAE's own sample size
        if fast.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
    if cpu_offload or fast.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


def _fused(model: torch.nn.Module) -> bool:
    return any(getattr(module, "fused_projections", False) for module in model.modules())


def attention_kernel(fast: FastPath):
    """A context in which SDPA uses only the kernel ``fast`` insists on (none: PyTorch chooses)."""
    return nullcontext() if fast.sdpa_backend == "auto" else sdpa_kernel(SDPA_KERNELS[fast.sdpa_backend])


class FastDenoiser:
    """One denoiser's fast form: its attention projections fused and the module compiled, both made once."""

    def __init__(self, module: torch.nn.Module, fast: FastPath):
        self.module = module
        self.fused_processors = None
        if fast.fuse_qkv and hasattr(module, "fuse_qkv_projections"):
            plain = module.attn_processors
            try:
                module.fuse_qkv_projections()
            except ValueError as exc:  # e.g. added KV projections, which diffusers cannot fuse
                log.info("not fusing the QKV projections of %s: %s", type(module).__name__, exc)
            else:
                self.fused_processors = module.attn_processors
                module.set_attn_processor(dict(plain))
                module.requires_grad_(False)  # the new fused projections too (see prepare_model)
        self.compiled = torch.compile(module, mode=fast.compile_mode) if fast.compile else None

    @property
    def active(self) -> bool:
        return self.fused_processors is not None or self.compiled is not None

    @contextmanager
    def applied(self, pipe: diffusers.DiffusionPipeline):
        """``pipe`` runs the fused, compiled denoiser for the block, then its plain one again."""
        name = denoiser_name(pipe)
        plain = self.module.attn_processors if self.fused_processors is not None else None
        if self.fused_processors is not None:
            # set_attn_processor consumes the dict it is given; the same processor objects go back each time,
            # so the compiled graph's guards still hold on the next run.
            self.module.set_attn_processor(dict(self.fused_processors))
        if self.compiled is not None:
            setattr(pipe, name, self.compiled)
        try:
            yield pipe
        finally:
            setattr(pipe, name, self.module)
            if plain is not None:
                self.module.set_attn_processor(plain)

"""Pipelines with the real SD 1.5 and SDXL architectures and random weights, and the tiny profile's models folder.

``build_real`` builds the published denoiser and VAE (bench/configs/*_unet.json and *_vae.json are the
config.json files of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0) and text encoders of the
published widths (SD 1.5: CLIP-L 768; SDXL: CLIP-L 768 and OpenCLIP-bigG 1280 with its 1280-wide projection)
at the published depth or fewer layers, with random weights, which time like the real ones: no download.
The tokenizer is the tiny profile's (one token per character), so prompts must stay under 76 characters to
be one 77-token window, as a real prompt of a few words is for the real tokenizer.

bench/train.py (LoRA training) and bench/gpu.py (generation speed) build their pipelines here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from engine.tiny import build_tiny_profile, tiny_profile_present

CONFIGS = Path(__file__).resolve().parent / "configs"
REAL_ARCHS = ("sd15", "sdxl")
# The pipeline class of each architecture (what its profile's base role names).
PIPELINES = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}
# The tiny denoiser's steps take milliseconds: a second thread gains little and, whenever another process
# keeps a core busy, stalls steps for seconds (as tests/unit/test_lora_training.py notes).
TINY_CPU_THREADS = 1
# The published text encoders' sizes (CLIP ViT-L/14's, and OpenCLIP ViT-bigG/14's for SDXL's second).
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "hidden_act": "quick_gelu", "projection_dim": 768}
OPENCLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
                 "hidden_act": "gelu", "projection_dim": 1280}
# The published schedulers' configs (scheduler/scheduler_config.json; from_config keeps the keys a class does not
# take, as loading them does); the trainer makes a DDPMScheduler of them, generation the profile's sampler.
SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SD15_SCHEDULER = {**SD_BETAS, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}
SDXL_SCHEDULER = {**SD_BETAS, "clip_sample": False, "interpolation_type": "linear", "prediction_type": "epsilon",
                  "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                  "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}


def tiny_models_dir(models_dir: Path, tmp: str, tokenizer_only: bool) -> Path:
    """A models folder holding the whole tiny profile (or, with ``tokenizer_only``, its tokenizer):
    ``models_dir`` if it does, else one built in ``tmp``."""
    if tiny_profile_present(models_dir / "tiny") or (
            tokenizer_only and (models_dir / "tiny" / "base" / "tokenizer" / "tokenizer_config.json").is_file()):
        return models_dir
    built = Path(tmp) / "models"
    print("building the tiny profile (not timed) ...", flush=True)
    build_tiny_profile(built / "tiny")
    return built


def tiny_tokenizer(models_dir: Path) -> CLIPTokenizer:
    """The tiny profile's CLIP tokenizer, from a models folder ``tiny_models_dir`` gave."""
    return CLIPTokenizer.from_pretrained(str(models_dir / "tiny" / "base"), subfolder="tokenizer")


def text_encoder(cls, dims: dict, layers: int, tokenizer: CLIPTokenizer):
    config = CLIPTextConfig(**dict(dims, num_hidden_layers=layers or dims["num_hidden_layers"]),
                            vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return cls(config)


@contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build_real(arch: str, tokenizer: CLIPTokenizer, device: str, dtype: torch.dtype, te_layers: int = 0):
    """The SD 1.5 or SDXL pipeline with the published denoiser and VAE configs and random weights, built
    straight on ``device`` in ``dtype`` (the modules' default initialisation); text encoders of ``te_layers``
    layers (0: the published 12, and 32 for SDXL's second)."""
    unet_config = json.loads((CONFIGS / f"{arch}_unet.json").read_text())
    vae_config = json.loads((CONFIGS / f"{arch}_vae.json").read_text())
    torch.manual_seed(0)
    # Initialised where and as they will run: no float32 copy first (SDXL's alone is 10.3 GB).
    with torch.device(device), default_dtype(dtype):
        unet = UNet2DConditionModel.from_config(unet_config).to(dtype)
        vae = AutoencoderKL.from_config(vae_config).to(dtype)
        text_encoder_1 = text_encoder(CLIPTextModel, CLIP_L, te_layers, tokenizer).to(dtype)
        text_encoder_2 = None
        if arch == "sdxl":
            text_encoder_2 = text_encoder(CLIPTextModelWithProjection, OPENCLIP_BIGG, te_layers, tokenizer).to(dtype)
    if arch == "sd15":
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder_1, tokenizer=tokenizer, unet=unet,
            scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder_1, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_encoder_depth(arch: str, layers: int) -> str:
    published = (CLIP_L["num_hidden_layers"],) + ((OPENCLIP_BIGG["num_hidden_layers"],) if arch == "sdxl" else ())
    if not layers:
        return f"the published {' and '.join(map(str, published))} layers"
    return f"{layers} layers{' each' if arch == 'sdxl' else ''}, not {' and '.join(map(str, published))}"


def parameters(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())

"""Style-LoRA training: a peft LoRA on the denoiser (and optionally the text encoders) of a loaded pipeline.

The loop is the one of diffusers' ``train_text_to_image_lora`` examples: images cropped to the training
resolution and encoded once by the VAE, captions encoded by the pipeline's own ``encode_prompt``, noise
added at a random timestep, and the usual noise-prediction (or v-prediction) loss. The base pipeline is
not changed: the trainer adapts copies of the modules it trains.

It checkpoints every few steps into a folder; called again with the same folder it resumes from the last
checkpoint (the caller removes the folder once it has stored the weights), and the batches, noise and timesteps of every step depend only on the seed and the step, so a
resumed run is the run that was interrupted. The result is a safetensors file in the layout
``load_lora_weights`` reads.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import cast_training_params
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.cascade import Cancelled
from engine.lora_request import TrainingRequest

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LORA_FILE = "pytorch_lora_weights.safetensors"
LATEST = "latest"
SAMPLE_STEPS = 20
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainingExample:
    image: Image.Image
    caption: str


@dataclass
class TrainingState:
    """What a checkpoint records besides the weights: steps done, the loss curve, the sampled steps."""

    step: int = 0  # steps done
    total: int = 0
    losses: list[float] = field(default_factory=list)  # one per step done
    sampled: list[int] = field(default_factory=list)
    resumed_from: int | None = None


@dataclass(frozen=True)
class TrainedLora:
    weights: bytes  # a safetensors file for load_lora_weights
    state: TrainingState


def prepare_image(image: Image.Image, resolution: int) -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
    """Scale the short side to ``resolution`` and crop the centre; also the original size (h, w) and the
    crop's top-left corner, which SDXL takes as conditioning."""
    image = image.convert("RGB")
    original = (image.height, image.width)
    scale = resolution / min(image.size)
    width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    left, top = (width - resolution) // 2, (height - resolution) // 2
    cropped = image.resize((width, height), Image.BICUBIC).crop((left, top, left + resolution, top + resolution))
    return cropped, original, (top, left)


def _is_sdxl(pipe: diffusers.DiffusionPipeline) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


@contextmanager
def _vae_in_float32(vae):
    # SDXL's VAE overflows in fp16 (force_upcast in its config); encode in fp32 as the pipelines do.
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(torch.float16)


class _Checkpoints:
    """Checkpoint folders ``step-N`` under a root, and a ``latest`` file naming the newest complete one."""

    def __init__(self, root: Path):
        self.root = root

    def latest(self) -> Path | None:
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text().strip()
        return folder if folder.is_dir() else None

    def save(self, step: int, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f"step-{step}"
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        save_file({k: v.detach().float().cpu().contiguous() for k, v in weights.items()}, staging / "adapter.safetensors")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "state.json").write_text(json.dumps({"step": state.step, "losses": state.losses, "sampled": state.sampled}))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        # The pointer moves only once the folder is complete, so a crash mid-save keeps the previous one.
        tmp = self.root / f".{LATEST}.tmp"
        tmp.write_text(folder.name)
        os.replace(tmp, self.root / LATEST)
        for old in self.root.glob("step-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, folder: Path) -> tuple[dict[str, torch.Tensor], dict, TrainingState]:
        state = json.loads((folder / "state.json").read_text())
        # Written by this trainer, never uploaded by a user; weights_only still refuses arbitrary objects.
        optimizer_state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        return load_file(folder / "adapter.safetensors"), optimizer_state, TrainingState(
            step=state["step"], losses=state["losses"], sampled=state["sampled"], resumed_from=state["step"])


class LoraTrainer:
    """Trains one LoRA for ``request`` on copies of ``base``'s denoiser and text encoders."""

    def __init__(self, base: diffusers.DiffusionPipeline, request: TrainingRequest):
        self.base, self.request = base, request
        self.device = base.unet.device
        self.dtype = base.unet.dtype
        self.sdxl = _is_sdxl(base)
        config = LoraConfig(r=request.rank, lora_alpha=request.rank, init_lora_weights="gaussian", target_modules=UNET_TARGETS)
        te_config = LoraConfig(r=request.rank, lora_alpha=request.rank, init_lora_weights="gaussian", target_modules=TEXT_ENCODER_TARGETS)
        self.text_encoders: dict[str, torch.nn.Module] = {}
        # The LoRA's starting weights come from the request's seed, not from whatever ran before in this process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(request.seed)
            self.unet = self._adapted(base.unet, config)
            if request.train_text_encoder:
                for name in ("text_encoder", "text_encoder_2"):
                    if getattr(base, name, None) is not None:
                        self.text_encoders[name] = self._adapted(getattr(base, name), te_config)
        # The constructor, not from_pipe: from_pipe casts every shared module (the base's VAE and text
        # encoders too) to the dtype it is given, and the trained copies hold float32 LoRA weights.
        self.pipe = type(base)(**{**base.components, "unet": self.unet, **self.text_encoders})
        self.pipe.set_progress_bar_config(disable=True)
        self.noise_scheduler = diffusers.DDPMScheduler.from_config(base.scheduler.config)
        self.parameters = [p for m in self.trained_modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=request.learning_rate, weight_decay=1e-2)

    @staticmethod
    def _adapted(module: torch.nn.Module, config: LoraConfig) -> torch.nn.Module:
        trained = copy.deepcopy(module)
        trained.requires_grad_(False)
        trained.add_adapter(config)
        # LoRA weights train in float32 even when the frozen model is half precision.
        cast_training_params(trained, dtype=torch.float32)
        return trained

    @property
    def trained_modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, **self.text_encoders}

    def _peft_weights(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value for name, module in self.trained_modules.items()
                for key, value in get_peft_model_state_dict(module).items()}

    def _restore(self, weights: dict[str, torch.Tensor]) -> None:
        for name, module in self.trained_modules.items():
            prefix = f"{name}."
            set_peft_model_state_dict(module, {k[len(prefix):]: v.to(self.device) for k, v in weights.items() if k.startswith(prefix)})

    def _encode_images(self, examples: list[TrainingExample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent means and standard deviations (sampled afresh each step), and SDXL's size conditioning."""
        vae = self.base.vae
        means, stds, time_ids = [], [], []
        res = self.request.resolution
        with torch.no_grad(), _vae_in_float32(vae):
            for example in examples:
                image, original, crop = prepare_image(example.image, res)
                pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
                dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
                time_ids.append(torch.tensor([*original, *crop, res, res], dtype=torch.float32))
        return torch.cat(means), torch.cat(stds), torch.stack(time_ids).to(self.device)

    def _encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.sdxl:
            embeds, _, pooled, _ = self.pipe.encode_prompt(captions, device=self.device, do_classifier_free_guidance=False)
            return embeds, pooled
        embeds, _ = self.pipe.encode_prompt(captions, self.device, 1, False)
        return embeds, None

    def _loss(self, latents: torch.Tensor, time_ids: torch.Tensor, captions: list[str], cached, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if cached is not None:
            embeds, pooled = cached
        else:
            embeds, pooled = self._encode_captions(captions)
        extra = {}
        if self.sdxl:
            extra["added_cond_kwargs"] = {"text_embeds": pooled.to(self.dtype), "time_ids": time_ids.to(self.dtype)}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            prediction = self.unet(noisy.to(self.dtype), timesteps, embeds.to(self.dtype), return_dict=False, **extra)[0]
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return F.mse_loss(prediction.float(), target.float())

    def sample(self) -> Image.Image:
        """One picture from the sample prompt with the LoRA as trained so far (the same seed every time)."""
        for module in self.trained_modules.values():
            module.eval()
        try:
            with torch.no_grad():
                return self.pipe(self.request.sample_prompt, num_inference_steps=SAMPLE_STEPS, width=self.request.resolution,
                                 height=self.request.resolution, generator=torch.Generator("cpu").manual_seed(self.request.seed)).images[0]
        finally:
            for module in self.trained_modules.values():
                module.train()

    def lora_file(self) -> bytes:
        """The trained weights as a safetensors file in the layout ``load_lora_weights`` reads."""
        # peft's own key layout (lora_A/lora_B), which diffusers loads as it is for every adapted layer type.
        layers = {f"{name}_lora_layers": get_peft_model_state_dict(module) for name, module in self.trained_modules.items()}
        with tempfile.TemporaryDirectory() as tmp:
            type(self.base).save_lora_weights(tmp, safe_serialization=True, weight_name=LORA_FILE, **layers)
            return (Path(tmp) / LORA_FILE).read_bytes()

    def train(
        self,
        examples: list[TrainingExample],
        checkpoint_dir: str | os.PathLike,
        on_step: Callable[[TrainingState], None] = lambda state: None,
        on_sample: Callable[[int, Image.Image], None] = lambda step, image: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> TrainedLora:
        request = self.request
        checkpoints = _Checkpoints(Path(checkpoint_dir))
        state = TrainingState()
        folder = checkpoints.latest()
        if folder is not None:
            weights, optimizer_state, state = checkpoints.load(folder)
            self._restore(weights)
            self.optimizer.load_state_dict(optimizer_state)
        state.total = request.steps
        means, stds, time_ids = self._encode_images(examples)
        captions = [request.caption(e.caption) for e in examples]
        cached = None
        if not self.text_encoders:
            with torch.no_grad():
                embeds, pooled = self._encode_captions(captions)
            cached = (embeds, pooled)
        scaling = self.base.vae.config.scaling_factor
        for module in self.trained_modules.values():
            module.train()

        for step in range(state.step, request.steps):
            if should_cancel():
                raise Cancelled(f"training cancelled at step {step}")
            # Everything random in a step comes from (seed, step): a resumed run repeats the interrupted one.
            generator = torch.Generator("cpu").manual_seed(request.seed + step)
            index = torch.randint(0, len(examples), (request.batch_size,), generator=generator)
            eps = torch.randn(means[index].shape, generator=generator).to(self.device)
            latents = (means[index] + stds[index] * eps) * scaling
            batch_cache = None if cached is None else (cached[0][index.to(self.device)],
                                                       None if cached[1] is None else cached[1][index.to(self.device)])
            loss = self._loss(latents, time_ids[index.to(self.device)], [captions[i] for i in index.tolist()], batch_cache, generator)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRAD_NORM)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the loss became {value} at step {step + 1}: lower the learning rate")
            state.step = step + 1
            state.losses.append(value)
            on_step(state)
            if request.sample_every and state.step % request.sample_every == 0 and state.step not in state.sampled:
                on_sample(state.step, self.sample())
                state.sampled.append(state.step)
            if state.step % request.checkpoint_every == 0 and state.step < request.steps:
                checkpoints.save(state.step, self._peft_weights(), self.optimizer, state)
        return TrainedLora(self.lora_file(), state)

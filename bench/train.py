"""Style-LoRA training speed: steps per second of ``LoraTrainer``, with and without text-encoder training.

The trainer is the worker's (engine/lora_training.py), driven as tasks/train.py drives it: a request from
``resolve_training`` for the profile, ``LoraTrainer(base, request).train(examples, folder, on_step, ...)``.
The data set is five synthetic pictures (seeded two-colour gradients, a little taller than square so
the trainer's crop runs), captioned "benchstyle, gradient N"; rank, batch size and resolution are the
request's (resolution: the profile's native size unless --resolution).

  --arch tiny   the tiny profile, loaded through ``PipelineCache`` as the worker loads it (built into a
                temporary folder unless --models-dir already holds it). Runs on the CPU in seconds.
  --arch sd15   a pipeline built in memory (bench/architectures.py) with the real denoiser and VAE of
  --arch sdxl   stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 (bench/configs/*_unet.json and
                *_vae.json are their published config.json files) and random weights, which time like the
                real ones. The text encoders have the real widths (SD 1.5: CLIP-L 768; SDXL: CLIP-L 768
                and OpenCLIP-bigG 1280 with its 1280-wide projection) but --text-encoder-layers layers
                (default 2; 0 = the real 12 and 32):
                with the text encoders frozen the trainer encodes the captions once, so their depth only
                shows in "encode s" and in the text-encoder rows. The tokenizer is the tiny profile's (one
                token per character). Meant for a GPU; on the CPU they run only with --allow-cpu, as a
                check that the configs build and train, in bfloat16 by default (the trainer copies the
                denoiser: SDXL's in float32 twice would take 20.5 GB).

Per configuration (the text encoders frozen, then trained, with --compare-text-encoder, on by default for
tiny), measured in one run with the same request otherwise:

  setup s     ``LoraTrainer(...)``: copying the denoiser (and text encoders), adding the LoRA, the optimizer.
              The first row's also holds one-time costs (memory touched for the first time), as a
              worker's first training job does.
  encode s    from calling ``train`` to the first step starting: the VAE encodes the data set (the first
              call, so one-time kernel selection is in it) and, with the text encoders frozen, the captions.
  steps/s     --steps timed steps after --warmup steps: timed steps / (end of the last step - start of
              the first timed step), each instant taken in the ``should_cancel``/``on_step`` callbacks the
              trainer calls at a step's start and end (after torch.cuda.synchronize on a GPU). No sample
              images and no checkpoints during the steps (checkpoint_every is the maximum); the run is
              stopped through ``should_cancel`` after the last timed step, so --steps may be below the
              request's minimum of 10.
  ckpt s      one checkpoint, saved afterwards exactly as the trainer saves one (adapter, optimizer state,
              loss curve) into a temporary folder.
  peak GB     torch.cuda.max_memory_allocated from just before ``LoraTrainer(...)`` (the base pipeline's
              weights included); on the CPU the process's peak RSS is printed below the table instead.

    cd /work/main && .venv/bin/python bench/train.py
        [--arch tiny|sd15|sdxl] [--device auto|cpu|cuda] [--dtype auto|float32|float16|bfloat16]
        [--steps 20] [--warmup 3] [--rank 16] [--batch 1] [--resolution PX] [--[no-]compare-text-encoder]
        [--text-encoder-layers 2] [--allow-cpu] [--threads N] [--models-dir DIR]

On the CPU, tiny runs on one torch thread unless --threads says otherwise (TINY_CPU_THREADS says why).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local or built in memory
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from bench.architectures import (  # noqa: E402
    TINY_CPU_THREADS,
    build_real,
    parameters,
    text_encoder_depth,
    tiny_models_dir,
    tiny_tokenizer,
)
from bench.common import command_line, machine, quiet_libraries, sync  # noqa: E402
from engine.cascade import Cancelled  # noqa: E402
from engine.loader import PipelineCache, Placement  # noqa: E402
from engine.lora_request import MAX_TRAIN_STEPS, RANKS, resolve_training, training_resolution  # noqa: E402
from engine.lora_training import LoraTrainer, TrainingExample, _Checkpoints  # noqa: E402
from engine.params import ParamError  # noqa: E402
from engine.profiles import load_profiles  # noqa: E402

ARCHS = ("tiny", "sd15", "sdxl")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
IMAGES = 5
TRIGGER = "benchstyle"


# --- the data set ----------------------------------------------------------------------------------------

def gradient_images(resolution: int, count: int = IMAGES, seed: int = 0) -> list[TrainingExample]:
    """``count`` diagonal gradients between two random colours, resolution x 5/4 resolution (portrait)."""
    rng = np.random.default_rng(seed)
    width, height = resolution, resolution * 5 // 4
    ramp = (np.linspace(0, 1, width)[None, :] + np.linspace(0, 1, height)[:, None])[..., None] / 2
    examples = []
    for index in range(count):
        start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        pixels = np.round(start + (end - start) * ramp).astype(np.uint8)
        examples.append(TrainingExample(Image.fromarray(pixels), f"gradient {index}"))
    return examples


# --- one configuration -----------------------------------------------------------------------------------

def training_request(args, profile, train_text_encoder: bool):
    """The request as the studio resolves it (its checks included), at --resolution when given."""
    raw = {"lora_id": "bench", "trigger": TRIGGER, "rank": args.rank, "batch_size": args.batch, "seed": 0,
           "steps": max(10, args.warmup + args.steps), "train_text_encoder": train_text_encoder,
           "sample_every": 0, "checkpoint_every": MAX_TRAIN_STEPS}
    try:
        request = resolve_training(raw, profile)
    except ParamError as exc:
        sys.exit(str(exc))
    request.resolution = args.resolution or request.resolution
    return request


def run_config(base, profile, examples, args, device: str, train_text_encoder: bool, tmp: str) -> dict:
    request = training_request(args, profile, train_text_encoder)
    total = args.warmup + args.steps
    starts: list[float] = []
    ends: list[float] = []
    last_state = []

    def should_cancel() -> bool:  # called as each step starts
        sync(device)
        if len(starts) == total:
            return True
        starts.append(time.perf_counter())
        return False

    def on_step(state) -> None:  # called as each step ends
        sync(device)
        ends.append(time.perf_counter())
        last_state[:] = [state]

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    began = time.perf_counter()
    trainer = LoraTrainer(base, request)
    sync(device)
    built = time.perf_counter()
    try:
        trainer.train(examples, Path(tmp) / f"run-{int(train_text_encoder)}", on_step=on_step, should_cancel=should_cancel)
    except Cancelled:
        pass  # stopped after the last timed step, as meant
    except FloatingPointError as exc:
        sys.exit(f"training stopped: {exc}. Random weights in {args.dtype_name} overflowed; try --dtype float32 "
                 "or bfloat16.")
    if len(ends) != total:
        sys.exit(f"the trainer ran {len(ends)} steps, not {total}")
    timed_s = ends[-1] - starts[args.warmup]
    state = last_state[0]
    sync(device)
    start = time.perf_counter()
    _Checkpoints(Path(tmp) / f"checkpoint-{int(train_text_encoder)}").save(
        state.step, trainer._peft_weights(), trainer.optimizer, state)
    sync(device)
    checkpoint_s = time.perf_counter() - start
    result = {
        "text_encoder": "trained" if train_text_encoder else "frozen",
        "resolution": request.resolution, "rank": request.rank, "batch": request.batch_size,
        "lora_params": sum(p.numel() for p in trainer.parameters),
        "setup_s": built - began, "encode_s": starts[0] - built,
        "steps_per_s": args.steps / timed_s,
        "step_s": [end - begin for begin, end in zip(starts[args.warmup:], ends[args.warmup:])],
        "checkpoint_s": checkpoint_s, "final_loss": state.losses[-1],
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }
    del trainer, state
    last_state.clear()
    gc.collect()
    return result


# --- the report ------------------------------------------------------------------------------------------

def report(arch: str, device: str, dtype_name: str, rows: list[dict], args) -> None:
    header = (f"  {'arch':5} {'text enc':8} {'device':6} {'dtype':8} {'res':>5} {'rank':>4} {'batch':>5} "
              f"{'LoRA params':>12} {'setup s':>8} {'encode s':>8} {'steps/s':>8} {'s/step':>8} "
              f"{'ckpt s':>7} {'peak GB':>7}")
    print(f"\n{header}\n  {'-' * (len(header) - 2)}")
    for row in rows:
        peak = "-" if row["peak_gb"] is None else f"{row['peak_gb']:.2f}"
        print(f"  {arch:5} {row['text_encoder']:8} {device.split(':')[0]:6} {dtype_name:8} {row['resolution']:>5} "
              f"{row['rank']:>4} {row['batch']:>5} {row['lora_params']:>12,} {row['setup_s']:>8.3f} "
              f"{row['encode_s']:>8.3f} {row['steps_per_s']:>8.3f} {1 / row['steps_per_s']:>8.4f} "
              f"{row['checkpoint_s']:>7.3f} {peak:>7}")
    print(f"\n  steps/s over {args.steps} timed steps after {args.warmup} warm-up steps; per-step seconds "
          "(timed steps): " + "; ".join(
              f"{row['text_encoder']} median {statistics.median(row['step_s']):.4f}, min {min(row['step_s']):.4f}, "
              f"max {max(row['step_s']):.4f}" for row in rows))
    print("  final loss: " + ", ".join(f"{row['text_encoder']} {row['final_loss']:.4f}" for row in rows))
    if len(rows) == 2:
        frozen, trained = rows
        ratio = trained["steps_per_s"] / frozen["steps_per_s"]
        median_ratio = statistics.median(trained["step_s"]) / statistics.median(frozen["step_s"])
        note = "" if arch == "tiny" or args.text_encoder_layers == 0 else (
            f"; text encoders cut to {args.text_encoder_layers} layers: the real ones cost more")
        print(f"  with text encoder training vs without: {ratio:.3f}x the steps/s ({1 / ratio:.3f}x the time per "
              f"step; median step {median_ratio:.3f}x as long), {trained['lora_params'] / frozen['lora_params']:.3f}x "
              f"the LoRA parameters{note}")
    if not device.startswith("cuda"):
        print(f"  process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--arch", choices=ARCHS, default="tiny",
                     help="tiny profile, or the real SD 1.5 / SDXL denoiser with random weights (default tiny)")
    cli.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda")
    cli.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                     help="auto: float16 on CUDA; on the CPU float32 for tiny, bfloat16 for sd15/sdxl")
    cli.add_argument("--steps", type=int, default=20, help="timed training steps (default 20)")
    cli.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    cli.add_argument("--rank", type=int, default=16, help=f"LoRA rank, one of {', '.join(map(str, RANKS))} (default 16)")
    cli.add_argument("--batch", type=int, default=1, help="batch size, 1 to 8 (default 1)")
    cli.add_argument("--resolution", type=int,
                     help="training side in px (default: the profile's native size: tiny 64, sd15 512, sdxl 1024)")
    cli.add_argument("--compare-text-encoder", action=argparse.BooleanOptionalAction, default=None,
                     help="also time training the text encoders, side by side (default: on for tiny only)")
    cli.add_argument("--text-encoder-layers", type=int, default=2,
                     help="layers of the sd15/sdxl text encoders (default 2; 0 = the real 12 and 32)")
    cli.add_argument("--allow-cpu", action="store_true", help="let sd15/sdxl run on the CPU (very slow)")
    cli.add_argument("--threads", type=int,
                     help=f"torch threads (default: {TINY_CPU_THREADS} for tiny on the CPU, else torch's own choice)")
    cli.add_argument("--models-dir", type=Path,
                     help="a models folder holding tiny/ (default data/models, else the tiny profile is built "
                          "into a temporary folder)")
    args = cli.parse_args()
    if args.steps < 1 or args.warmup < 0:
        sys.exit("--steps must be at least 1 and --warmup at least 0")
    if args.warmup + args.steps > MAX_TRAIN_STEPS:
        sys.exit(f"--warmup + --steps must be at most {MAX_TRAIN_STEPS}")
    if args.text_encoder_layers < 0:
        sys.exit("--text-encoder-layers must be 0 (the real depth) or more")
    quiet_libraries()
    print("command: " + command_line(), flush=True)

    device = Placement.choose(args.device).device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU here")
    real = args.arch != "tiny"
    if real and not device.startswith("cuda") and not args.allow_cpu:
        sys.exit(f"--arch {args.arch} needs a CUDA GPU: on the CPU one training step of the real denoiser takes "
                 "minutes and the timings say nothing about the studio's GPU workers. Add --allow-cpu to run it "
                 "anyway (e.g. --steps 1 --warmup 0 --resolution 256, to check that the configs build and train).")
    if args.dtype == "auto":
        dtype = Placement.choose(device).dtype if device.startswith("cuda") or not real else torch.bfloat16
    else:
        dtype = DTYPES[args.dtype]
    args.dtype_name = str(dtype).removeprefix("torch.")
    compare = args.arch == "tiny" if args.compare_text_encoder is None else args.compare_text_encoder
    if args.threads or (not real and not device.startswith("cuda")):
        torch.set_num_threads(args.threads or TINY_CPU_THREADS)

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        models_dir = tiny_models_dir(args.models_dir or ROOT / "data" / "models", tmp, tokenizer_only=real)
        profile = load_profiles(models_dir=models_dir)[args.arch]
        training_request(args, profile, False)  # refuse a bad rank or batch size before building anything
        start = time.perf_counter()
        if real:
            base = build_real(args.arch, tiny_tokenizer(models_dir), device, dtype, args.text_encoder_layers)
            how = "built with random weights"
        else:
            base = PipelineCache(Placement(device=device, dtype=dtype)).pipeline(profile, "base")
            how = "loaded through PipelineCache"
        sync(device)
        load_s = time.perf_counter() - start
        args.resolution = args.resolution or training_resolution(profile)
        multiple = base.vae_scale_factor * 2 ** (len(base.unet.config.block_out_channels) - 1)
        if args.resolution < multiple or args.resolution % multiple:
            sys.exit(f"--resolution {args.resolution}: the {args.arch} denoiser needs a multiple of {multiple} px")

        te = [parameters(getattr(base, name, None)) for name in ("text_encoder", "text_encoder_2")]
        print(f"pipeline: {args.arch} ({type(base).__name__}), {how} in {load_s:.2f} s on {device} in "
              f"{args.dtype_name}; UNet {parameters(base.unet):,} parameters, VAE {parameters(base.vae):,} "
              f"(scaling {base.vae.config.scaling_factor}), text encoders "
              + " + ".join(f"{n:,}" for n in te if n) + (
                  f" ({text_encoder_depth(args.arch, args.text_encoder_layers)})" if real else ""), flush=True)
        print(f"training: {IMAGES} gradient pictures at {args.resolution} px, rank {args.rank}, batch {args.batch}, "
              f"{args.warmup} warm-up + {args.steps} timed steps, no samples, no checkpoints while timed; "
              f"text encoders {'frozen, then trained' if compare else 'frozen'}", flush=True)
        print("machine:", machine(device, "training", {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "peft": peft.__version__}), flush=True)
        print(f"timed runs, 1-minute load average before: {os.getloadavg()[0]:.2f}", flush=True)

        examples = gradient_images(args.resolution)
        rows = []
        for train_text_encoder in ((False, True) if compare else (False,)):
            row = run_config(base, profile, examples, args, device, train_text_encoder, tmp)
            rows.append(row)
            print(f"  text encoders {row['text_encoder']}: {row['steps_per_s']:.3f} steps/s", flush=True)
    print(f"1-minute load average after: {os.getloadavg()[0]:.2f}")
    report(args.arch, device, args.dtype_name, rows, args)


if __name__ == "__main__":
    main()

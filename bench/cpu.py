"""Generation speed on the CPU at the tiny profile: plain diffusers vs the engine, each fast-path switch measured.

The CPU counterpart of bench/gpu.py, so that the fast path's code (engine/fast_path.py: channels-last,
fused QKV projections, the compiled denoiser, VAE slicing) runs where CI runs. The tiny profile's base
pipeline (random weights: the images are noise) draws the same job, at --size px with the profile's steps,
guidance and sampler, at each batch size of --batches, configured as:

  plain diffusers                the base pipeline class's from_pretrained(folder), called directly
  engine, FastPath()             run_cascade through a fresh PipelineCache, no switch on (plain diffusers' settings)
  engine, CPU fast path          every switch that works on a CPU: channels-last, fused QKV, compile, VAE slicing
  engine, <switch> alone         one row per switch, so each one's effect shows on its own

All configurations of a batch size are loaded (each one's load and first job timed alone) and then take their
warm runs in turn, one of each per round, so that other work on the machine slows them alike; bench/speed.py
says what each column is. The floor uses the CPU's measured float32 matmul rate; the tiny
denoiser is so small that the measured time is mostly Python and dispatch overhead, far above it: the table
checks that every switch runs and what it costs here, not what it gains on a GPU (bench/gpu.py measures that).

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu.py
        [--size 64] [--steps N] [--runs 9] [--batches 1,4] [--threads 1] [--matmul-size 1024]
        [--cold-compile] [--models-dir DIR]

torch.compile of the tiny denoiser costs ~10-50 s per compiled configuration the first time on a small CPU
(less once Inductor's on-disk cache holds it; --cold-compile turns that cache off). It runs on one torch
thread unless --threads says otherwise (bench/architectures.py's TINY_CPU_THREADS says why).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from bench.architectures import TINY_CPU_THREADS, tiny_models_dir  # noqa: E402
from bench.common import command_line, machine, quiet_libraries, timed  # noqa: E402
from bench.speed import (  # noqa: E402
    PROMPT,
    Engine,
    Job,
    MatmulRates,
    PlainDiffusers,
    describe,
    fast_profile,
    finish,
    legend,
    measure,
    print_verdicts,
    table,
    warm_job_verdicts,
)
from engine.loader import PipelineCache, Placement  # noqa: E402
from engine.profiles import FastPath, load_profiles  # noqa: E402
from engine.prompt_encoding import prompt_arguments  # noqa: E402

DEVICE = "cpu"
# Every switch that acts on a CPU (attention "classic" is slower by design, VAE tiling acts only on pictures
# larger than the VAE's own size, CPU offload needs a GPU), each also measured alone.
CPU_SWITCHES = {"channels_last": "channels-last", "fuse_qkv": "fused QKV", "compile": "compile", "vae_slicing": "VAE slicing"}


def batches(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(not 1 <= value <= 8 for value in values):
        raise argparse.ArgumentTypeError("a comma-separated list of batch sizes from 1 to 8, e.g. 1,4")
    return values


def prompt_encoding_s(profile, batch: int, repetitions: int = 5) -> tuple[float, float]:
    """Median seconds per job to turn the prompts into embeddings: the engine's way (engine/prompt_encoding.py:
    compel, which parses them and encodes prompts past 77 tokens in chunks), and the pipeline's own encode_prompt,
    which plain diffusers calls."""
    pipe = PipelineCache(Placement.choose(DEVICE)).pipeline(profile, "base")
    prompts, negatives = [PROMPT] * batch, [""] * batch

    def engine():
        return prompt_arguments(pipe, prompts, negatives)

    def plain():
        return pipe.encode_prompt(prompt=prompts, device=DEVICE, num_images_per_prompt=1, do_classifier_free_guidance=True,
                                  negative_prompt=negatives)

    with torch.no_grad():
        engine(), plain()  # warm-up
        return tuple(statistics.median(timed(way)[1] for _ in range(repetitions)) for way in (engine, plain))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--size", type=int, default=64, help="picture side in px (default 64, the tiny profile's)")
    cli.add_argument("--steps", type=int, help="denoising steps (default: the tiny profile's)")
    cli.add_argument("--runs", type=int, default=9, help="warm runs per configuration after its first job (default 9)")
    cli.add_argument("--batches", type=batches, default=[1, 4], help="batch sizes, comma-separated (default 1,4)")
    cli.add_argument("--threads", type=int, default=TINY_CPU_THREADS, help=f"torch threads (default {TINY_CPU_THREADS})")
    cli.add_argument("--matmul-size", type=int, default=1024, help="side of the square matmuls timed for the floor (default 1024)")
    cli.add_argument("--cold-compile", action="store_true", help="turn off Inductor's caches, so each compile is paid in full")
    cli.add_argument("--models-dir", type=Path,
                     help="a models folder holding tiny/ (default data/models, else the tiny profile is built into a "
                          "temporary folder)")
    args = cli.parse_args()
    if args.runs < 1 or args.threads < 1 or args.size < 8 or args.size % 8:
        sys.exit("--runs and --threads must be at least 1, --size a multiple of 8 px")
    quiet_libraries()
    torch.set_num_threads(args.threads)
    if args.cold_compile:
        torch._inductor.config.force_disable_caches = True
    print("command: " + command_line(), flush=True)

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        models_dir = tiny_models_dir(args.models_dir or ROOT / "data" / "models", tmp, tokenizer_only=False)
        tiny = load_profiles(models_dir=models_dir)["tiny"]
        steps = args.steps or tiny.steps
        base = tiny.roles["base"]
        all_switches = FastPath(**{name: True for name in CPU_SWITCHES})
        setups = [PlainDiffusers("plain diffusers", base.pipeline, base.model, torch.float32, DEVICE),
                  Engine("engine, FastPath()", fast_profile(tiny, DEVICE, FastPath(), size=args.size), DEVICE),
                  Engine(f"engine, CPU fast path ({describe(all_switches, DEVICE)})",
                         fast_profile(tiny, DEVICE, all_switches, size=args.size), DEVICE)]
        setups += [Engine(f"engine, {label} alone", fast_profile(tiny, DEVICE, FastPath(**{name: True}), size=args.size), DEVICE)
                   for name, label in CPU_SWITCHES.items()]
        machine_line = machine(DEVICE, "generation", {"diffusers": diffusers.__version__, "transformers": transformers.__version__})
        print("machine:", machine_line, flush=True)
        print(f"tiny profile's base ({base.model}), {args.size} px, {steps} steps, guidance {tiny.guidance}, sampler "
              f"{tiny.sampler}; batches {', '.join(map(str, args.batches))}; {args.runs} warm runs each; Inductor caches "
              f"{'off' if args.cold_compile else 'on'}", flush=True)
        rates = MatmulRates(DEVICE, args.matmul_size)
        load_before = os.getloadavg()[0]
        rows = []
        for batch in args.batches:
            job = Job(size=args.size, steps=steps, guidance=tiny.guidance, sampler=tiny.sampler, batch=batch)
            rows += measure(setups, job, args.runs, DEVICE, "tiny", f"batch {batch}", interleave=True)
        finish(rows, rates)
        encoding = {batch: prompt_encoding_s(setups[1].profile, batch) for batch in args.batches}
    print()
    print(table(rows, DEVICE))
    print()
    print(*legend(rows, rates, args.runs), sep="\n")
    print("prompt encoding per job, the engine's (compel) vs the pipeline's own encode_prompt (plain diffusers'): "
          + ", ".join(f"batch {batch} {engine_s:.3f} s vs {plain_s:.3f} s" for batch, (engine_s, plain_s) in encoding.items()))
    print(f"1-minute load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f} (other processes on these "
          f"{os.cpu_count()} cores slow the runs they overlap)")
    print()
    print_verdicts(warm_job_verdicts(rows, timing=False))


if __name__ == "__main__":
    main()

"""Generation speed on a CUDA GPU: plain diffusers vs the engine's fast path, SDXL at 1024 px and SD 1.5 at 512 px.

For each architecture (--arch) the pipeline is built once with the real denoiser, VAE and text encoders of
the sdxl or sd15 profile's base model (bench/architectures.py: the published configs, kept in bench/configs,
with random weights, which time like the real ones; no download) and saved in float16 with save_pretrained
into a temporary folder, so that both sides load it through from_pretrained as they would a hub id. Then,
side by side in one run, at each batch size of --batches:

  plain diffusers     the profile's pipeline class, from_pretrained(folder, dtype=float16).to("cuda"), called
                      as diffusers' docs do (prompt list, num_inference_steps, guidance_scale, width, height,
                      generators), with the profile's sampler and guidance, so the fast path is all that differs
  engine fast path    run_cascade through a fresh PipelineCache with the profile's own "cuda" fast path
                      (engine/profiles.json: precision, channels-last, fused QKV, torch.compile, VAE tiling
                      and slicing)
  --ablation          rows in between that add the fast path's switches one at a time (precision alone,
                      +channels-last, +fused QKV, +compile, ...), so each switch's gain is measured

The job: the profile's guidance and sampler, 30 steps for SDXL, the sd15 profile's steps for SD 1.5
(--steps sets both), a one-line prompt. bench/speed.py says what each column is: first job (load + compile
+ run), second job, s/image (median of --runs warm runs), images/min, peak GPU memory, the denoiser's
FLOPs per image (PyTorch's FLOP counter), the floor (those FLOPs at the GPU's measured matmul rate, 8192^2
matmuls in the row's precision) and the ratios fast/plain and measured/floor. Then the targets:

  fast/plain >= 1.5 for SDXL at 1024 px; measured/floor <= 3 for the fast path;
  a warm second job with no load or compile cost (nothing loaded or compiled during the warm runs, and the
  second job within 20% of the warm median)

GPU memory is freed between configurations; a configuration that fails (out of memory, a compile error)
is printed with its traceback and shown as failed in the table, and the others still run. --markdown PATH
appends the run (date, GPU, the command, the table, the verdicts) to PATH, e.g. bench/RESULTS.md. The
default run takes about 8 minutes on an H100, most of it compiling the denoisers (a fresh compile per
configuration and batch size, as a worker compiles once per shape); --ablation adds a compiled row per
arch and batch size besides the eager ones, so run it one arch at a time (--arch sdxl --ablation).

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu.py
        [--arch all|sdxl|sd15] [--size PX] [--steps N] [--runs 3] [--batches 1,4] [--ablation]
        [--markdown bench/RESULTS.md] [--device cuda|cpu] [--dtype float16|bfloat16|float32]
        [--matmul-size 8192] [--text-encoder-layers 0] [--cold-compile] [--models-dir DIR]

--device cpu is a smoke test of the whole path (build, save, load through the engine, the table), e.g.
--device cpu --arch sd15 --size 64 --steps 2 --runs 1 --batches 1; on the CPU both sides run in float32
unless --dtype says otherwise, and the verdicts say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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
import torch  # noqa: E402
import transformers  # noqa: E402

from bench.architectures import (  # noqa: E402
    PIPELINES,
    REAL_ARCHS,
    build_real,
    parameters,
    text_encoder_depth,
    tiny_models_dir,
    tiny_tokenizer,
)
from bench.common import command_line, machine, quiet_libraries, sync  # noqa: E402
from bench.speed import (  # noqa: E402
    Engine,
    Job,
    MatmulRates,
    PlainDiffusers,
    append_markdown,
    cumulative_fast_paths,
    describe,
    device_type,
    dtype_name,
    fast_profile,
    finish,
    free_memory,
    legend,
    measure,
    print_verdicts,
    table,
    warm_job_verdicts,
)
from engine.fast_path import DTYPES  # noqa: E402
from engine.profiles import load_profiles  # noqa: E402

SIZES = {"sdxl": 1024, "sd15": 512}
STEPS = {"sdxl": 30}  # the SDXL job; SD 1.5 takes its profile's steps
SAVED_DTYPE = torch.float16  # as the published half-precision weights are
SPEEDUP_TARGET = {"sdxl": 1.5}  # fast/plain for the profile's default size
FLOOR_TARGET = 3.0  # measured/floor for the fast path
FAST_LABEL = "engine fast path"


def batches(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(not 1 <= value <= 8 for value in values):
        raise argparse.ArgumentTypeError("a comma-separated list of batch sizes from 1 to 8, e.g. 1,4")
    return values


def save_pipeline(arch: str, tokenizer, device: str, folder: Path, te_layers: int) -> str:
    """Build ``arch``'s pipeline with random weights in float16 on ``device`` and save it to ``folder``."""
    start = time.perf_counter()
    pipe = build_real(arch, tokenizer, device, SAVED_DTYPE, te_layers)
    sync(device)
    built = time.perf_counter()
    pipe.save_pretrained(folder, safe_serialization=True)
    te = [parameters(getattr(pipe, name, None)) for name in ("text_encoder", "text_encoder_2")]
    summary = (f"{arch}: {type(pipe).__name__}, UNet {parameters(pipe.unet):,} parameters, VAE {parameters(pipe.vae):,}, "
               f"text encoders " + " + ".join(f"{n:,}" for n in te if n) + f" ({text_encoder_depth(arch, te_layers)}); "
               f"built in {built - start:.1f} s, saved in {dtype_name(SAVED_DTYPE)} in {time.perf_counter() - built:.1f} s")
    del pipe
    free_memory(device)
    return summary


def targets(rows) -> list[tuple[bool, str]]:
    verdicts = []
    fast_rows = [row for row in rows if row.label == FAST_LABEL]
    for row in fast_rows:
        target = SPEEDUP_TARGET.get(row.arch)
        if target is None:
            continue
        if row.speedup is None:
            verdicts.append((False, f"fast/plain, {row.group}: not measured (a configuration failed)"))
            continue
        note = "" if row.size == SIZES[row.arch] and row.steps == STEPS.get(row.arch, row.steps) else (
            f" (the target is stated for {SIZES[row.arch]} px, {STEPS[row.arch]} steps)")
        verdicts.append((row.speedup >= target, f"fast/plain, {row.group}: {row.speedup:.2f}x (>= {target}){note}"))
    for row in fast_rows:
        if row.over_floor is not None:
            verdicts.append((row.over_floor <= FLOOR_TARGET, f"measured/floor, {row.group}, {row.label}: "
                                                             f"{row.over_floor:.2f} (<= {FLOOR_TARGET:g})"))
    verdicts += warm_job_verdicts(rows, only=lambda row: row.label == FAST_LABEL)
    return verdicts


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--arch", choices=("all", *REAL_ARCHS), default="all", help="sdxl, sd15 or all (default: sdxl then sd15)")
    cli.add_argument("--size", type=int, help="picture side in px for every arch (default: sdxl 1024, sd15 512)")
    cli.add_argument("--steps", type=int, help="denoising steps for every arch (default: sdxl 30, sd15 the profile's)")
    cli.add_argument("--runs", type=int, default=3, help="warm runs per configuration after its first job (default 3)")
    cli.add_argument("--batches", type=batches, default=[1, 4], help="batch sizes, comma-separated (default 1,4)")
    cli.add_argument("--ablation", action="store_true", help="also rows adding the fast path's switches one at a time")
    cli.add_argument("--markdown", type=Path, help="append the run as a section to this file (e.g. bench/RESULTS.md)")
    cli.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    cli.add_argument("--dtype", choices=tuple(DTYPES),
                     help="precision of both sides (default: plain float16, the fast path its profile's; float32 on a CPU)")
    cli.add_argument("--matmul-size", type=int, help="side of the square matmuls timed for the floor (default 8192, 1024 on a CPU)")
    cli.add_argument("--text-encoder-layers", type=int, default=0,
                     help="layers of the text encoders (default 0: the published 12, and 32 for SDXL's second)")
    cli.add_argument("--cold-compile", action="store_true", help="turn off Inductor's caches, so each compile is paid in full")
    cli.add_argument("--models-dir", type=Path,
                     help="a models folder holding tiny/ for its tokenizer (default data/models, else built into a temporary folder)")
    args = cli.parse_args()
    device = args.device
    cuda = device_type(device) == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit(f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__}, CUDA build: "
                 f"{torch.version.cuda or 'none'}). This bench measures the fast path on a GPU; for a smoke test on the CPU "
                 "add --device cpu --arch sd15 --size 64 --steps 2 --runs 1 --batches 1, or run bench/cpu.py.")
    if device_type(device) not in ("cuda", "cpu"):
        sys.exit(f"--device {device}: use cuda, cuda:N or cpu")
    if args.runs < 1 or (args.steps is not None and args.steps < 1) or args.text_encoder_layers < 0:
        sys.exit("--runs and --steps must be at least 1, --text-encoder-layers 0 or more")
    if args.size is not None and (args.size < 64 or args.size % 64):
        sys.exit(f"--size {args.size}: the SD 1.5 and SDXL denoisers need a multiple of 64 px")
    quiet_libraries()
    if args.cold_compile:
        torch._inductor.config.force_disable_caches = True
    archs = list(REAL_ARCHS[::-1]) if args.arch == "all" else [args.arch]
    print("command: " + command_line(), flush=True)
    machine_line = machine(device, "generation", {"diffusers": diffusers.__version__, "transformers": transformers.__version__})
    print("machine:", machine_line, flush=True)
    if not cuda:
        print("smoke test on the CPU: the timings and verdicts say nothing about a GPU", flush=True)
    started, load_before = time.perf_counter(), os.getloadavg()[0]

    rates = MatmulRates(device, args.matmul_size or (8192 if cuda else 1024))
    rows = []
    summaries = []
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        models_dir = tiny_models_dir(args.models_dir or ROOT / "data" / "models", tmp, tokenizer_only=True)
        tokenizer = tiny_tokenizer(models_dir)
        profiles = load_profiles(models_dir=models_dir)
        for arch in archs:
            profile = profiles[arch]
            fast = profile.fast_paths.get("cuda")
            if fast is None:
                sys.exit(f"the {arch} profile has no cuda fast path in engine/profiles.json")
            if args.dtype or not cuda:
                fast = dataclasses.replace(fast, dtype=args.dtype or "float32")
            plain_dtype = DTYPES[args.dtype or ("float16" if cuda else "float32")]
            size = args.size or SIZES[arch]
            steps = args.steps or STEPS.get(arch, profile.steps)
            folder = Path(tmp) / arch
            print(f"{arch}: building {profile.roles['base'].model}'s architecture with random weights ...", flush=True)
            summaries.append(save_pipeline(arch, tokenizer, device, folder, args.text_encoder_layers))
            print("  " + summaries[-1], flush=True)
            pipeline = PIPELINES[arch].__name__

            def engine(label, switches):
                return Engine(label, fast_profile(profile, device, switches, base=(str(folder), pipeline), size=size,
                                                  steps=steps), device)

            setups = [PlainDiffusers("plain diffusers", pipeline, str(folder), plain_dtype, device)]
            if args.ablation:
                setups += [engine(f"engine, {added}", switches) for added, switches in cumulative_fast_paths(fast)[:-1]]
            setups.append(engine(FAST_LABEL, fast))
            summaries.append(f"{arch} {FAST_LABEL}: {describe(fast, device)}; sampler {profile.sampler}, guidance "
                             f"{profile.guidance}, {steps} steps at {size} px")
            print("  " + summaries[-1], flush=True)
            for batch in args.batches:
                job = Job(size=size, steps=steps, guidance=profile.guidance, sampler=profile.sampler, batch=batch)
                rows += measure(setups, job, args.runs, device, arch, f"{arch} {size} px b{batch}")
            free_memory(device)
        finish(rows, rates)
    print(f"done in {time.perf_counter() - started:.0f} s\n", flush=True)
    result = table(rows, device)
    notes = legend(rows, rates, args.runs)
    print(result, "", *notes, "", *summaries, f"1-minute load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}",
          "", sep="\n", flush=True)
    verdicts = print_verdicts(targets(rows))
    if args.markdown:
        gpu = torch.cuda.get_device_name(device) if cuda else "CPU smoke test"
        append_markdown(args.markdown, gpu, machine_line,
                        [result, "\n".join(f"- {line}" for line in [*notes, *summaries]), "```\n" + verdicts + "\n```"])


if __name__ == "__main__":
    main()

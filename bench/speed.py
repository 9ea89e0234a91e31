"""Generation speed side by side: plain diffusers against the engine's fast path (bench/gpu.py, bench/cpu.py).

A configuration is a way to draw the same job (same pipeline folder, prompt, size, steps, guidance, sampler,
seeds, batch): ``PlainDiffusers`` loads the pipeline class with ``from_pretrained`` and calls it as diffusers'
docs do; ``Engine`` runs ``run_cascade`` through a fresh ``PipelineCache`` with a profile whose fast path is
the one under test. ``measure`` times configurations at one batch size, one after another (a GPU) or loaded
together with their warm runs taken in turn (a CPU shared with other work); ``table`` prints one markdown row
for each:

  first job s     a fresh load (``from_pretrained``, the fast path's load-time switches), the compile of the
                  denoiser where the fast path compiles it, and the first job: what a worker's first job costs.
  2nd job s       the job after it, the first warm run: a worker's second job, which should cost no more than
                  the warm median (nothing loaded or compiled again).
  s/image         the median of --runs warm runs (the second job among them), divided by the batch. Python's
                  garbage collector runs between the warm runs, not during them (as timeit has it), and what
                  the loads and compiles made is frozen out of its sight first (gc.freeze).
  images/min      60 / s/image.
  peak memory     on a GPU torch.cuda.max_memory_allocated over the warm runs (the weights included); on a CPU
                  the most a warm run's peak resident memory (VmHWM, reset through /proc/self/clear_refs before
                  each run) rose above the resident memory before it: the job's own memory, the weights not
                  included ("n/a" where the kernel does not let the peak be reset).
  warm loads/compiles  ``from_pretrained`` calls (the engine's ``PipelineCache.loads``) and frames Dynamo
                  compiled during the warm runs; both 0 when the second job costs neither.
  denoiser FLOP/image  one denoiser forward at the run's real inputs (captured from the plain run: the batch
                  doubled where classifier-free guidance is on), counted with torch.utils.flop_counter, times
                  the denoiser calls per job, divided by the batch. The same for every configuration of a batch
                  size: the fast path changes how the work is done, not how much.
  floor s/image   denoiser FLOP/image over the machine's measured matrix-multiply rate in the configuration's
                  precision (square matmuls, median of timed repetitions): the time the denoiser's arithmetic
                  alone would take at that rate. Text encoding and VAE decoding are not in it.
  measured/floor  s/image over floor s/image.
  fast/plain      images/min of the row over plain diffusers' at the same batch size.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
import traceback
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from bench.common import command_line, sync
from engine.cascade import run_cascade, set_sampler
from engine.fast_path import DTYPES, denoiser_name
from engine.loader import PipelineCache, Placement
from engine.params import image_seed, resolve_generation
from engine.profiles import FastPath, Profile, RoleSpec
from engine.styles import load_styles

# Under 76 characters: one 77-token window for the tiny profile's tokenizer (a token per character), as a
# prompt of a few words is for the real CLIP tokenizer, so every configuration conditions on 77 tokens.
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SEED = 1234
# Which switches a fast path turns on, in the order --ablation adds them, with their names in the table.
SWITCH_LABELS = {"dtype": None, "attention": "attention {}", "sdpa_backend": "SDPA {}", "channels_last": "channels-last",
                 "fuse_qkv": "fused QKV", "compile": "compile", "compile_mode": "compile mode {}", "vae_tiling": "VAE tiling",
                 "vae_slicing": "VAE slicing", "cpu_offload": "CPU offload"}
SECOND_JOB_TOLERANCE = 1.2  # a second job within 20% of the warm median counts as warm
# Dynamo tracing diffusers' upsampling (is_torch_version is lru_cached) warns once per compile; nothing to act on.
warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what --cold-compile asks for


def device_type(device: str) -> str:
    return device.split(":")[0]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe(fast: FastPath, device: str) -> str:
    """The switches ``fast`` sets beyond plain diffusers, e.g. "bfloat16, channels-last, fused QKV, compile"."""
    plain = FastPath()
    parts = [fast.dtype or ("float16" if device_type(device) == "cuda" else "float32")]
    for name, label in SWITCH_LABELS.items():
        value = getattr(fast, name)
        if label is None or value == getattr(plain, name):
            continue
        parts.append(label.format(value) if "{}" in label else label)
    return ", ".join(parts)


def cumulative_fast_paths(fast: FastPath) -> list[tuple[str, FastPath]]:
    """The switches of ``fast`` added one at a time, in SWITCH_LABELS' order: (what was added, the fast path so far).
    The first is the precision alone; the last is ``fast`` itself (its batch_max aside, which a single job ignores)."""
    steps = [(f"precision ({fast.dtype or 'default'})", FastPath(dtype=fast.dtype))]
    current = steps[0][1]
    for name, label in SWITCH_LABELS.items():
        if label is None or getattr(fast, name) == getattr(current, name):
            continue
        current = dataclasses.replace(current, **{name: getattr(fast, name)})
        value = getattr(fast, name)
        steps.append(("+" + (label.format(value) if "{}" in label else label), current))
    return steps


def fast_profile(profile: Profile, device: str, fast: FastPath, base: tuple[str, str] | None = None, size: int | None = None,
                 steps: int | None = None) -> Profile:
    """``profile`` with ``fast`` as its fast path on ``device``, optionally its base model replaced by a local folder
    (``base``: folder, pipeline class name), its size limits widened to take ``size`` and its steps set."""
    changes: dict = {"fast_paths": {device_type(device): fast}}
    if base is not None:
        changes["roles"] = {"base": RoleSpec(model=str(base[0]), pipeline=base[1])}
    if size is not None:
        changes.update(min_size=min(profile.min_size, size), max_size=max(profile.max_size, size))
    if steps is not None:
        changes["steps"] = steps
    return dataclasses.replace(profile, **changes)


# --- the configurations ----------------------------------------------------------------------------------

@dataclass
class Job:
    """What every configuration draws: the profile's guidance and sampler, ``steps`` at ``size`` px, ``batch`` images."""

    size: int
    steps: int
    guidance: float
    sampler: str
    batch: int = 1

    def seeds(self) -> list[int]:
        return [image_seed(SEED, i) for i in range(self.batch)]


class PlainDiffusers:
    """The profile's base pipeline class loaded with ``from_pretrained(folder, dtype=...)`` (diffusers 0.42's name
    for ``torch_dtype``, which it deprecates) and called with a list of prompts and one generator per image, as
    diffusers' docs do; only the sampler is set to the profile's (as the engine sets it), so the fast path is all
    that differs."""

    baseline = True

    def __init__(self, label: str, pipeline_class: str, folder: str, dtype: torch.dtype, device: str):
        self.label, self.pipeline_class, self.folder, self.dtype, self.device = label, pipeline_class, folder, dtype, device
        self.pipe = None
        self.job: Job | None = None
        self._loads = 0

    def load(self, job: Job) -> None:
        self.job = job
        self.pipe = getattr(diffusers, self.pipeline_class).from_pretrained(self.folder, dtype=self.dtype).to(self.device)
        self._loads += 1
        self.pipe.set_progress_bar_config(disable=True)
        set_sampler(self.pipe, job.sampler)

    def run(self) -> list:
        job = self.job
        return self.pipe(prompt=[PROMPT] * job.batch, num_inference_steps=job.steps, guidance_scale=job.guidance,
                         width=job.size, height=job.size,
                         generator=[torch.Generator("cpu").manual_seed(seed) for seed in job.seeds()]).images

    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, denoiser_name(self.pipe))

    def loads(self) -> int:
        return self._loads

    def close(self) -> None:
        self.pipe = None


class Engine:
    """``run_cascade`` with ``profile`` (its fast path on ``device`` the one under test) through a fresh
    ``PipelineCache``, as a worker runs a job: the base stage only."""

    baseline = False

    def __init__(self, label: str, profile: Profile, device: str):
        self.label, self.profile, self.device = label, profile, device
        self.cache: PipelineCache | None = None
        self.params = None
        self.dtype = PipelineCache(Placement.choose(device)).dtype(profile)

    def load(self, job: Job) -> None:
        raw = {"prompt": PROMPT, "width": job.size, "height": job.size, "steps": job.steps, "guidance": job.guidance,
               "count": job.batch, "seed": SEED, "sampler": job.sampler, "stages": ["base"]}
        self.params = resolve_generation(raw, self.profile, load_styles())
        self.cache = PipelineCache(Placement.choose(self.device))
        self.cache.pipeline(self.profile, "base")  # what run_cascade's first call would load

    def run(self) -> list:
        return run_cascade(self.params, self.profile, self.cache).images

    def loads(self) -> int:
        return self.cache.loads

    def close(self) -> None:
        self.cache = None


# --- measuring ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    group: str  # rows of one group (arch, size, steps, batch) share the plain baseline and the FLOP count
    arch: str
    size: int
    steps: int
    batch: int
    label: str
    dtype: str
    baseline: bool
    first_s: float | None
    run_s: list[float]
    peak_bytes: int | None
    warm_loads: int
    warm_compiles: int
    denoiser_calls: int | None = None  # per job, where captured
    denoiser_batch: int | None = None  # the batch the denoiser is called with (x2 with classifier-free guidance)
    flops_per_call: float | None = None
    flops_per_image: float | None = None
    matmul_rate: float | None = None
    speedup: float | None = None
    error: str | None = None  # why the configuration did not run; its times are then None

    @property
    def second_s(self) -> float | None:
        return self.run_s[0] if self.run_s else None

    @property
    def s_per_image(self) -> float | None:
        return statistics.median(self.run_s) / self.batch if self.run_s else None

    @property
    def images_per_min(self) -> float | None:
        return None if self.s_per_image is None else 60 / self.s_per_image

    @property
    def floor_s(self) -> float | None:
        if self.flops_per_image is None or not self.matmul_rate:
            return None
        return self.flops_per_image / self.matmul_rate

    @property
    def over_floor(self) -> float | None:
        return None if self.floor_s is None or self.s_per_image is None else self.s_per_image / self.floor_s


class DenoiserCapture:
    """Counts a denoiser's calls and keeps a copy of the first call's inputs (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.calls, self.inputs, self.batch = module, 0, None, None
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls += 1
        if self.inputs is None:
            self.inputs = tree_map(lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x, (args, kwargs))
            sample = args[0] if args else kwargs["sample"]
            self.batch = sample.shape[0]

    def remove(self) -> None:
        self.handle.remove()

    def flops(self, device: str) -> float:
        """FLOPs of one forward at the captured inputs. On a CPU, attention is counted through SDPA's math path:
        PyTorch's FLOP counter knows the GPU's fused attention kernels but not the CPU's."""
        args, kwargs = self.inputs
        kernel = nullcontext() if device_type(device) == "cuda" else sdpa_kernel(SDPBackend.MATH)
        with torch.no_grad(), kernel, FlopCounterMode(display=False) as counter:
            self.module(*args, **kwargs)
        return float(counter.get_total_flops())


@contextmanager
def garbage_collector_held():
    """Python's cyclic garbage collector off for a timed run, as timeit does (the runs collect in between): once
    torch.compile has run, the heap is large enough that one full collection takes most of a second on a small CPU,
    and where one happens to fall would decide a run's time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def free_memory(device: str) -> None:
    """Drop what the last configuration left: compiled graphs, cached GPU blocks, garbage."""
    torch._dynamo.reset()
    gc.collect()
    if device_type(device) == "cuda":
        torch.cuda.empty_cache()


def _proc_status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Set the process's peak resident memory (VmHWM) to its current one (Linux 4.0 and later)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _compiled_frames() -> int:
    return int(torch._dynamo.utils.counters["frames"]["total"])


def measure(setups: list, job: Job, runs: int, device: str, arch: str, tag: str, interleave: bool = False) -> list[Row]:
    """Time each of ``setups`` drawing ``job``: a fresh load and first job, then ``runs`` warm runs (see the module's
    doc). One configuration after another, each freed before the next loads; with ``interleave`` (for a CPU shared
    with other work, whose speed drifts) all are loaded first and their warm runs taken in turn, one of each per round,
    so a slow spell slows every configuration alike."""
    if interleave:
        return _measure_together(setups, job, runs, device, arch, tag)
    rows = []
    for setup in setups:
        try:
            rows += _measure_together([setup], job, runs, device, arch, tag)
        except Exception as exc:  # one configuration failing (out of memory, a compile error) leaves the others' rows
            print(f"\n  [{tag}] {setup.label}: FAILED", flush=True)
            traceback.print_exc()
            rows.append(Row(group=_group(arch, job), arch=arch, size=job.size, steps=job.steps, batch=job.batch,
                            label=setup.label, dtype=dtype_name(setup.dtype), baseline=setup.baseline, first_s=None, run_s=[],
                            peak_bytes=None, warm_loads=0, warm_compiles=0, error=f"{type(exc).__name__}: {exc}"[:300]))
            gc.unfreeze()
            setup.close()
            free_memory(device)
    return rows


def _group(arch: str, job: Job) -> str:
    return f"{arch} {job.size} px, {job.steps} steps, batch {job.batch}"


@dataclass
class _State:
    setup: object
    first_s: float
    capture: DenoiserCapture | None
    run_s: list[float] = field(default_factory=list)
    warm_loads: int = 0
    warm_compiles: int = 0
    peak: int | None = None  # a GPU's peak allocation, or a CPU's peak growth over the resident memory before a run


def _measure_together(setups: list, job: Job, runs: int, device: str, arch: str, tag: str) -> list[Row]:
    cuda = device_type(device) == "cuda"
    alone = len(setups) == 1
    free_memory(device)
    states = []
    for setup in setups:
        print(f"  [{tag}] {setup.label}: load + first job ...", end="", flush=True)
        sync(device)
        start = time.perf_counter()
        setup.load(job)
        capture = DenoiserCapture(setup.denoiser()) if setup.baseline else None
        setup.run()
        sync(device)
        states.append(_State(setup, time.perf_counter() - start, capture))
        if capture is not None:
            capture.remove()
        print(f" {states[-1].first_s:.2f} s" + ("; warm runs:" if alone else ""), end="" if alone else "\n", flush=True)
    if not alone:
        print(f"  [{tag}] warm runs, one of each configuration per round: round", end="", flush=True)
    # What is loaded and compiled by now lives as long as a worker does: out of the collector's sight (gc.freeze),
    # so that collecting between the runs costs milliseconds rather than most of a second.
    gc.collect()
    gc.freeze()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for round_ in range(runs):
        for state in states:
            gc.collect()
            loads, frames = state.setup.loads(), _compiled_frames()
            rss = _proc_status_bytes("VmRSS") if not cuda and _reset_peak_rss() else None
            sync(device)
            with garbage_collector_held():
                start = time.perf_counter()
                state.setup.run()
                sync(device)
                state.run_s.append(time.perf_counter() - start)
            state.warm_loads += state.setup.loads() - loads
            state.warm_compiles += _compiled_frames() - frames
            if rss is not None:
                state.peak = max(state.peak or 0, _proc_status_bytes("VmHWM") - rss)
            if alone:
                print(f" {state.run_s[-1]:.3f}", end="", flush=True)
        if not alone:
            print(f" {round_ + 1}", end="", flush=True)
    if cuda:
        states[0].peak = torch.cuda.max_memory_allocated() if alone else None  # several loaded at once: not one's own
    gc.unfreeze()
    rows = []
    for state in states:
        setup = state.setup
        row = Row(group=_group(arch, job), arch=arch, size=job.size,
                  steps=job.steps, batch=job.batch, label=setup.label, dtype=dtype_name(setup.dtype), baseline=setup.baseline,
                  first_s=state.first_s, run_s=state.run_s, peak_bytes=state.peak, warm_loads=state.warm_loads,
                  warm_compiles=state.warm_compiles)
        if alone:
            print(f" s; {row.s_per_image:.4f} s/image", flush=True)
        capture = state.capture
        if capture is not None and capture.inputs is not None:
            row.denoiser_calls, row.denoiser_batch = capture.calls, capture.batch
            row.flops_per_call = capture.flops(device)
            row.flops_per_image = row.flops_per_call * capture.calls / job.batch
            capture.inputs = None
        rows.append(row)
    if not alone:
        print(flush=True)
        for row in rows:
            print(f"  [{tag}] {row.label}: warm runs " + " ".join(f"{t:.3f}" for t in row.run_s)
                  + f" s; {row.s_per_image:.4f} s/image", flush=True)
    for state in states:
        state.setup.close()
    states.clear()
    free_memory(device)
    return rows


class MatmulRates:
    """The machine's measured matrix-multiply rate per precision, measured once each."""

    def __init__(self, device: str, size: int, repetitions: int = 7):
        self.device, self.size, self.repetitions = device, size, repetitions
        self.rates: dict[str, float] = {}

    def rate(self, dtype: str) -> float:
        if dtype not in self.rates:
            print(f"  measuring the {dtype} matmul rate ({self.size}x{self.size}) ...", end="", flush=True)
            self.rates[dtype] = matmul_rate(self.device, DTYPES[dtype], self.size, self.repetitions)
            print(f" {self.rates[dtype] / 1e12:.3f} TFLOP/s", flush=True)
        return self.rates[dtype]


def matmul_rate(device: str, dtype: torch.dtype, size: int, repetitions: int = 7) -> float:
    """FLOP/s of ``size`` x ``size`` matmuls in ``dtype`` on ``device``: the median of ``repetitions`` timed
    batches (10 matmuls each on a GPU, so launch gaps do not count; one on a CPU), synchronised."""
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    inner = 10 if device_type(device) == "cuda" else 1
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repetitions):
        sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 * inner / statistics.median(times)


def finish(rows: list[Row], rates: MatmulRates) -> None:
    """Fill in what a row takes from its group (the FLOP count, the plain baseline) and the matmul rates."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    for members in groups.values():
        counted = next((r for r in members if r.flops_per_image is not None), None)
        plain = next((r for r in members if r.baseline), None)
        for row in members:
            if counted is not None and row.error is None:
                row.denoiser_calls, row.denoiser_batch = counted.denoiser_calls, counted.denoiser_batch
                row.flops_per_call = counted.flops_per_call
                row.flops_per_image = counted.flops_per_image
                row.matmul_rate = rates.rate(row.dtype)
            if plain is not None and plain.s_per_image is not None and row.s_per_image is not None:
                row.speedup = plain.s_per_image / row.s_per_image


# --- the report --------------------------------------------------------------------------------------------

def si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def memory(value: int | None, cuda: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**30:.2f} GiB" if cuda or value >= 2**30 else f"{value / 2**20:.0f} MiB"


def table(rows: list[Row], device: str) -> str:
    """One markdown table of every row, grouped as measured."""
    cuda = device_type(device) == "cuda"
    header = ["arch", "px", "steps", "batch", "configuration", "dtype", "first job s", "2nd job s", "s/image",
              "images/min", "peak GPU memory" if cuda else "job RSS growth", "warm loads/compiles",
              "denoiser FLOP/image", "floor s/image", "measured/floor", "fast/plain"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 4 else "--:" for i in range(len(header))) + "|"]
    for row in rows:
        if row.error is not None:
            cells = [row.arch, str(row.size), str(row.steps), str(row.batch), row.label, row.dtype,
                     "failed: " + row.error.replace("|", "/").replace("\n", " ")] + ["n/a"] * (len(header) - 7)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [row.arch, str(row.size), str(row.steps), str(row.batch), row.label, row.dtype, seconds(row.first_s),
                 seconds(row.second_s), f"{row.s_per_image:.4g}", f"{row.images_per_min:.4g}", memory(row.peak_bytes, cuda),
                 f"{row.warm_loads}/{row.warm_compiles}", si(row.flops_per_image, "FLOP"),
                 "n/a" if row.floor_s is None else f"{row.floor_s:.3g}",
                 "n/a" if row.over_floor is None else f"{row.over_floor:.3g}",
                 "n/a" if row.speedup is None else f"{row.speedup:.3g}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def legend(rows: list[Row], rates: MatmulRates, runs: int) -> list[str]:
    """What the columns are, the FLOP count's parts and the matmul rates: lines for under the table."""
    lines = [f"s/image: median of {runs} warm runs / batch; first job: fresh load (+ compile) + the first job; 2nd job: "
             "the first warm run; warm loads/compiles: from_pretrained calls and Dynamo frames compiled during the "
             "warm runs; floor: denoiser FLOP/image over the measured matmul rate in the row's dtype (text encoders "
             "and VAE not counted); fast/plain: images/min over plain diffusers' at the same batch."]
    seen = set()
    for row in rows:
        if row.flops_per_call is not None and row.group not in seen:
            seen.add(row.group)
            lines.append(f"{row.group}: {row.denoiser_calls} denoiser calls per job, each at batch {row.denoiser_batch}: "
                         f"{si(row.flops_per_call, 'FLOP')} per call")
    lines.append("matmul rate (" + f"{rates.size}x{rates.size}): " + ", ".join(
        f"{name} {si(rate, 'FLOP/s')}" for name, rate in rates.rates.items()))
    return lines


def warm_job_verdicts(rows: list[Row], only=lambda row: not row.baseline, timing: bool = True) -> list[tuple[bool, str]]:
    """Per row: the second job costs no load and no compile: nothing loaded or compiled during the warm runs and,
    with ``timing``, the second job within SECOND_JOB_TOLERANCE of the warm median or, where the machine's noise is
    larger than that, no slower than the slowest of the other warm runs. Without ``timing`` (a CPU shared with
    other work) the times are shown but only the counts decide."""
    verdicts = []
    for row in rows:
        if not only(row):
            continue
        if row.error is not None:
            verdicts.append((False, f"second job warm, {row.group}, {row.label}: did not run ({row.error})"))
            continue
        ratio = row.second_s / statistics.median(row.run_s)
        others = max(row.run_s[1:], default=row.second_s)
        in_range = ratio <= SECOND_JOB_TOLERANCE or row.second_s <= others
        ok = (in_range or not timing) and row.warm_loads == 0 and row.warm_compiles == 0
        bound = ""
        if timing:
            bound = f" (<= {SECOND_JOB_TOLERANCE}" + (
                f", or no slower than the other warm runs' slowest, {others:.3g} s" if ratio > SECOND_JOB_TOLERANCE else "") + ")"
        verdicts.append((ok, f"second job warm, {row.group}, {row.label}: {row.warm_loads} loads, {row.warm_compiles} "
                             f"compiles during the warm runs; second job {row.second_s:.3g} s = {ratio:.2f}x the warm "
                             f"median{bound}; first job {row.first_s:.3g} s"))
    return verdicts


def print_verdicts(verdicts: list[tuple[bool, str]]) -> str:
    text = "\n".join(f"{'PASS' if ok else 'FAIL'}  {line}" for ok, line in verdicts)
    print(text, flush=True)
    return text


def append_markdown(path: Path, title: str, machine_line: str, body: list[str]) -> None:
    """Append a dated section (``title``, the exact command, the machine, then ``body``'s blocks) to ``path``."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = [f"## {stamp}: {title}", "", "```", f"HF_HUB_OFFLINE=1 {command_line()}", "```", "",
               machine_line, "", *[block + "\n" for block in body]]
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or not path.read_text().strip()
    with path.open("a", encoding="utf-8") as out:
        if new:
            out.write("# Generation speed: plain diffusers vs the engine's fast path\n\nWritten by bench/gpu.py "
                      "--markdown; each section is one run.\n\n")
        out.write("\n".join(section) + "\n")
    print(f"appended to {path}", flush=True)

"""The studio's own overhead on one tiny-profile cascade job, measured side by side in one run.

(a) engine:  ``resolve_generation`` + ``run_cascade`` in this process, with a warm ``PipelineCache``.
(b) studio:  POST /api/v1/jobs -> SQLite broker -> worker process -> file store + DB, polled through
             GET /api/v1/jobs/{id} until it has succeeded, against the real app started as a subprocess.

Dispatch latency is the time from the POST returning to the job first reading "running", polled every
5 ms (FINE_POLL_S says how the client polls after that). Each path runs one warm-up job, so model loads
are excluded, then --runs jobs, interleaved a/b, each pair with its own seed. Without --steps, the steps
are chosen so that one job takes about 2 s on the engine alone.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/overhead.py
        [--runs 7] [--steps N] [--size PX] [--poll-interval S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.cascade import run_cascade  # noqa: E402
from engine.loader import PipelineCache, Placement  # noqa: E402
from engine.params import MAX_STEPS, resolve_generation  # noqa: E402
from engine.profiles import load_profiles  # noqa: E402
from engine.styles import load_styles  # noqa: E402
from engine.tiny import build_tiny_profile  # noqa: E402
from tasks.generate import PROGRESS_INTERVAL  # noqa: E402
from tests.support import StudioServer, http_json, studio_env, wait_for  # noqa: E402

TARGET_ENGINE_S = 2.0  # the job length the targets are stated for
CALIBRATION_STEPS = (10, 30)  # two step counts timed to choose the steps
DISPATCH_TARGET_MS = 250
OVERHEAD_TARGET_PCT = 10
# How the client polls GET /api/v1/jobs/{id}: finely until the job reads "running" (dispatch latency) and
# once it is nearly done (so its end is seen within ~5 ms), at the web UI's rate in between. Each GET
# costs the app a few ms of CPU that the job, on the same cores, would otherwise have: polling finely
# throughout would add the client's own load to the overhead being measured.
FINE_POLL_S = 0.005
COARSE_POLL_S = 0.1
NEARLY_DONE = 0.9  # job progress from which the client polls finely again
FINISHED = ("succeeded", "failed", "cancelled")


def job_params(steps: int, size: int, seed: int) -> dict:
    return {"prompt": "a lighthouse on a cliff at dusk", "steps": steps, "width": size, "height": size,
            "count": 1, "seed": seed}


class Engine:
    """Path (a): the cascade called directly in this process."""

    def __init__(self, models_dir: Path):
        self.profile = load_profiles(None, models_dir)["tiny"]
        self.styles = load_styles()
        self.cache = PipelineCache(Placement.choose())

    def run(self, params: dict) -> float:
        start = time.perf_counter()
        run_cascade(resolve_generation(params, self.profile, self.styles), self.profile, self.cache)
        return time.perf_counter() - start


class Studio:
    """Path (b): the same job submitted over REST to the running app and its embedded worker."""

    def __init__(self, server: StudioServer):
        self.url = f"{server.url}/api/v1/jobs"

    def _poll(self, job_id: str, done, interval: float) -> dict:
        def fetch():
            _, job = http_json("GET", f"{self.url}/{job_id}")
            return job if done(job) else None

        return wait_for(fetch, 120, interval, f"job {job_id}")

    def run(self, params: dict) -> tuple[float, float]:
        """Wall time from before the POST to reading "succeeded", and the dispatch latency, in seconds."""
        start = time.perf_counter()
        status, job = http_json("POST", self.url, {"kind": "generate", "params": params})
        posted = time.perf_counter()
        if status != 202:
            raise RuntimeError(f"POST /api/v1/jobs answered {status}: {job}")
        self._poll(job["id"], lambda job: job["state"] != "queued", FINE_POLL_S)
        running = time.perf_counter()
        self._poll(job["id"], lambda job: job["state"] in FINISHED or job["progress"] >= NEARLY_DONE, COARSE_POLL_S)
        job = self._poll(job["id"], lambda job: job["state"] in FINISHED, FINE_POLL_S)
        done = time.perf_counter()
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job['id']} ended {job['state']}: {job['error']}")
        return done - start, running - posted


def calibrate_steps(engine: Engine, size: int) -> int:
    """Steps that make an engine-only job last about TARGET_ENGINE_S: a line through two timed step counts."""
    few, many = CALIBRATION_STEPS
    seconds_few, seconds_many = (statistics.median(engine.run(job_params(steps, size, seed=0)) for _ in range(3))
                                 for steps in CALIBRATION_STEPS)
    per_step = max((seconds_many - seconds_few) / (many - few), 1e-4)
    fixed = seconds_few - few * per_step
    return max(1, min(MAX_STEPS, round((TARGET_ENGINE_S - fixed) / per_step)))


def verdict(value: float, target: float) -> str:
    return "PASS" if value < target else "MISS"


def report(args: argparse.Namespace, steps: int, engine_s: list[float], studio_s: list[float],
           dispatch_s: list[float]) -> None:
    a, b = statistics.median(engine_s), statistics.median(studio_s)
    overhead_pct = (b - a) / a * 100
    dispatch_ms = statistics.median(dispatch_s) * 1000
    print(f"\njob: tiny profile, {args.size}x{args.size} px, {steps} steps, 1 image, base stage only; "
          f"{args.runs} runs each")
    print(f"settings: broker poll interval {args.poll_interval} s (STUDIO_BROKER_POLL_INTERVAL), "
          f"progress writes every {PROGRESS_INTERVAL} s (tasks/generate.py), worker concurrency 1, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; client polls every "
          f"{FINE_POLL_S * 1000:.0f} ms until running, every {COARSE_POLL_S * 1000:.0f} ms until {NEARLY_DONE:.0%} "
          f"progress, then every {FINE_POLL_S * 1000:.0f} ms")
    rows = [
        ("median wall time (a) engine", f"{a:.3f} s", ""),
        ("median wall time (b) studio", f"{b:.3f} s", ""),
        ("ratio b/a", f"{b / a:.3f}", ""),
        ("overhead, % of (a)", f"{overhead_pct:.1f} %",
         f"target < {OVERHEAD_TARGET_PCT} %   {verdict(overhead_pct, OVERHEAD_TARGET_PCT)}"),
        ("overhead, seconds", f"{b - a:.3f} s", ""),
        ("median dispatch latency", f"{dispatch_ms:.0f} ms",
         f"target < {DISPATCH_TARGET_MS} ms  {verdict(dispatch_ms, DISPATCH_TARGET_MS)}"),
    ]
    print()
    for name, value, target in rows:
        print(f"  {name:30} {value:>10}   {target}".rstrip())


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--runs", type=int, default=7, help="timed jobs per path (default 7)")
    cli.add_argument("--steps", type=int, help="denoising steps (default: chosen for a ~2 s engine-only job)")
    cli.add_argument("--size", type=int, default=256, help="width and height in px, a multiple of 8 (default 256)")
    cli.add_argument("--poll-interval", type=float, default=0.05,
                     help="STUDIO_BROKER_POLL_INTERVAL for the server, seconds (default 0.05, the studio's default)")
    args = cli.parse_args()

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        tmp = Path(tmp)
        print("building the tiny profile ...", flush=True)
        build_tiny_profile(tmp / "models" / "tiny")
        env = studio_env(tmp / "data", tmp / "models", STUDIO_BROKER_POLL_INTERVAL=str(args.poll_interval))
        server = StudioServer(env, tmp / "studio.log")
        try:
            engine = Engine(tmp / "models")
            engine.run(job_params(CALIBRATION_STEPS[0], args.size, seed=0))  # (a) warm-up: loads the pipeline
            server.wait_ready()  # calibrate on a machine as busy as during the runs: app and worker idling
            steps = args.steps or calibrate_steps(engine, args.size)
            how = "as given" if args.steps else f"chosen for a ~{TARGET_ENGINE_S:g} s job"
            print(f"{steps} steps ({how}) at {args.size}x{args.size} px: "
                  f"engine alone {engine.run(job_params(steps, args.size, seed=0)):.3f} s", flush=True)

            studio = Studio(server)
            studio.run(job_params(steps, args.size, seed=0))  # (b) warm-up: the worker loads the pipeline

            print(f"timed runs, 1-minute load average before: {os.getloadavg()[0]:.2f} "
                  f"(other processes on this machine skew both paths)", flush=True)
            engine_s, studio_s, dispatch_s = [], [], []
            for run in range(1, args.runs + 1):
                params = job_params(steps, args.size, seed=run)
                engine_s.append(engine.run(params))
                wall, dispatch = studio.run(params)
                studio_s.append(wall)
                dispatch_s.append(dispatch)
                print(f"  run {run}: (a) {engine_s[-1]:.3f} s   (b) {wall:.3f} s   dispatch {dispatch * 1000:.0f} ms",
                      flush=True)
        finally:
            server.stop()
        report(args, steps, engine_s, studio_s, dispatch_s)


if __name__ == "__main__":
    main()

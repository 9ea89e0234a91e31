"""The studio's own overhead on one tiny-profile cascade job, measured side by side in one run.

(a) engine:  ``resolve_generation`` + ``run_cascade`` in this process, with a warm ``PipelineCache``.
(b) studio:  POST /api/v1/jobs -> SQLite broker -> worker process -> file store + DB, polled through
             GET /api/v1/jobs/{id} until it has succeeded, against the real app started as a subprocess.

Dispatch latency is the time from the POST returning to the job first reading "running" (polled every
5 ms). Each path runs one warm-up job (model loads excluded), then --runs jobs, interleaved a/b, each pair
with its own seed. Without --steps, the steps are chosen so one job takes about 2 s on the engine alone.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/overhead.py [--runs 7] [--steps N] [--size PX] [--poll-interval S]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
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
CALIBRATION_STEPS = 20
DISPATCH_TARGET_MS = 250
OVERHEAD_TARGET_PCT = 10
DISPATCH_POLL_S = 0.005  # client polling until the job reads "running"
FINISH_POLL_S = 0.02  # client polling after that, until it has succeeded (bounds the error of (b))
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
            return job if done(job["state"]) else None

        return wait_for(fetch, 120, interval, f"job {job_id}")

    def run(self, params: dict) -> tuple[float, float]:
        """Wall time from before the POST to reading "succeeded", and the dispatch latency, in seconds."""
        start = time.perf_counter()
        status, job = http_json("POST", self.url, {"kind": "generate", "params": params})
        posted = time.perf_counter()
        if status != 202:
            raise RuntimeError(f"POST /api/v1/jobs answered {status}: {job}")
        self._poll(job["id"], lambda state: state != "queued", DISPATCH_POLL_S)
        running = time.perf_counter()
        job = self._poll(job["id"], lambda state: state in FINISHED, FINISH_POLL_S)
        done = time.perf_counter()
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job['id']} ended {job['state']}: {job['error']}")
        return done - start, running - posted


def stop_studio(server: StudioServer) -> None:
    """Stop the embedded worker, then the app.

    The worker runs in a session of its own. Stopped app first, a slow warm shutdown of the worker can
    outlast StudioServer.stop's wait, which then kills the app before it reaps the worker: an orphan that
    would compete for the CPU with whatever runs next.
    """
    for worker in psutil.Process(server.pid).children():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
    server.stop()


def calibrate_steps(engine: Engine, size: int) -> int:
    """Steps that make an engine-only job last about TARGET_ENGINE_S (time per step is near constant)."""
    seconds = engine.run(job_params(CALIBRATION_STEPS, size, seed=0))
    return max(1, min(MAX_STEPS, round(CALIBRATION_STEPS * TARGET_ENGINE_S / seconds)))


def verdict(value: float, target: float) -> str:
    return "PASS" if value < target else "MISS"


def report(args: argparse.Namespace, steps: int, engine_s: list[float], studio_s: list[float], dispatch_s: list[float]) -> None:
    a, b = statistics.median(engine_s), statistics.median(studio_s)
    overhead_pct = (b - a) / a * 100
    dispatch_ms = statistics.median(dispatch_s) * 1000
    print(f"\njob: tiny profile, {args.size}x{args.size} px, {steps} steps, 1 image, base stage only; {args.runs} runs each")
    print(f"settings: broker poll interval {args.poll_interval} s (STUDIO_BROKER_POLL_INTERVAL), "
          f"progress writes every {PROGRESS_INTERVAL} s (tasks/generate.py), worker concurrency 1, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"client polls every {DISPATCH_POLL_S * 1000:.0f} ms until running, then every {FINISH_POLL_S * 1000:.0f} ms")
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
    cli.add_argument("--size", type=int, default=128, help="width and height in px, a multiple of 8 (default 128)")
    cli.add_argument("--poll-interval", type=float, default=0.1,
                     help="STUDIO_BROKER_POLL_INTERVAL for the server, seconds (default 0.1)")
    args = cli.parse_args()

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        tmp = Path(tmp)
        print("building the tiny profile ...", flush=True)
        build_tiny_profile(tmp / "models" / "tiny")
        env = studio_env(tmp / "data", tmp / "models", STUDIO_BROKER_POLL_INTERVAL=str(args.poll_interval))
        server = StudioServer(env, tmp / "studio.log")
        try:
            engine = Engine(tmp / "models")
            engine.run(job_params(CALIBRATION_STEPS, args.size, seed=0))  # (a) warm-up: loads the pipeline
            server.wait_ready()  # calibrate on a machine as busy as during the runs: app and worker idling
            steps = args.steps or calibrate_steps(engine, args.size)
            print(f"chose {steps} steps at {args.size}x{args.size} px: "
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
            stop_studio(server)
        report(args, steps, engine_s, studio_s, dispatch_s)


if __name__ == "__main__":
    main()

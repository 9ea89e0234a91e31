"""Load: many users submitting at once through the REST API to a studio on Redis and Postgres with two workers.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/load.py [--jobs 200] [--users 10] [--workers 2]

Starts Debian's redis-server and PostgreSQL on loopback, the web process with sign-in on (each user has an
API token), and the workers on the tiny profile. Every user submits their share of 64 px jobs from their own
thread, all at once. Reports the submit latency (p50/p95), jobs per second from the first submit to the last
job finished, whether every job succeeded with exactly its one picture stored (file present), and the order
the jobs started in: with fair shares, no user's k-th job starts while another's (k-2)-th is waiting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.tiny import build_tiny_profile  # noqa: E402
from settings import Settings  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import Asset, Job  # noqa: E402
from storage.users import UserStore  # noqa: E402
from tests.support import PostgresServer, RedisServer, StudioServer, start_worker, studio_env, wait_for  # noqa: E402

JOB = {"prompt": "a paper lantern", "width": 64, "height": 64, "steps": 2}


def post_job(url: str, token: str, params: dict) -> tuple[float, int, dict]:
    request = urllib.request.Request(f"{url}/api/v1/jobs", data=json.dumps({"kind": "generate", "params": params}).encode(),
                                     method="POST", headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
        return time.perf_counter() - start, response.status, body


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fairness_breaches(jobs: list[Job]) -> int:
    """Starts that jumped the fair order: a user's k-th job started while another user's job of rank k-2
    or lower was already waiting."""
    rank = {}
    for owner_jobs in _by_owner(jobs).values():
        for k, job in enumerate(sorted(owner_jobs, key=lambda j: j.created_at)):
            rank[job.id] = k
    return sum(1 for job in jobs if any(
        other.owner_id != job.owner_id and rank[other.id] <= rank[job.id] - 2
        and other.created_at < job.started_at < other.started_at for other in jobs))


def _by_owner(jobs: list[Job]) -> dict[str, list[Job]]:
    grouped = defaultdict(list)
    for job in jobs:
        grouped[job.owner_id].append(job)
    return grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="studio-load-", dir="/tmp"))
    redis_server, postgres = RedisServer(workdir, persistent=True), PostgresServer(workdir)
    processes = []
    try:
        models = workdir / "models"
        build_tiny_profile(models / "tiny")
        env = studio_env(workdir / "data", models, STUDIO_DATABASE_URL=postgres.url, STUDIO_BROKER_URL=redis_server.url,
                         STUDIO_AUTH="on", STUDIO_EMBEDDED_WORKER="false", STUDIO_MAX_QUEUED_JOBS=str(args.jobs))
        db = Database(postgres.url)
        db.migrate()
        users = UserStore(db)
        tokens = {}
        for i in range(args.users):
            users.add(f"user{i}", "load-test-password")
            tokens[f"user{i}"] = users.create_token(f"user{i}", "load")[0]
        web = StudioServer(env, workdir / "web.log")
        processes.append(web)
        processes += [start_worker(env, workdir / f"worker{i}.log", f"gpu{i}@%h") for i in range(args.workers)]
        wait_for(lambda: len((web.health() or {"workers": []})["workers"]) == args.workers, 120, 0.25, "the web process and workers")

        latencies, job_ids, errors = [], [], []
        lock, barrier = threading.Lock(), threading.Barrier(args.users)
        share = args.jobs // args.users

        def submit_all(name: str, token: str) -> None:
            barrier.wait()
            for k in range(share):
                try:
                    seconds, status, body = post_job(web.url, token, dict(JOB, seed=k))
                except OSError as exc:
                    with lock:
                        errors.append(f"{name}: {exc}")
                    continue
                with lock:
                    latencies.append(seconds)
                    job_ids.append(body["id"])

        threads = [threading.Thread(target=submit_all, args=item) for item in tokens.items()]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submitted = time.perf_counter() - started

        def all_finished():
            with db.session() as session:
                return session.query(Job).filter(Job.state.in_(("queued", "running"))).count() == 0

        wait_for(all_finished, 1800, 0.2, "every job to finish")
        elapsed = time.perf_counter() - started
        with db.session() as session:
            jobs = session.query(Job).all()
            finals = session.query(Asset).filter(Asset.stage == "final").all()
        files = Settings(data_dir=workdir / "data").files
        per_job = defaultdict(int)
        for asset in finals:
            per_job[asset.job_id] += 1
        missing = [a.id for a in finals if not (files / a.file_hash[:2] / a.file_hash[2:4] / f"{a.file_hash}.png").is_file()]
        states = defaultdict(int)
        for job in jobs:
            states[job.state] += 1
        first_starts = sorted(jobs, key=lambda j: j.started_at)
        first_rank = {owner: next(i for i, j in enumerate(first_starts) if j.owner_id == owner) for owner in _by_owner(jobs)}

        print(f"{len(job_ids)} jobs from {args.users} users ({share} each), {args.workers} workers, tiny profile "
              f"{JOB['width']} px {JOB['steps']} steps, Redis + PostgreSQL, sign-in by API token")
        print("| measure | value |\n| --- | --- |")
        print(f"| submitted in | {submitted:.2f} s |")
        print(f"| submit latency p50 | {statistics.median(latencies) * 1000:.0f} ms |")
        print(f"| submit latency p95 | {percentile(latencies, 0.95) * 1000:.0f} ms |")
        print(f"| all finished after | {elapsed:.1f} s |")
        print(f"| throughput | {len(jobs) / elapsed:.2f} jobs/s |")
        print(f"| job states | {dict(states)} |")
        print(f"| final pictures | {len(finals)} (jobs with not exactly one: {sum(1 for j in jobs if per_job[j.id] != 1)}; files missing: {len(missing)}) |")
        print(f"| submit errors | {len(errors)} |")
        print(f"| latest first start of a user | #{max(first_rank.values()) + 1} of {len(jobs)} |")
        print(f"| starts that broke fair order | {fairness_breaches(jobs)} |")
        ok = (states == {"succeeded": args.jobs} and len(finals) == args.jobs and not missing and not errors
              and all(per_job[j.id] == 1 for j in jobs))
        print("every job succeeded, each picture stored once" if ok else "FAILED: see the table")
        db.dispose()
        sys.exit(0 if ok else 1)
    finally:
        for process in processes:
            process.stop()
        postgres.stop()
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Helpers shared by the integration and end-to-end tests: free ports, waiting, real processes."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 60, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def studio_env(data_dir: Path, models_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STUDIO_DATA_DIR=str(data_dir), STUDIO_MODELS_DIR=str(models_dir), STUDIO_PROFILE="tiny",
        HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(data_dir / "gradio-tmp"),
        PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", STUDIO_WORKER_HEARTBEAT_S="1",
        # The tiny models gain nothing from more torch threads, and two on two cores stall small steps for
        # seconds whenever the test process or the browser keeps a core busy.
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict | list | None]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


class ManagedProcess:
    """A child in its own process group, logging to a file, stopped with its whole group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(args, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 5) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait()
        self.kill(signal.SIGKILL)  # anything left in the group
        self.log.close()


def start_worker(env: dict[str, str], log_path: Path, name: str = "test-worker@%h") -> ManagedProcess:
    return ManagedProcess([sys.executable, str(ROOT / "app.py"), "worker", "--name", name], env, log_path, log_path.parent)


class StudioServer(ManagedProcess):
    """``python app.py --profile tiny`` on a free port, with its embedded worker."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([sys.executable, str(ROOT / "app.py"), "--profile", "tiny", "--port", str(self.port)],
                         env, log_path, log_path.parent)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, as a service manager stops it: the web process stops its worker, then exits."""
        super().stop(timeout)

    def health(self):
        try:
            status, body = http_json("GET", f"{self.url}/api/v1/health", timeout=2)
        except OSError:
            return None
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 90) -> dict:
        def ready():
            if not self.alive():
                raise RuntimeError(f"studio exited early:\n{self.output()[-3000:]}")
            body = self.health()
            return body if body and body["workers"] else None

        return wait_for(ready, timeout, 0.25, "the studio and its worker")

    def wait_job(self, job_id: str, timeout: float = 120) -> dict:
        def finished():
            _, job = http_json("GET", f"{self.url}/api/v1/jobs/{job_id}")
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(finished, timeout, 0.1, f"job {job_id}")


def _as_service_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user when the tests are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class RedisServer(ManagedProcess):
    """Debian's redis-server on a free loopback port; ``persistent`` writes every change to an append-only
    file, as a production broker does, so queued jobs survive a restart."""

    def __init__(self, workdir: Path, persistent: bool = False, port: int | None = None):
        self.workdir, self.persistent = workdir, persistent
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        super().__init__(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
                          "--dir", str(workdir)], dict(os.environ), workdir / f"redis-{self.port}.log", workdir)
        wait_for(self._answers, 20, 0.1, "redis-server")

    def restarted(self) -> "RedisServer":
        """Stop it (SIGTERM) and start it again on the same port and data."""
        self.stop()
        return RedisServer(self.workdir, self.persistent, self.port)

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _answers(self) -> bool:
        import redis

        try:
            return redis.Redis.from_url(self.url).ping()
        except redis.ConnectionError:
            return False


class PostgresServer:
    """Debian's PostgreSQL in a throw-away cluster on a free loopback port."""

    def __init__(self, workdir: Path):
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bindirs:
            raise FileNotFoundError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin, self.port, self.workdir = bindirs[-1], free_port(), workdir
        self.datadir = workdir / "pgdata"
        workdir.chmod(0o777)  # the postgres user writes its cluster and log here
        subprocess.run(_as_service_user([str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust",
                                         "-U", "studio"]), check=True, capture_output=True)
        self.start()
        self.url = self.create_database("studio")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_service_user([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-o", options,
                                         "-l", str(self.workdir / "postgres.log"), "-w", "start"]), check=True, capture_output=True)

    def create_database(self, name: str) -> str:
        subprocess.run(_as_service_user([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                         "-U", "studio", name]), check=True, capture_output=True)
        return f"postgresql+psycopg://studio@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(_as_service_user([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
                       capture_output=True)


# A coloured rectangle per picture, at its own place and size, on a light background: no two alike (the
# training-image check calls pictures within 4 bits of difference hash duplicates).
TRAINING_BOXES = [((10, 10, 50, 50), (200, 40, 40)), ((40, 30, 90, 85), (40, 160, 60)), ((5, 55, 60, 92), (40, 70, 200)),
                  ((55, 5, 92, 40), (220, 180, 30)), ((25, 20, 70, 80), (150, 40, 170)), ((8, 30, 88, 60), (30, 170, 180))]


def training_pngs(count: int = 6) -> list[tuple[str, bytes]]:
    """``count`` (at most 6) distinct 96 px pictures in one "style", as (file name, PNG bytes)."""
    files = []
    for index, (box, colour) in enumerate(TRAINING_BOXES[:count]):
        image = Image.new("RGB", (96, 96), (235, 232, 225))
        ImageDraw.Draw(image).rectangle(box, fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append((f"style-{index}.png", buffer.getvalue()))
    return files


def figure_drawing(size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A figure-like drawing for image-to-image: a head, a body and limbs on a light ground."""
    picture = Image.new("RGB", size, (230, 230, 220))
    draw = ImageDraw.Draw(picture)
    w, h = size
    draw.ellipse((w * 0.42, h * 0.1, w * 0.58, h * 0.3), fill=(200, 150, 120))
    draw.rectangle((w * 0.4, h * 0.3, w * 0.6, h * 0.65), fill=(40, 80, 160))
    draw.line((w * 0.4, h * 0.35, w * 0.25, h * 0.55), fill=(200, 150, 120), width=3)
    draw.line((w * 0.6, h * 0.35, w * 0.75, h * 0.55), fill=(200, 150, 120), width=3)
    draw.rectangle((w * 0.42, h * 0.65, w * 0.58, h * 0.95), fill=(60, 60, 60))
    return picture

"""The container set-up, as far as it runs without Docker: the entry point's commands as plain commands on
this machine, compose.yaml's services and settings, and the Dockerfile's references."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from settings import Settings
from tests.support import ROOT, ManagedProcess, free_port, http_json, studio_env, wait_for

ENTRYPOINT = ROOT / "scripts" / "entrypoint.sh"
PASSWORD = "correct horse battery"


@pytest.fixture
def env(tmp_path):
    """A studio of its own in a temporary folder (SQLite, files), the entry point running this interpreter."""
    env = studio_env(tmp_path / "data", tmp_path / "models", PYTHON=sys.executable)
    for name in ("STUDIO_DATABASE_URL", "STUDIO_BROKER_URL", "STUDIO_FILES_DIR", "STUDIO_SECRET_KEY", "STUDIO_HOST",
                 "STUDIO_PORT", "STUDIO_AUTH", "CUDA_VISIBLE_DEVICES", "GPU_LOCK_DIR"):
        env.pop(name, None)
    return env


def entrypoint(env, *args, input=None, timeout=120):
    return subprocess.run([str(ENTRYPOINT), *args], env=env, input=input, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_check_and_users_pass_through(env):
    result = entrypoint(env, "check")
    assert result.returncode == 0 and "Everything is consistent." in result.stdout, result.stderr

    result = entrypoint(env, "users", "add", "admin", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
    assert result.returncode == 0 and "added admin (admin)" in result.stdout, result.stderr
    result = entrypoint(env, "users", "list")
    assert result.returncode == 0 and re.search(r"^admin\s+admin\s+active", result.stdout, re.M), result.stdout
    result = entrypoint(env, "users", "token", "admin")
    assert result.returncode == 0 and "studio_" in result.stdout
    assert entrypoint(env, "users", "disable", "nobody").returncode != 0

    result = entrypoint(env, "echo", "any", "other", "command")
    assert result.stdout == "any other command\n"


def test_web_migrates_serves_health_and_stops(env, tmp_path):
    port = free_port()
    # Listening on every address, it asks for sign-in: with nobody who can sign in, it says what to do.
    refused = entrypoint(env, "web", "--port", str(port))
    assert refused.returncode != 0 and "python app.py users add NAME --role admin" in refused.stderr
    assert entrypoint(env, "users", "add", "admin", "--role", "admin", "--password-stdin", input=PASSWORD + "\n").returncode == 0

    health_env = dict(env, STUDIO_PORT=str(port))
    assert entrypoint(health_env, "health").returncode != 0  # nothing listens yet
    web = ManagedProcess([str(ENTRYPOINT), "web", "--port", str(port)], env, tmp_path / "web.log", ROOT)
    try:
        def healthy():
            if not web.alive():
                raise RuntimeError(f"the web process exited:\n{web.output()[-3000:]}")
            try:
                status, body = http_json("GET", f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            except OSError:
                return None
            return body if status == 200 else None

        body = wait_for(healthy, 90, 0.25, "the web process")
        assert body["workers"] == []  # --no-worker: workers are containers of their own
        assert entrypoint(health_env, "health").returncode == 0
        # Everything else needs a signed-in user.
        assert http_json("GET", f"http://127.0.0.1:{port}/api/v1/assets")[0] == 401
        # The entry point became the web process (exec), so a container's SIGTERM reaches it.
        os.kill(web.pid, signal.SIGTERM)
        assert web.process.wait(30) == 0
    finally:
        web.stop()
    assert entrypoint(health_env, "health").returncode != 0


def test_web_waits_for_the_database_then_says_so(env):
    unreachable = dict(env, STUDIO_DATABASE_URL=f"postgresql+psycopg://studio@127.0.0.1:{free_port()}/studio",
                       DB_WAIT_SECONDS="0")
    result = entrypoint(unreachable, "web")
    assert result.returncode == 1
    assert "the database could not be migrated" in result.stderr and "STUDIO_DATABASE_URL" in result.stderr


FAKE_NVIDIA_SMI = """#!/bin/sh
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"
"""
# Stands in for the worker: says which GPU it was given, then runs as long as a worker would.
FAKE_PYTHON = """#!/bin/sh
echo "worker on GPU $CUDA_VISIBLE_DEVICES: $*"
exec sleep "${FAKE_WORKER_SECONDS:-120}"
"""


def test_scaled_workers_take_a_gpu_each(env, tmp_path):
    """docker compose up --scale worker=3 on a machine of two GPUs: each worker its own, the third waits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvidia-smi", FAKE_NVIDIA_SMI), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    worker_env = dict(env, PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python"),
                      GPU_LOCK_DIR=str(tmp_path / "gpu-locks"))
    workers = []
    try:
        for index in range(3):
            workers.append(ManagedProcess([str(ENTRYPOINT), "worker"], worker_env, tmp_path / f"worker{index}.log", ROOT))
            wait_for(lambda: "worker on GPU" in workers[-1].output() or "waiting" in workers[-1].output(), 20, 0.1,
                     f"worker {index}")
        first, second, third = (w.output() for w in workers)
        assert "worker on GPU 0: app.py worker" in first and "worker on GPU 1: app.py worker" in second
        assert "each of the 2 GPUs has a worker; waiting" in third and "worker on GPU" not in third
        workers[0].stop()  # its GPU is free again
        wait_for(lambda: "worker on GPU 0" in workers[2].output(), 20, 0.2, "the third worker to take GPU 0")
    finally:
        for worker in workers:
            worker.stop()
    # CUDA_VISIBLE_DEVICES given: no claim, the worker takes what it was told.
    told = entrypoint(dict(worker_env, CUDA_VISIBLE_DEVICES="1", FAKE_WORKER_SECONDS="0"), "worker")
    assert told.stdout == "worker on GPU 1: app.py worker\n" and "takes GPU" not in told.stderr


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} and ${NAME:?error}, as if .env gave every required variable."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m[2], value)
    return re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: f"test-{m[1].lower()}", value)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def service_env(service: dict) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: interpolate(str(value)) for name, value in environment.items()}


def test_compose_services_and_settings(compose, monkeypatch):
    services = compose["services"]
    assert {"web", "worker", "redis", "postgres"} <= set(services)
    fields = {name.upper() for name in Settings.model_fields}
    for name, service in services.items():
        env = service_env(service)
        unknown = sorted(key for key in env if key.startswith("STUDIO_") and key[len("STUDIO_"):] not in fields)
        assert not unknown, f"{name}: not settings: {unknown}"
        if any(key.startswith("STUDIO_") for key in env):  # the values parse as settings too
            for key in [k for k in os.environ if k.startswith("STUDIO_")]:
                monkeypatch.delenv(key)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            settings = Settings(_env_file=None)
            assert settings.auth_required and not settings.embedded_worker
            assert settings.broker == "redis://redis:6379/0"
            assert settings.database.startswith("postgresql+psycopg://studio:") and "@postgres:5432/" in settings.database
            assert settings.secret_key and settings.secret_key in env["STUDIO_SECRET_KEY"]

    web, worker, redis, postgres = (services[n] for n in ("web", "worker", "redis", "postgres"))
    # The secret comes from .env: compose refuses to start without it.
    raw_web_env = web["environment"]
    assert re.fullmatch(r"\$\{STUDIO_SECRET_KEY:\?[^}]+\}", raw_web_env["STUDIO_SECRET_KEY"])
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert service_env(postgres)["POSTGRES_PASSWORD"] in service_env(web)["STUDIO_DATABASE_URL"]

    # One file store, mounted where every studio process looks for it.
    for service in (web, worker):
        files_dir = service_env(service)["STUDIO_FILES_DIR"]
        assert any(v.split(":")[0] == "files" and v.split(":")[1] == files_dir for v in service["volumes"])
    assert "files" in compose["volumes"]

    # Entry-point commands that exist; the workers take the GPUs and name themselves per container.
    assert web["command"] == ["web"] and worker["command"] == ["worker"]
    assert "7860" in web["ports"][0]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "%h" in service_env(worker)["STUDIO_WORKER_NAME"]
    lock_dir = service_env(worker)["GPU_LOCK_DIR"]
    assert any(v.split(":")[1] == lock_dir for v in worker["volumes"])
    assert "GPU_LOCK_DIR" in ENTRYPOINT.read_text()
    assert "deploy" not in web  # the web process needs no GPU


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_refers_to_what_exists():
    instructions = dockerfile_instructions()
    first = lambda name: next(arg for op, arg in instructions if op == name)  # noqa: E731
    workdir = Path(first("WORKDIR"))
    assert ("COPY", ". .") in instructions  # the repository lands in WORKDIR

    def in_repo(path: str) -> Path:
        return ROOT / Path(path).relative_to(workdir)

    entry = json.loads(first("ENTRYPOINT"))
    script = in_repo(entry[0])
    assert script == ENTRYPOINT and script.is_file() and os.access(script, os.X_OK)
    subcommands = re.findall(r"^\s{4}([\w |]+)\)$", ENTRYPOINT.read_text(), re.M)
    known = {word.strip() for case in subcommands for word in case.split("|")}
    assert {"web", "worker", "check", "users", "health"} <= known
    assert json.loads(first("CMD"))[0] in known
    health = first("HEALTHCHECK")
    command = json.loads(health.split("CMD", 1)[1])
    assert in_repo(command[0]) == ENTRYPOINT and command[1] == "health"
    assert "/api/v1/health" in ENTRYPOINT.read_text()

    assert first("EXPOSE") == "7860" and first("VOLUME") == "/data"
    assert first("USER") not in ("root", "0")
    # torch from PyTorch's CUDA index at the version requirements.txt pins, before the requirements.
    run = " ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(r"^torch==\S+$", (ROOT / "requirements.txt").read_text(), re.M)
    assert run.index('--index-url "$TORCH_INDEX_URL"') < run.index("pip install -r requirements.txt")
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", (ROOT / "Dockerfile").read_text())
    for path in shlex.split(first("COPY")):
        assert (ROOT / path).exists()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and not {"scripts", "app.py", "storage", "engine", "tasks", "ui"} & set(ignored)

#!/usr/bin/env bash
# The container's entry point (see Dockerfile and compose.yaml); it runs the same outside a container.
#
#   web      migrate the database (waiting for it to answer), then the web process alone:
#            python app.py --host 0.0.0.0 --no-worker [ARGS]; workers are their own containers
#   worker   python app.py worker [ARGS]: queues and name from STUDIO_WORKER_QUEUES, STUDIO_WORKER_NAME;
#            with GPU_LOCK_DIR set, first claims a GPU no other worker of this machine has
#   check    python app.py check [ARGS]: rows against stored files (--fix repairs what is safe)
#   users    python app.py users ARGS: add NAME --role admin, list, token NAME, ...
#   models, styles   the same commands of app.py
#   health   exit 0 when the web process answers GET /api/v1/health (the image's HEALTHCHECK)
#   anything else runs as a command (e.g. bash)
#
# Settings are STUDIO_* environment variables (settings.py). PYTHON picks the interpreter (default python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

migrate() {
    # Compose starts the database beside the web process: wait for it (DB_WAIT_SECONDS, default 60).
    local deadline=$((SECONDS + ${DB_WAIT_SECONDS:-60})) output
    until output=$("$PYTHON" -c 'from settings import Settings
from storage.db import Database
Database(Settings().database).migrate()' 2>&1); do
        if ((SECONDS >= deadline)); then
            printf '%s\nentrypoint: the database could not be migrated (above); is STUDIO_DATABASE_URL right?\n' "$output" >&2
            exit 1
        fi
        echo "entrypoint: waiting for the database: $(tail -n 1 <<<"$output")" >&2
        sleep 2
    done
}

claim_gpu() {
    # Docker gives every replica of a service the same GPUs (docker compose up --scale worker=N), so each
    # worker claims the first GPU no other one holds: a lock in GPU_LOCK_DIR (a folder the workers of one
    # machine share), held by the worker process for its whole life. Off when CUDA_VISIBLE_DEVICES is set.
    [[ -n "${GPU_LOCK_DIR:-}" && -z "${CUDA_VISIBLE_DEVICES:-}" ]] || return 0
    command -v nvidia-smi >/dev/null || return 0
    local count index lock
    count=$(nvidia-smi --list-gpus | grep -c '^GPU' || true)
    ((count > 0)) || return 0
    mkdir -p "$GPU_LOCK_DIR"
    while :; do
        for ((index = 0; index < count; index++)); do
            exec {lock}>"$GPU_LOCK_DIR/gpu-$index.lock"
            if flock --nonblock "$lock"; then
                export CUDA_VISIBLE_DEVICES=$index
                echo "entrypoint: this worker takes GPU $index of $count" >&2
                return 0
            fi
            exec {lock}>&-
        done
        echo "entrypoint: each of the $count GPUs has a worker; waiting for one to stop" >&2
        sleep 5
    done
}

subcommand="${1:-web}"
shift || true
case "$subcommand" in
    web)
        migrate
        exec "$PYTHON" app.py --host 0.0.0.0 --no-worker "$@"
        ;;
    worker)
        claim_gpu
        exec "$PYTHON" app.py worker "$@"
        ;;
    check | users | models | styles)
        exec "$PYTHON" app.py "$subcommand" "$@"
        ;;
    health)
        exec "$PYTHON" -c 'import os, sys, urllib.request
port = os.environ.get("STUDIO_PORT", "7860")
url = f"http://127.0.0.1:{port}/api/v1/health"
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    sys.exit(f"{url}: {exc}")'
        ;;
    *)
        exec "$subcommand" "$@"
        ;;
esac

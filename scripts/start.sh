#!/usr/bin/env bash
# Install the studio into .venv and start it on the embedded defaults (SQLite, embedded broker and worker).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
exec .venv/bin/python app.py "$@"

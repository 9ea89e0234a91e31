#!/usr/bin/env bash
# Install the studio into .venv and start it on the embedded defaults (SQLite, embedded broker and worker).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
# rembg's matting code (pymatting) is compiled by numba on its first import: over a minute on two cores.
# Compile it once here, into the venv's cache, not during the first background removal a user asks for.
.venv/bin/python -c "import rembg"
exec .venv/bin/python app.py "$@"

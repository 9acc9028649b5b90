# The two commands of a fresh machine: `make demo` (install + the main job, offline) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MUJOCO_GL ?= egl
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: install demo test test-fast lint

install:
	bash scripts/install.sh

demo: install
	$(VENV)/ensemble demo

lint: install
	$(VENV)/ruff check .
	$(VENV)/lint-imports

test: lint
	$(VENV)/python -m pytest -q

test-fast: install
	$(VENV)/python -m pytest -q -m "not slow and not ray"

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

# A GSM-Symbolic training-split problem (never an evaluation one) whose results the calculator cannot
# compute (`13 balls * €15/ball =`): the numeric verifier chooses their digits.
QUESTION ?= There are currently 13 orange balls, 27 yellow balls, and 19 red balls in the shop. orange balls cost €15, yellow balls cost €6 and red balls cost €4. How much will the shop have received after all the balls are sold?

# The main job: the math task offline. The first time (~80 min on 2 cores) it fine-tunes SmolLM2-135M on
# GSM-Symbolic training problems and trains the two verifiers on references, perturbations and the
# fine-tuned LM's own samples; then it solves one problem with the LM guided by the verifier ensemble
# and shows the rounds.
demo: install
	@$(VENV)/python -c "from ensemble.models import find_project_checkpoint as f; import sys; sys.exit(0 if f('generators/smollm2-gsm') else 1)" \
		|| $(VENV)/ensemble train generator
	@$(VENV)/python -c "from ensemble.models import find_project_checkpoint as f; import sys; sys.exit(0 if f('verifiers/gsm-minilm') and f('verifiers/gsm-numeric') else 1)" \
		|| $(VENV)/ensemble train verifiers
	$(VENV)/ensemble run math "$(QUESTION)"

lint: install
	$(VENV)/ruff check .
	$(VENV)/lint-imports

test: lint
	$(VENV)/python -m pytest -q

test-fast: install
	$(VENV)/python -m pytest -q -m "not slow and not ray"

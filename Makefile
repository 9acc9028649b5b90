# The two commands of a fresh machine: `make demo` (install + the main job, offline) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MUJOCO_GL ?= egl
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: install demo train-full test test-fast lint

install:
	bash scripts/install.sh

# A GSM-Symbolic training-split problem (its template is never an evaluation one) whose results the
# calculator cannot compute (`13 balls * €15/ball =`): the verifiers choose their digits.
QUESTION ?= There are currently 13 orange balls, 27 yellow balls, and 19 red balls in the shop. orange balls cost €15, yellow balls cost €6 and red balls cost €4. How much will the shop have received after all the balls are sold?
THREADS ?= 2

# The main job: the math task offline, a first answer within minutes. The generator is SmolLM2-135M-Instruct
# as packaged (untuned, one worked example in the prompt; converted once from its GGUF, ~40 s). The first
# time, the two verifiers are trained on GSM-Symbolic training templates from references and perturbed
# references only (progress bars; the numeric one on 600 problems in ~30 s, the MiniLM one on 100 problems
# in a few minutes: its sentence embeddings are the cost); then the LM, guided token by token by the verifier
# ensemble, solves one problem and shows the rounds where a verifier moved a token.
# The full training (the verifiers also learn from the LM's own samples, ~40 min): `make train-full`.
demo: install
	@$(VENV)/python -c "from ensemble.models import find_project_checkpoint as f; import sys; sys.exit(0 if f('verifiers/gsm-numeric') else 1)" \
		|| $(VENV)/ensemble train verifiers --only numeric_verifier --lm none --threads $(THREADS)
	@$(VENV)/python -c "from ensemble.models import find_project_checkpoint as f; import sys; sys.exit(0 if f('verifiers/gsm-minilm') else 1)" \
		|| $(VENV)/ensemble train verifiers --only minilm_verifier --lm none --n-problems 100 --threads $(THREADS)
	$(VENV)/ensemble run math "$(QUESTION)" --threads $(THREADS)

# The full training: both verifiers also learn from the default generator's own right and wrong samples
# (80 training problems x 4 samples each, plus 12 held out; progress bars with ETA). Overwrites the
# demo's verifiers. `ensemble train generator` (LoRA, ~28 min wall on a loaded machine, resumable) tunes a
# copy of the LM, `--lora-rank 0` fully fine-tunes one (~40 min); neither is the default generator: the full
# fine-tune lost skill outside GSM-Symbolic, the LoRA copy kept it but did not beat the untuned LM on the
# evaluation templates (README, math section).
train-full: install
	$(VENV)/ensemble train verifiers --threads $(THREADS)

lint: install
	$(VENV)/ruff check .
	$(VENV)/lint-imports

test: lint
	$(VENV)/python -m pytest -q

test-fast: install
	$(VENV)/python -m pytest -q -m "not slow and not ray"

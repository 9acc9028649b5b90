"""Grade-school math: a causal LM guided token by token by verifiers (GSM8K format).

Everything specific to the task lives in this folder; this file only registers it and its components
(lazy entry points, nothing heavy is imported).
"""

from ensemble.registry import SCORERS, TASKS

TASKS.register("math", "ensemble.tasks.math.task:MathTask", "grade-school math (GSM8K format; GSM-Symbolic or a GSM8K JSONL), exact match", tiny={"source": "gsm_symbolic"})
SCORERS.register("minilm_verifier", "ensemble.tasks.math.minilm_verifier:MiniLMVerifier", "math verifier: MiniLM embeddings of question + solution step, MLP head, log p(correct)", tiny={"checkpoint": None, "encoder": "tiny-text-encoder"})
SCORERS.register("numeric_verifier", "ensemble.tasks.math.numeric_verifier:NumericVerifier", "math verifier: numeric-consistency features + hashed n-grams, logistic, log p(correct)", tiny={"checkpoint": None})

"""Numeric-consistency verifier: logistic regression on numeric features + hashed abstract n-grams.

A question–solution classifier that needs no neural encoder: it sees whether the numbers of a partial
solution come from the question or earlier results (digit by digit, while a number is being typed),
whether arithmetic and the final answer are consistent, and uni/bigrams of the solution with numbers
replaced by those tags (see :mod:`ensemble.tasks.math.verifiers.numeric_features`). Trained by
``ensemble train verifiers``; scores are ``log p(correct)``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.tasks.math.verifiers.checkpoint import DEFAULT_CHECKPOINTS, load_checkpoint
from ensemble.tasks.math.verifiers.numeric_features import N_FEATURES, features, question_numbers


class NumericModel(torch.nn.Module):
    """``logit = w · features + b`` over ``N_FEATURES`` inputs."""

    def __init__(self, n_features: int = N_FEATURES) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n_features]`` → ``[B]`` logits."""
        return self.linear(x).squeeze(-1)


def featurise(question: str, solutions: list[str]) -> torch.Tensor:
    """``[len(solutions), N_FEATURES]`` features of each solution for ``question``."""
    qnums = question_numbers(question)
    if not solutions:
        return torch.zeros(0, N_FEATURES)
    return torch.stack([features(question, s, qnums) for s in solutions])


def rates_numbers(solutions: list[str]) -> bool:
    """Whether the candidate solutions differ in a number: some candidate's text after their common prefix
    holds a digit. Where they differ only in words, the numeric features barely change, so the verifier has
    nothing to say."""
    if len(solutions) < 2:
        return True
    n = min(len(s) for s in solutions)
    first = solutions[0]
    common = next((i for i in range(n) if any(s[i] != first[i] for s in solutions)), n)
    return any(ch.isdigit() for s in solutions for ch in s[common:])


class NumericVerifier(Scorer):
    """Rates (question, partial solution) pairs by ``log p(correct)`` from numeric features.

    Args:
        checkpoint: a project checkpoint name or a directory (default ``verifiers/gsm-numeric``);
            ``None`` builds an untrained (seeded) model — for contract tests and smoke runs.
        model: an already built :class:`NumericModel` (tests); overrides ``checkpoint``.
        device: ignored beyond "cpu" (the model is a single linear layer).
        abstain: say "nothing to say" (:attr:`~ensemble.contracts.ScoreOutput.abstain`) when the candidates
            do not differ in a number (:func:`rates_numbers`), so an ensemble combines only the scorers that
            spoke; off by default (the verifier then rates every round, as before).
    """

    modality = "text"

    def __init__(
        self, checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINTS["numeric_verifier"],
        model: NumericModel | None = None, device: str = "cpu", abstain: bool = False,
    ) -> None:
        self.abstain = abstain
        if model is None and checkpoint is None:
            torch.manual_seed(0)
            model = NumericModel()
        if model is None:
            config, state, path = load_checkpoint(checkpoint, "numeric_verifier")
            if int(config["n_features"]) != N_FEATURES:
                raise ValueError(
                    f"{path} was trained on {config['n_features']} features, but this version computes "
                    f"{N_FEATURES} (the feature set changed); retrain it with "
                    "`ensemble train verifiers --only numeric_verifier`"
                )
            model = NumericModel(int(config["n_features"]))
            model.load_state_dict(state)
        self.model = model.eval()

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``log p(correct | question, solution)`` per candidate solution text, ``[N]``."""
        self.check_grad_request(need_grad)
        question = context["question"] if isinstance(context, dict) else str(context)
        candidates = list(candidates)
        with torch.no_grad():
            logits = self.model(featurise(question, candidates))
        return ScoreOutput(scores=F.logsigmoid(logits), abstain=self.abstain and not rates_numbers(candidates))

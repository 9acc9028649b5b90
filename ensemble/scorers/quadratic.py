"""An analytic scorer: score(x) = −scale · ‖x − target‖². Differentiable, exact, instant.

It is no pre-trained model: it exists to test loop logic (where the optimum is known) and to measure
the fixed overhead of a round (``ensemble bench``), as a trivial scorer.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ensemble.contracts import ScoreOutput, Scorer, check_vector


class QuadraticScorer(Scorer):
    """Negative squared distance to a target vector.

    Args:
        target: the optimum (broadcast against each candidate); ``context["target"]`` overrides it.
        scale: multiplier of the squared distance.
        delay_s: optional sleep per call, to emulate a model of known cost in benchmarks.
    """

    differentiable = True
    modality = "vector"

    def __init__(self, target: Any = (0.0, 0.0), scale: float = 1.0, delay_s: float = 0.0) -> None:
        self.target = torch.as_tensor(target, dtype=torch.float32)
        self.scale = float(scale)
        self.delay_s = float(delay_s)

    def check_context(self, context: Any) -> None:
        """``context["target"]``, if given, must be as many finite numbers as the default target."""
        check_vector(context, "target", self.target.numel())

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``[N]`` scores of ``[N, ...]`` candidates; gradients ``−2·scale·(x − target)``."""
        if self.delay_s:
            time.sleep(self.delay_s)
        x = torch.as_tensor(candidates, dtype=torch.float32)
        target = self.target
        if isinstance(context, dict) and "target" in context:
            target = torch.as_tensor(context["target"], dtype=torch.float32)
        diff = x - target.to(x.device)
        scores = -self.scale * diff.flatten(1).pow(2).sum(1)
        grad = -2.0 * self.scale * diff if need_grad else None
        return ScoreOutput(scores=scores.detach().cpu(), grad=grad)

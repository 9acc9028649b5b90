"""A test-only task for the Ray tier: find the point each item names (its context's target).

Built remotely by entry point ``"ray_toy:ToyTargetTask"`` (``tests/`` is on the workers' path).
"""

from __future__ import annotations

from typing import Any

import torch

from ensemble.contracts import Item, ScoreOutput, Scorer, Task


class ToyTargetTask(Task):
    """Items are 2-D targets; the answer is correct when the consensus output is within ``tol``."""

    name = "toy_target"

    def __init__(self, tol: float = 0.5) -> None:
        self.tol = tol

    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        gen = torch.Generator().manual_seed(seed)
        targets = torch.rand((n, 2), generator=gen) * 2 - 1
        return [Item(id=f"toy-{i}", context={"target": t.tolist()}, target=t.tolist()) for i, t in enumerate(targets)]

    def answer(self, output: Any, item: Item) -> list[float]:
        return torch.as_tensor(output).flatten().tolist()

    def metric(self, answer: Any, item: Item) -> float:
        dist = torch.dist(torch.as_tensor(answer), torch.as_tensor(item.target))
        return float(dist <= self.tol)


class BrokenScorer(Scorer):
    """Fails every call with a multi-line error (a server fault the endpoint must not leak)."""

    modality = "vector"

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        raise RuntimeError("scorer weights are corrupt\n  File \"/secret/path/model.py\", line 3\npid=1234")


class HangingScorer(Scorer):
    """Answers like a quadratic scorer until ``context["hang"]`` is true, then never returns."""

    modality = "vector"

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        import time

        if isinstance(context, dict) and context.get("hang"):
            time.sleep(3600)
        x = torch.as_tensor(candidates, dtype=torch.float32)
        return ScoreOutput(scores=-x.pow(2).sum(1))

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


class _Round:
    """A round record as the stream sends it."""

    def __init__(self, index: int) -> None:
        self.index = index

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.index}


class SlowSolver:
    """A solver whose run takes ``rounds`` × ``seconds``; its callback can stop it (as consensus loops do)."""

    def __init__(self, rounds: int, seconds: float) -> None:
        self.rounds, self.seconds = rounds, seconds

    def systems(self) -> list[str]:
        return ["slow"]

    def solve(self, item: Item, system: str, seed: int = 0, callback: Any = None) -> dict[str, Any]:
        import time

        from ensemble.contracts import make_row

        t0, done = time.perf_counter(), 0
        for r in range(self.rounds):
            time.sleep(self.seconds)
            done = r + 1
            if callback is not None and callback(_Round(r), None):
                break
        return make_row(item, system, "slow", seed, done, 1.0, time.perf_counter() - t0)


class SlowSpec:
    """A picklable stand-in for :class:`~ensemble.contracts.SolverSpec` building a :class:`SlowSolver`."""

    task = "slow"

    def __init__(self, rounds: int = 300, seconds: float = 0.1) -> None:
        self.rounds, self.seconds = rounds, seconds

    def build(self) -> SlowSolver:
        return SlowSolver(self.rounds, self.seconds)

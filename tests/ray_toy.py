"""A test-only task for the Ray tier: find the point each item names (its context's target).

Built remotely by entry point ``"ray_toy:ToyTargetTask"`` (``tests/`` is on the workers' path).
"""

from __future__ import annotations

from typing import Any

import torch

from ensemble.contracts import Item, Task


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


class ToyEvalSpec:
    """The shape of ``ensemble.evaluation.EvalSpec`` for the toy task: systems, hash per (system, beam)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.device = "cpu"

    def systems(self) -> list[str]:
        return ["a", "ensemble"]

    def check_systems(self, systems: list[str]) -> None:
        bad = [s for s in systems if s not in self.systems()]
        if bad:
            raise ValueError(f"unknown system(s) {bad}")

    def hash(self, system: str, beam: int) -> str:
        from ensemble.results import config_hash

        return config_hash({"toy": True, "system": system, "beam": beam, "delay": self.delay_s})


class ToySolver:
    """Solves toy items with a real consensus loop (sampling generator, quadratic scorers), like
    ``MathEvaluator.solve(item, system, beam, seed)`` does for math."""

    def __init__(self, spec: ToyEvalSpec) -> None:
        from ensemble.registry import GENERATORS, SCORERS

        self.spec = spec
        self.task = ToyTargetTask()
        self.generator = GENERATORS.make("sampling", dim=2, n_candidates=16, rounds=3)
        self.scorers = {"a": SCORERS.make("quadratic", delay_s=spec.delay_s),
                        "b": SCORERS.make("quadratic", delay_s=spec.delay_s)}

    def solve(self, item: Item, system: str, beam: int, seed: int = 0) -> dict[str, Any]:
        from ensemble.aggregate import ScorerEnsemble
        from ensemble.config import ConsensusConfig
        from ensemble.consensus import run_consensus

        names = ["a"] if system == "a" else ["a", "b"]
        ensemble = ScorerEnsemble({n: self.scorers[n] for n in names})
        res = run_consensus(self.generator, ensemble, item.context, ConsensusConfig(seed=seed))
        answer = self.task.answer(res.output, item)
        return {"item_id": item.id, "config_hash": self.spec.hash(system, beam), "seed": seed, "system": system,
                "beam": beam, "answer": answer, "correct": self.task.metric(answer, item)}

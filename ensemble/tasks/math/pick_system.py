"""The solution-level systems of the math task: ``pick_<member>@K``.

``pick_<member>@K`` samples K whole solutions (:mod:`ensemble.tasks.math.sampler`, row 0 the LM's greedy
one) and lets ``<member>`` pick among them (:mod:`ensemble.tasks.math.pick`): ``pick_lm`` — the LM's own
majority vote over the answers (no scorer; self-consistency); ``pick_<scorer>`` — that one scorer;
``pick_ensemble`` — every scorer, z-scored, calibrated, summed. All systems of one problem and seed share the
same K samples (drawn once, kept for the next system), so their rows are paired and the sampling is paid once;
each row's seconds are what the system costs on its own — the sampling (``extras.sample_s``, also when another
system of the problem drew the samples) plus its own rating and pick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ensemble.tasks.math.pick import COMBINES

PICK_PREFIX = "pick_"
"""Base-name prefix of the solution-level systems (``pick_ensemble@16``: K = 16 samples)."""


def is_pick(base: str) -> bool:
    """Whether ``base`` names a solution-level system."""
    return base.startswith(PICK_PREFIX)


def member(base: str) -> str:
    """``"pick_ensemble"`` → ``"ensemble"``."""
    return base[len(PICK_PREFIX):]


@dataclass
class PickSpec:
    """Settings of the solution-level systems (part of their config hash).

    Attributes:
        temperature: sampling temperature of the K − 1 sampled solutions (row 0 is greedy).
        top_p: nucleus mass of the sampling.
        combine: ``"vote"`` (rating-weighted vote over answers) or ``"best"`` (the best-rated solution).
        per_char: scorers whose whole-solution rating is divided by the solution's length (an LM's
            log-probability of the text).
        scales: calibration scales per system member: ``{"ensemble": {scorer: c, …}, "<scorer>": {scorer: c}}``
            (fitted on development problems by :func:`ensemble.tasks.math.pick.fit_scale`; a missing one: 1).
    """

    temperature: float = 0.7
    top_p: float = 1.0
    combine: str = "vote"
    per_char: tuple[str, ...] = ("lm_scorer",)
    scales: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"pick combine={self.combine!r} is not one of {', '.join(COMBINES)}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"pick temperature={self.temperature} must be > 0 and top_p={self.top_p} in (0, 1]")
        self.per_char = tuple(self.per_char)


class PickRunner:
    """Runs ``pick_<member>@K`` systems for a :class:`~ensemble.tasks.math.solver.MathEvaluator`.

    Args:
        evaluator: the evaluator (its LM, task, scorers and spec).
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator
        self.spec = PickSpec(**evaluator.spec.pick)
        self._sampler: Any = None
        self._last: tuple[Any, list[str], float] | None = None

    def sampler(self) -> Any:
        """The batched sampler over the evaluator's LM and the task's hooks."""
        if self._sampler is None:
            from ensemble.tasks.math.sampler import BatchSampler

            gen = self.evaluator.generator
            hooks = self.evaluator.task.generator_hooks(gen.tokenizer)
            self._sampler = BatchSampler(gen.model, gen.tokenizer, hooks["prompt_fn"], hooks["force_fn"],
                                         hooks["stop_fn"], self.evaluator.task.stop_strings, device=self.evaluator.spec.device)
        return self._sampler

    def samples(self, item: Any, k: int, seed: int) -> tuple[list[str], float]:
        """The K solutions of ``item`` for ``seed`` (drawn once per item, seed and K) and the seconds drawing took."""
        from ensemble.eval.seeds import run_seed
        from ensemble.tasks.math.sampler import SampleConfig

        key = (item.id, str(item.context), k, seed)
        if self._last is None or self._last[0] != key:
            config = SampleConfig(k=k, temperature=self.spec.temperature, top_p=self.spec.top_p, greedy_first=True,
                                  max_new_tokens=int(self.evaluator.spec.token.get("max_new_tokens", 256)))
            start = time.perf_counter()
            solutions = self.sampler().sample(item.context, config, seed=run_seed(seed, item))
            self._last = (key, solutions, time.perf_counter() - start)
        return self._last[1], self._last[2]

    def ensemble(self, name: str) -> Any:
        """The :class:`~ensemble.aggregate.ScorerEnsemble` of member ``name`` over whole-solution raters."""
        from ensemble.aggregate import ScorerEnsemble
        from ensemble.config import EnsembleConfig
        from ensemble.tasks.math.pick import SolutionRater

        names = list(self.evaluator.scorers) if name == "ensemble" else [name]
        raters = {n: SolutionRater(self.evaluator.scorers[n], per_char=n in self.spec.per_char) for n in names}
        weights = dict(self.evaluator.spec.weights) if name == "ensemble" else {}
        return ScorerEnsemble(raters, EnsembleConfig(weights=weights, normalisation="zscore",
                                                     scales=dict(self.spec.scales.get(name, {}))))

    def solve(self, item: Any, base: str, k: int, seed: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """``(output, scorers, extras)`` of ``pick_<member>@k`` on ``item``."""
        from ensemble.tasks.math.pick import consensus_pick, pick

        name = member(base)
        solutions, sample_s = self.samples(item, k, seed)
        answers = [self.evaluator.task.answer(s, item) for s in solutions]
        extras: dict[str, Any] = {"k": k, "sample_s": round(sample_s, 3), "answers": answers,
                                  "distinct_answers": len(set(answers))}
        scorers: dict[str, Any] = {}
        if name == "lm":
            import torch

            index = pick(answers, torch.zeros(len(solutions)), "vote")
        else:
            picked = consensus_pick(self.ensemble(name), item.context, solutions, answers, self.spec.combine)
            index = picked.index
            scorers = {n: {"abstained": int(n in picked.abstained), "ratings": picked.scores.get(n)}
                       for n in ([name] if name != "ensemble" else list(self.evaluator.scorers))}
            extras["total"] = picked.total
        extras.update(picked_index=index, greedy_changed=answers[index] != answers[0])
        return solutions[index], scorers, extras

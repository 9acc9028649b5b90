"""ScorerEnsemble: named scorers + weights + normalisation → Feedback with per-scorer attribution."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ensemble.config import EnsembleConfig
from ensemble.contracts import Proposal, ScoreOutput, Scorer


class EnsembleError(RuntimeError):
    """Raised when too few scorers answered a round."""


@dataclass
class Feedback:
    """The aggregated verdict of the scorers on one proposal.

    Attributes:
        total: ``[N]`` weighted sum of the normalised scores (higher is better).
        scores: raw ``[N]`` scores of every scorer that answered, by name (attribution).
        normalised: the normalised ``[N]`` scores that entered ``total``, by name (times the scorer's
            calibration scale, :attr:`EnsembleConfig.scales`).
        weights: the effective weights used this round (renormalised over the answering scorers so
            they sum to the configured total of the scorers asked this round).
        grad: weighted sum of the scorers' (normalised) gradients, shaped like the candidates, when
            gradients were requested; else ``None``.
        missing: scorers that did not answer this round (error or timeout).
        abstained: scorers that answered "nothing to say" (:attr:`ScoreOutput.abstain`); like missing
            ones they are left out of ``total``, ``scores`` and ``weights``, but they are not failures.
        errors: why each missing scorer is missing.
        latency_s: seconds each answering scorer took.
    """

    total: torch.Tensor
    scores: dict[str, torch.Tensor]
    normalised: dict[str, torch.Tensor]
    weights: dict[str, float]
    grad: torch.Tensor | None = None
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)
    abstained: list[str] = field(default_factory=list)

    @property
    def energy(self) -> torch.Tensor:
        """``[N]`` summed energy (= −total); lower is better."""
        return -self.total

    def best(self) -> int:
        """Index of the candidate with the lowest summed energy."""
        return int(torch.argmin(self.energy).item())

    def scorer_best(self) -> dict[str, int]:
        """Each answering scorer's own favourite candidate."""
        return {name: int(torch.argmax(s).item()) for name, s in self.scores.items()}

    def agreement(self) -> float:
        """Fraction of answering scorers whose favourite is the ensemble's best candidate."""
        favourites = self.scorer_best()
        if not favourites:
            return 0.0
        best = self.best()
        return sum(1 for i in favourites.values() if i == best) / len(favourites)


def normalise(scores: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise one scorer's ``[N]`` scores across candidates.

    Returns:
        ``(normalised [N], scale [N])`` where ``scale`` is what a gradient must be multiplied by to
        stay consistent (1/std for z-score; 1 otherwise — rank gradients are rescaled separately).
    """
    ones = torch.ones_like(scores)
    if how == "none":
        return scores, ones
    if how == "zscore":
        if scores.numel() < 2:
            return scores - scores.mean(), ones
        std = scores.std().clamp_min(1e-8)
        return (scores - scores.mean()) / std, ones / std
    if how == "rank":
        if scores.numel() < 2:
            return torch.zeros_like(scores), ones
        ranks = torch.argsort(torch.argsort(scores)).to(scores.dtype)
        return ranks / (scores.numel() - 1), ones
    raise ValueError(f"unknown normalisation {how!r}")


class ScorerEnsemble:
    """Named scorers with weights and per-scorer normalisation.

    Args:
        scorers: name → scorer (in-process :class:`Scorer` or a remote adapter with ``ascore``).
        config: weights, normalisation, timeout; defaults to the paper's unweighted sum.
    """

    def __init__(self, scorers: Mapping[str, Scorer], config: EnsembleConfig | None = None) -> None:
        if not scorers:
            raise ValueError("a ScorerEnsemble needs at least one scorer")
        self.scorers = dict(scorers)
        self.config = config or EnsembleConfig()
        unknown = set(self.config.weights) - set(self.scorers)
        if unknown:
            raise ValueError(
                f"weights name unknown scorers {sorted(unknown)}; scorers are {sorted(self.scorers)}"
            )
        unknown = set(self.config.scales) - set(self.scorers)
        if unknown:
            raise ValueError(
                f"calibration scales name unknown scorers {sorted(unknown)}; scorers are {sorted(self.scorers)}"
            )

    @property
    def names(self) -> list[str]:
        """Scorer names in insertion order."""
        return list(self.scorers)

    def weight(self, name: str) -> float:
        """Configured weight of ``name`` (1.0 unless set)."""
        return float(self.config.weights.get(name, 1.0))

    async def _call(self, name: str, context: Any, proposal: Proposal) -> tuple[ScoreOutput, float]:
        scorer = self.scorers[name]
        need_grad = proposal.need_grad and getattr(scorer, "differentiable", False)
        start = time.perf_counter()
        coro = scorer.ascore(context, proposal.candidates, need_grad=need_grad)
        out = await asyncio.wait_for(coro, self.config.timeout_s)
        return out, time.perf_counter() - start

    async def ascore(self, context: Any, proposal: Proposal) -> Feedback:
        """Await every scorer (or those ``proposal.scorers`` names) concurrently and aggregate; drop and
        record scorers that fail. A round that asks none of them gets an empty, all-zero feedback."""
        names = self.names if proposal.scorers is None else [n for n in self.names if n in proposal.scorers]
        results = await asyncio.gather(
            *(self._call(n, context, proposal) for n in names), return_exceptions=True
        )
        outputs: dict[str, ScoreOutput] = {}
        errors: dict[str, str] = {}
        latency: dict[str, float] = {}
        n = len(proposal)
        for name, res in zip(names, results, strict=True):
            if isinstance(res, BaseException):
                kind = "timeout" if isinstance(res, TimeoutError | asyncio.TimeoutError) else type(res).__name__
                first = next((ln.strip() for ln in str(res).splitlines() if ln.strip()), "")
                errors[name] = f"{kind}: {first}".rstrip(": ")
                continue
            out, dt = res
            problem = _check_output(out, n)
            if problem:
                errors[name] = problem
                continue
            outputs[name] = out
            latency[name] = dt
        abstained = [name for name, out in outputs.items() if out.abstain]
        if len(outputs) < min(self.config.min_scorers, len(names)):
            detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
            raise EnsembleError(
                f"only {len(outputs)} of {len(names)} scorers answered (min_scorers="
                f"{self.config.min_scorers}): {detail}"
            )
        speaking = {name: out for name, out in outputs.items() if not out.abstain}
        feedback = self._aggregate(speaking, errors, latency, proposal, names)
        feedback.missing = [n for n in feedback.missing if n not in abstained]
        feedback.abstained = abstained
        return feedback

    def score(self, context: Any, proposal: Proposal) -> Feedback:
        """Synchronous :meth:`ascore` (not for use inside a running event loop)."""
        return asyncio.run(self.ascore(context, proposal))

    def _aggregate(
        self,
        outputs: dict[str, ScoreOutput],
        errors: dict[str, str],
        latency: dict[str, float],
        proposal: Proposal,
        asked: list[str],
    ) -> Feedback:
        configured = sum(self.weight(n) for n in asked)
        answered = sum(self.weight(n) for n in outputs)
        factor = configured / answered if answered > 0 else 0.0
        weights = {n: self.weight(n) * factor for n in outputs}
        raw = {n: torch.as_tensor(o.scores, dtype=torch.float32).detach().cpu().flatten() for n, o in outputs.items()}
        normed: dict[str, torch.Tensor] = {}
        total = torch.zeros(len(proposal), dtype=torch.float32)
        grad = None
        for name, scores in raw.items():
            z, scale = normalise(scores, self.config.normalisation)
            calibration = float(self.config.scales.get(name, 1.0))
            z, scale = z * calibration, scale * calibration
            normed[name] = z
            total = total + weights[name] * z
            g = outputs[name].grad
            if proposal.need_grad and g is not None:
                g = torch.as_tensor(g)
                shape = (-1,) + (1,) * (g.dim() - 1)
                if self.config.normalisation == "rank":
                    norms = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
                    g = calibration * g / norms
                else:
                    g = g * scale.to(g.device, g.dtype).view(shape)
                grad = weights[name] * g if grad is None else grad + weights[name] * g.to(grad.device)
        if self.config.standardise_total and total.numel() > 1:
            std = total.std().clamp_min(1e-6)
            total = (total - total.mean()) / std
            grad = None if grad is None else grad / std.to(grad.device, grad.dtype)
        return Feedback(
            total=total,
            scores=raw,
            normalised=normed,
            weights=weights,
            grad=grad,
            missing=[n for n in asked if n not in outputs],
            errors=errors,
            latency_s=latency,
        )


def _check_output(out: Any, n: int) -> str:
    """Empty string when ``out`` is a valid ScoreOutput for ``n`` candidates, else the problem."""
    if not isinstance(out, ScoreOutput):
        return f"returned {type(out).__name__}, expected ScoreOutput"
    scores = torch.as_tensor(out.scores)
    if scores.numel() != n:
        return f"returned {scores.numel()} scores for {n} candidates"
    if not torch.isfinite(scores.float()).all():
        return "returned non-finite scores"
    return ""

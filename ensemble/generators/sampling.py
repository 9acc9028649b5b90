"""The selection rule: sample candidates, execute the argmin of the summed energy (random shooting / CEM).

Each round samples ``n_candidates`` vectors from a Gaussian; the ensemble rates them; the candidate with
the lowest summed energy is kept (random shooting), and with ``method="cem"`` the Gaussian is refitted
to the elite candidates. The robot task's MPC planner applies this rule to action sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ensemble.contracts import Generator, Proposal, check_vector

METHODS = ("random", "cem")


@dataclass
class SamplingState:
    """Picklable state: the sampling distribution, the best candidate so far, the round."""

    mean: torch.Tensor
    std: torch.Tensor
    best: torch.Tensor | None = None
    best_energy: float = float("inf")
    round: int = 0
    seed: int = 0


class SamplingGenerator(Generator):
    """Random shooting or the cross-entropy method over ``dim``-dimensional vectors.

    Args:
        dim: dimension of a candidate.
        n_candidates: candidates sampled per round.
        rounds: rounds before the generator is done.
        method: "random" (fixed distribution, keep the best) or "cem" (refit to the elites).
        elite_frac: fraction of candidates refitted to by CEM.
        init_std: std of the initial Gaussian (mean 0 unless the context gives ``mean``).
        low, high: optional bounds candidates are clipped to.
        min_std: CEM's floor on the std, so the search never collapses.
    """

    update_rule = "selection"

    def __init__(
        self,
        dim: int = 2,
        n_candidates: int = 64,
        rounds: int = 5,
        method: str = "cem",
        elite_frac: float = 0.1,
        init_std: float = 1.0,
        low: float | None = None,
        high: float | None = None,
        min_std: float = 1e-3,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
        if dim < 1 or n_candidates < 1 or rounds < 1 or not 0 < elite_frac <= 1:
            raise ValueError(
                f"need dim, n_candidates, rounds >= 1 and elite_frac in (0, 1]; got dim={dim}, "
                f"n_candidates={n_candidates}, rounds={rounds}, elite_frac={elite_frac}"
            )
        self.dim, self.n, self.rounds, self.method = dim, n_candidates, rounds, method
        self.elite_frac, self.init_std, self.low, self.high, self.min_std = elite_frac, init_std, low, high, min_std

    def check_context(self, context: Any) -> None:
        """``context["mean"]``, if given, must be ``dim`` finite numbers."""
        check_vector(context, "mean", self.dim)

    def init_state(self, context: Any, seed: int) -> SamplingState:
        """Gaussian at ``context["mean"]`` (or 0) with ``init_std``."""
        mean = torch.zeros(self.dim)
        if isinstance(context, dict) and "mean" in context:
            mean = torch.as_tensor(context["mean"], dtype=torch.float32).reshape(self.dim)
        return SamplingState(mean=mean, std=torch.full((self.dim,), float(self.init_std)), seed=seed)

    def propose(self, state: SamplingState, context: Any) -> Proposal:
        """``n_candidates`` samples ``[N, dim]``, deterministic in (seed, round)."""
        gen = torch.Generator().manual_seed(state.seed * 1_000_003 + state.round)
        x = state.mean + state.std * torch.randn((self.n, self.dim), generator=gen)
        if self.low is not None or self.high is not None:
            x = x.clamp(self.low, self.high)
        return Proposal(candidates=x)

    def refine(self, state: SamplingState, proposal: Proposal, feedback: Any) -> SamplingState:
        """Keep the argmin of the summed energy; CEM refits to the elites."""
        energy = feedback.energy
        i = int(torch.argmin(energy))
        best, best_energy = state.best, state.best_energy
        if float(energy[i]) < best_energy:
            best, best_energy = proposal.candidates[i].clone(), float(energy[i])
        mean, std = state.mean, state.std
        if self.method == "cem":
            k = max(1, int(round(self.elite_frac * len(energy))))
            elite = proposal.candidates[torch.argsort(energy)[:k]]
            mean = elite.mean(0)
            std = elite.std(0, unbiased=False).clamp_min(self.min_std) if k > 1 else std * 0.5
        return SamplingState(mean, std, best, best_energy, state.round + 1, state.seed)

    def is_done(self, state: SamplingState) -> bool:
        """Done after ``rounds`` rounds."""
        return state.round >= self.rounds

    def output(self, state: SamplingState) -> torch.Tensor | None:
        """The best candidate found (lowest summed energy)."""
        return state.best

    def describe(self, state: SamplingState, proposal: Proposal, feedback: Any) -> dict[str, Any]:
        """Best energy so far and the distribution's spread."""
        return {"best_energy_so_far": state.best_energy, "std_mean": float(state.std.mean())}

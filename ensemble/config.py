"""Typed configurations of the consensus loop and the scorer ensemble.

Every field has a docstring; validation happens in ``__post_init__`` with a message that says what to
change. The CLI maps its flags onto these dataclasses and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NORMALISATIONS: tuple[str, ...] = ("none", "zscore", "rank")


@dataclass
class EnsembleConfig:
    """How scorer outputs are combined."""

    weights: dict[str, float] = field(default_factory=dict)
    """Per-scorer weight by scorer name; a missing name weighs 1.0 (the paper's unweighted sum)."""

    normalisation: str = "none"
    """Per-scorer normalisation across the candidates of a round: "none" (the paper's sum of raw
    energies), "zscore" (mean 0 / std 1, so one miscalibrated scorer cannot dominate) or "rank"
    (ranks scaled to [0, 1]). Gradients follow: "zscore" divides by the same std, "rank" rescales each
    candidate's gradient to unit norm."""

    scales: dict[str, float] = field(default_factory=dict)
    """Per-scorer calibration by scorer name: each scorer's normalised ratings (and gradients) are multiplied
    by its scale before weighting, so ratings in different units become comparable (a missing name: 1.0).
    Unlike a weight, a scale also sharpens or flattens the scorer's own target distribution in the token
    rule (``softmax(prior + scale·s / T)``). Fitted on development problems (e.g.
    ``ensemble calibrate math``), stored with the ensemble's settings and applied at run time."""

    standardise_total: bool = False
    """Z-score the weighted sum itself across the candidates of a round (mean 0, std 1; its gradient divided
    by the same std), so the ensemble's rating has one scorer's spread however many scorers it sums."""

    timeout_s: float | None = 120.0
    """Seconds to wait for a scorer each call; a scorer that misses it is dropped for that round,
    the remaining weights are renormalised and the record names it, so a hung scorer cannot block a
    loop. ``None`` waits forever (not for served or evaluated runs)."""

    min_scorers: int = 1
    """A round fails (raises) when fewer scorers than this answer."""

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation={self.normalisation!r} is not one of {', '.join(NORMALISATIONS)}"
            )
        for name, w in self.weights.items():
            if not (w >= 0.0):
                raise ValueError(f"weight of scorer {name!r} is {w}; weights must be >= 0")
        for name, c in self.scales.items():
            if not (0.0 <= c < float("inf")):
                raise ValueError(f"scale of scorer {name!r} is {c}; calibration scales must be finite and >= 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s} must be positive (or None to wait forever)")
        if self.min_scorers < 1:
            raise ValueError(f"min_scorers={self.min_scorers} must be at least 1")


@dataclass
class ConsensusConfig:
    """Budget and stopping rule of :func:`ensemble.consensus.run_consensus`."""

    max_rounds: int = 1000
    """Hard budget on rounds (a round = one propose → score → refine)."""

    max_candidates: int | None = None
    """Optional budget on the total number of candidates scored across rounds."""

    agreement: float | None = None
    """Consensus stop: stop once at least this fraction of the answering scorers rank the ensemble's
    best candidate first, for ``patience`` consecutive rounds. ``None`` disables it."""

    tol: float | None = None
    """Convergence stop: stop once the best total energy changes by less than ``tol`` between rounds,
    for ``patience`` consecutive rounds. ``None`` disables it."""

    patience: int = 1
    """Consecutive rounds the agreement / tolerance criterion must hold before stopping."""

    min_rounds: int = 1
    """Never stop by consensus before this many rounds."""

    seed: int = 0
    """Seed of the generator's initial state (and any sampling it does)."""

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds={self.max_rounds} must be at least 1")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"max_candidates={self.max_candidates} must be at least 1 (or None)")
        if self.agreement is not None and not 0.0 < self.agreement <= 1.0:
            raise ValueError(f"agreement={self.agreement} must be in (0, 1] (or None to disable)")
        if self.tol is not None and self.tol < 0:
            raise ValueError(f"tol={self.tol} must be >= 0 (or None to disable)")
        if self.patience < 1:
            raise ValueError(f"patience={self.patience} must be at least 1")
        if self.min_rounds < 1 or self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds={self.min_rounds} must be in [1, max_rounds={self.max_rounds}]")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for config hashes and records)."""
        return asdict(self)

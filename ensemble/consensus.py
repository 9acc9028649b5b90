"""The consensus loop: propose → score (all scorers, concurrently) → aggregate → refine → stop?

One loop serves the three update rules; the generator's ``refine`` is where they differ. Scorers are
awaited concurrently, so the same code runs with in-process scorers or Ray-remote ones.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ensemble.aggregate import Feedback, ScorerEnsemble
from ensemble.config import ConsensusConfig
from ensemble.contracts import Generator

STOP_REASONS = ("generator_done", "max_rounds", "max_candidates", "agreement", "tol", "callback")


@dataclass
class RoundRecord:
    """What happened in one round, with every scorer's own numbers (attribution).

    Attributes:
        round: 0-based round index.
        n_candidates: candidates scored this round.
        best: index of the candidate with the lowest summed energy.
        best_energy: its summed (weighted, normalised) energy.
        scorer_energy: each answering scorer's raw energy (−score) of that best candidate.
        scorer_mean_energy: each answering scorer's mean raw energy over the candidates.
        scorer_best: each answering scorer's own favourite candidate index.
        weights: effective weights this round (renormalised when scorers are missing).
        missing: scorers that did not answer; ``errors`` says why.
        abstained: scorers that answered "nothing to say" (left out of the combination, not failures).
        agreement: fraction of answering scorers whose favourite is ``best``.
        latency_s: seconds per answering scorer; ``duration_s``: the whole round.
        info: generator-specific facts (token chosen, beams, executed action …).
    """

    round: int
    n_candidates: int
    best: int
    best_energy: float
    scorer_energy: dict[str, float]
    scorer_mean_energy: dict[str, float]
    scorer_best: dict[str, int]
    weights: dict[str, float]
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    abstained: list[str] = field(default_factory=list)
    agreement: float = 0.0
    latency_s: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_feedback(cls, index: int, feedback: Feedback, duration: float, info: dict) -> RoundRecord:
        """Build the record of round ``index`` from its feedback."""
        best = feedback.best()
        return cls(
            round=index,
            n_candidates=int(feedback.total.numel()),
            best=best,
            best_energy=float(feedback.energy[best]),
            scorer_energy={n: -float(s[best]) for n, s in feedback.scores.items()},
            scorer_mean_energy={n: -float(s.mean()) for n, s in feedback.scores.items()},
            scorer_best=feedback.scorer_best(),
            weights=dict(feedback.weights),
            missing=list(feedback.missing),
            errors=dict(feedback.errors),
            abstained=list(feedback.abstained),
            agreement=feedback.agreement(),
            latency_s=dict(feedback.latency_s),
            duration_s=duration,
            info=info,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class ConsensusResult:
    """The outcome of :func:`run_consensus`.

    Attributes:
        output: ``generator.output(state)`` after the last round.
        state: the final generator state (picklable; pass it back to resume).
        rounds: one :class:`RoundRecord` per round.
        stop_reason: one of ``STOP_REASONS``.
        n_candidates: candidates scored in total.
        duration_s: wall time of the loop.
    """

    output: Any
    state: Any = field(repr=False)  # KV caches, tensors: formatting them costs seconds (asyncio.run reprs its task)
    rounds: list[RoundRecord]
    stop_reason: str
    n_candidates: int
    duration_s: float


RoundCallback = Callable[[RoundRecord, Any], Any]


class _StopRule:
    """Budget and consensus criteria, evaluated after every round."""

    def __init__(self, config: ConsensusConfig) -> None:
        self.config = config
        self.streak_agree = 0
        self.streak_tol = 0
        self.last_energy: float | None = None

    def check(self, rounds_done: int, candidates: int, record: RoundRecord) -> str | None:
        cfg = self.config
        self.streak_agree = self.streak_agree + 1 if cfg.agreement and record.agreement >= cfg.agreement else 0
        moved = None if self.last_energy is None else abs(record.best_energy - self.last_energy)
        self.streak_tol = self.streak_tol + 1 if cfg.tol is not None and moved is not None and moved < cfg.tol else 0
        self.last_energy = record.best_energy
        if rounds_done >= cfg.max_rounds:
            return "max_rounds"
        if cfg.max_candidates is not None and candidates >= cfg.max_candidates:
            return "max_candidates"
        if rounds_done >= cfg.min_rounds:
            if self.streak_agree >= cfg.patience:
                return "agreement"
            if self.streak_tol >= cfg.patience:
                return "tol"
        return None


async def arun_consensus(
    generator: Generator,
    ensemble: ScorerEnsemble,
    context: Any,
    config: ConsensusConfig | None = None,
    callback: RoundCallback | None = None,
    state: Any = None,
    start_round: int = 0,
) -> ConsensusResult:
    """Run iterative consensus until the generator is done, the budget is spent or the scorers agree.

    Args:
        generator: proposes candidates and applies its update rule.
        ensemble: the scorers, their weights and normalisation.
        context: the task's conditioning, passed to the generator and every scorer.
        config: budget and stopping rule; defaults to :class:`ConsensusConfig`.
        callback: called after every round with ``(record, state)`` (sync or async) — progress,
            streaming, checkpoints. Returning ``True`` stops the loop ("callback").
        state: resume from this state (e.g. a checkpoint) instead of ``generator.init_state``.
        start_round: the index of the first round when resuming.

    Returns:
        A :class:`ConsensusResult` with the output, the final state and one record per round.
    """
    config = config or ConsensusConfig()
    stop = _StopRule(config)
    rounds: list[RoundRecord] = []
    n_candidates = 0
    t0 = time.perf_counter()
    # 1. Initial state (or the resumed one).
    if state is None:
        state = generator.init_state(context, config.seed)
    stop_reason = "generator_done" if generator.is_done(state) else None
    index = start_round
    while stop_reason is None:
        t_round = time.perf_counter()
        # 2. Propose candidates from the current state.
        proposal = generator.propose(state, context)
        # 3. Score them with every scorer, concurrently; 4. aggregate (weights, normalisation).
        feedback = await ensemble.ascore(context, proposal)
        # 5. Refine the state with the generator's update rule.
        state = generator.refine(state, proposal, feedback)
        info = generator.describe(state, proposal, feedback)
        n_candidates += len(proposal)
        record = RoundRecord.from_feedback(index, feedback, time.perf_counter() - t_round, info)
        rounds.append(record)
        index += 1
        # 6. Report the round (progress, streaming, checkpoints).
        if callback is not None:
            verdict = callback(record, state)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is True:
                stop_reason = "callback"
        # 7. Stop? generator finished, budget spent, or the scorers agree.
        if stop_reason is None:
            if generator.is_done(state):
                stop_reason = "generator_done"
            else:
                stop_reason = stop.check(index - start_round, n_candidates, record)
    return ConsensusResult(
        output=generator.output(state),
        state=state,
        rounds=rounds,
        stop_reason=stop_reason,
        n_candidates=n_candidates,
        duration_s=time.perf_counter() - t0,
    )


def run_consensus(*args: Any, **kwargs: Any) -> ConsensusResult:
    """Synchronous :func:`arun_consensus` for scripts and the CLI (not inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_consensus(*args, **kwargs))
    raise RuntimeError("run_consensus() was called inside a running event loop; await arun_consensus() instead")

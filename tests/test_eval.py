"""The one evaluation engine (unit tier): every task through ``ensemble eval TASK`` on tiny models, the
row format, resumption, per-item seeds, failures, and the 95 % interval."""

from __future__ import annotations

import json

import pytest

from ensemble.contracts import ROW_FIELDS, Item


@pytest.mark.parametrize("task, n", [("math", 2), ("robot", 2), ("image", 2), ("video_qa", 2)])
def test_every_task_evaluates_into_one_row_format_and_resumes(tmp_path, task, n):
    from actors.cli import main

    out = tmp_path / f"{task}.jsonl"
    argv = ["eval", task, "--tiny", "--n", str(n), "--seed", "0", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    systems = {r["system"] for r in rows}
    assert len(rows) == n * 2 * len(systems) and len(systems) >= 2
    for row in rows:
        assert set(row) == set(ROW_FIELDS), sorted(row)
        assert 0.0 <= row["metric"] <= 1.0 and row["timings"]["seconds"] > 0
    before = out.read_text()
    assert main(argv) == 0 and out.read_text() == before  # resumed: nothing redone, nothing duplicated
    table = (tmp_path / f"{task}.jsonl.md").read_text()
    assert "95 % CI" in table and all(s.split("@")[0] in table or s in table for s in systems)


def test_failed_items_exit_non_zero_with_the_full_error_and_are_retried(tmp_path, capsys, monkeypatch):
    from actors.cli import main
    from ensemble.tasks.math.solver import MathEvaluator

    out = tmp_path / "math.jsonl"
    real = MathEvaluator.solve

    def flaky(self, item, system, seed=0, callback=None):
        if item.meta["index"] == 1:
            raise RuntimeError("the verifier ran out of patience on purpose")
        return real(self, item, system, seed, callback)

    monkeypatch.setattr(MathEvaluator, "solve", flaky)
    argv = ["eval", "math", "--tiny", "--n", "2", "--systems", "lm@1", "--no-progress", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 2 runs failed" in err and "RuntimeError: the verifier ran out of patience on purpose" in err
    assert len(out.read_text().splitlines()) == 1  # the failed item is not written ...
    monkeypatch.setattr(MathEvaluator, "solve", real)
    assert main(argv) == 0 and len(out.read_text().splitlines()) == 2  # ... so a rerun retries it


def test_unknown_system_lists_the_valid_ones(tmp_path, capsys):
    from actors.cli import main

    assert main(["eval", "robot", "--tiny", "--n", "1", "--systems", "4views-cem", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "valid: 3views-cem" in capsys.readouterr().err


def test_run_seed_is_one_rule_paired_across_systems_and_distinct_across_items():
    from ensemble.eval import run_seed

    a, b = Item("x", None, meta={"index": 0}), Item("y", None, meta={"index": 1})
    assert run_seed(0, a) != run_seed(0, b) and run_seed(1, a) != run_seed(0, a)
    assert run_seed(2, a) == 2 * 100_003
    assert run_seed(0, Item("z", None)) == run_seed(0, Item("z", None))  # no index: a stable hash of the id


def test_mean_ci_is_the_normal_interval():
    from ensemble.eval import mean_ci

    mean, half = mean_ci([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and half == pytest.approx(1.96 * (0.25 / 4) ** 0.5)
    assert mean_ci([1.0]) == (1.0, 0.0)


def test_generic_commands_offer_every_task_and_its_training_targets():
    from actors.cli import build_parser
    from actors.commands.train import train_targets
    from ensemble.registry import TASKS

    parser = build_parser()
    for task in TASKS.names():
        assert parser.parse_args(["eval", task, "--tiny"]).task == task
        assert parser.parse_args(["serve", task, "--tiny"]).task == task
    assert {"verifiers", "generator", "image-models"} <= set(train_targets())
    args = parser.parse_args(["train", "image-models", "--models", "clip", "--seed", "3"])
    assert args.what == "image-models" and args.seed == 3 and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "nope"])


def test_rows_of_the_earlier_per_task_formats_still_count(tmp_path):
    from ensemble.eval import select_rows, work_list
    from ensemble.results import ResultsFile

    item = Item("p1", {"question": "?"}, "5", {"index": 0})
    units = work_list([item], ["lm@1", "ensemble@5"], [0], {"lm@1": "h1", "ensemble@5": "h5"})
    results = ResultsFile(tmp_path / "old.jsonl")
    results.append({"item_id": "p1", "config_hash": "h1", "seed": 0, "system": "lm", "beam": 1, "correct": 1.0,
                    "answer": "5", "output": "… #### 5", "tokens": 9, "seconds": 2.0})
    results.append({"item_id": "p1", "config_hash": "h5", "seed": 0, "system": "ensemble", "beam": 5, "correct": 0.0,
                    "answer": "4", "output": "… #### 4", "tokens": 9, "seconds": 3.0, "moved": {"numeric_verifier": 2}})
    lm, ens = select_rows(results, units)
    assert set(lm) == set(ROW_FIELDS) and lm["system"] == "lm@1" and lm["metric"] == 1.0
    assert lm["extras"]["output"] == "… #### 5" and lm["timings"]["seconds"] == 2.0
    assert ens["system"] == "ensemble@5" and ens["scorers"] == {"numeric_verifier": {"moved": 2}}
    from ensemble.tasks.math.solver import math_table

    assert "100.0 ± 0.0" in math_table([lm, ens], ["lm@1", "ensemble@5"])


def test_error_text_leads_with_the_root_cause_of_a_wrapped_error():
    """Reproduction 8: a remote (Ray-wrapped) failure's useful sentence came after a long traceback and was cut."""
    from ensemble.eval.engine import error_text

    class Wrapped(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("ray::SolverWorker.solve() (pid=1, ip=127.0.0.1)\n" + "  File \"x.py\", line 1\n" * 50)
            self.cause = cause

    try:
        raise Wrapped(ValueError("the checkpoint 'verifiers/gsm-minilm' is missing; run `ensemble train verifiers`"))
    except Wrapped as err:
        text = error_text(err)
    assert text.splitlines()[0] == ("ValueError: the checkpoint 'verifiers/gsm-minilm' is missing; "
                                    "run `ensemble train verifiers`")


def test_steady_rate_leaves_out_each_workers_first_row():
    from ensemble.eval.engine import EvalReport

    # 1 worker: 20 s start-up + first item, then one item every 2 s.
    one = EvalReport(written=5, duration_s=28.0, landed_s=[20.0, 22.0, 24.0, 26.0, 28.0])
    assert one.steady_items_per_s(1) == pytest.approx(0.5)
    # 2 workers: the second worker's first row at 21 s; after that 4 rows in 4 s.
    two = EvalReport(written=6, duration_s=25.0, landed_s=[20.0, 21.0, 22.0, 23.0, 24.0, 25.0])
    assert two.steady_items_per_s(2) == pytest.approx(1.0)
    assert two.items_per_s == pytest.approx(6 / 25)
    assert EvalReport(landed_s=[3.0, 4.0]).steady_items_per_s(2) is None


def test_cli_prints_a_remote_errors_cause_not_its_traceback(capsys, monkeypatch):
    """`ensemble serve math` without trained verifiers printed Ray's remote traceback with colour codes."""
    import argparse

    from actors import cli

    class RemoteError(FileNotFoundError):  # as Ray wraps a remote FileNotFoundError
        def __init__(self, cause: BaseException) -> None:
            super().__init__("\x1b[36mray::SolverWorker.setup()\x1b[39m (pid=1)\n" + '  File "x.py", line 1\n' * 20)
            self.cause = cause

    def fail(_args):
        raise RemoteError(FileNotFoundError("no verifier checkpoint 'verifiers/gsm-numeric'; train one with "
                                            "`ensemble train verifiers`"))

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=fail)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.delenv("ENSEMBLE_DEBUG", raising=False)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: no verifier checkpoint 'verifiers/gsm-numeric'; train one with "
                           "`ensemble train verifiers`")


def test_compare_pairs_one_system_across_two_results_files(tmp_path, capsys):
    from actors.cli import main
    from ensemble.contracts import make_row
    from ensemble.results import ResultsFile

    def write(name, metrics, config="h"):
        results = ResultsFile(tmp_path / name)
        for i, m in enumerate(metrics):
            results.append(make_row(Item(f"p{i}", None), "lm@1", config, 0, "1", m, 1.0))
        return str(tmp_path / name)

    a, b = write("a.jsonl", [0, 0, 1, 1]), write("b.jsonl", [1, 0, 1, 1, 1])  # b's fifth item is not in a
    assert main(["compare", a, b, "--labels", "untuned,tuned", "--out", str(tmp_path / "c.md")]) == 0
    text = capsys.readouterr().out
    assert "| untuned (lm@1) | 4 " in text and "| tuned (lm@1)   | 4 " in text
    assert "tuned − untuned | 4     | 1 / 0" in text and "+25.0 [" in text
    assert (tmp_path / "c.md").read_text().strip() == text.strip()
    ResultsFile(tmp_path / "a.jsonl").append(make_row(Item("p0", None), "lm@1", "other", 0, "1", 1.0, 1.0))
    assert main(["compare", a, b]) == 2
    assert "2 configurations" in capsys.readouterr().err

"""Math data: template-disjoint GSM-Symbolic splits and further evaluation-only sources."""

from __future__ import annotations

import random

import pytest

from ensemble.tasks.math.data import (
    EVAL_TEMPLATES,
    GSM_SYMBOLIC_TEMPLATES,
    TRAIN_TEMPLATES,
    gsm_symbolic,
    is_correct,
    reasoning_gym_problems,
    split_templates,
)
from ensemble.tasks.math.task import MathTask


def test_template_sets_are_fixed_disjoint_and_cover_reasoning_gym():
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

    assert tuple(tasks_ok) == GSM_SYMBOLIC_TEMPLATES
    assert tuple(sorted(random.Random(16).sample(GSM_SYMBOLIC_TEMPLATES, 28))) == EVAL_TEMPLATES  # as documented
    assert not set(EVAL_TEMPLATES) & set(TRAIN_TEMPLATES)
    assert set(EVAL_TEMPLATES) | set(TRAIN_TEMPLATES) == set(GSM_SYMBOLIC_TEMPLATES)
    assert split_templates("train") == TRAIN_TEMPLATES and split_templates("test") == EVAL_TEMPLATES
    with pytest.raises(ValueError, match="train, test"):
        split_templates("dev")


def test_no_template_crosses_from_training_to_evaluation():
    test = gsm_symbolic(150, 0, "test")
    train = [p for seed in (0, 1, 100) for p in gsm_symbolic(80, seed, "train")]  # verifier and generator seeds
    assert {p.template for p in test} <= set(EVAL_TEMPLATES)
    assert {p.template for p in train} <= set(TRAIN_TEMPLATES)
    assert len({p.template for p in test}) == len(EVAL_TEMPLATES)  # 150 draws reach every evaluation template
    assert not {p.question for p in test} & {p.question for p in train}
    assert not {p.id for p in test} & {p.id for p in train}
    # every reference solution is right by GSM8K's own scoring
    assert all(is_correct(p.solution, p.answer) for p in test[:30] + train[:30])


def test_problems_are_seeded_and_prefix_stable():
    a, b = gsm_symbolic(12, 3, "test"), gsm_symbolic(5, 3, "test")
    assert a[:5] == b
    assert gsm_symbolic(5, 4, "test") != b
    with pytest.raises(ValueError, match="reserved for training"):
        gsm_symbolic(2, 10**7, "test")


def test_reasoning_gym_source_is_generic_numeric_and_evaluation_only():
    legs = reasoning_gym_problems("leg_counting?min_animals=2&max_animals=3", 6, 0)
    assert len(legs) == 6 and all(p.solution == f"#### {p.answer}" and p.answer.isdigit() for p in legs)
    assert all(p.question.split("if you have")[-1].count(",") <= 2 for p in legs)  # the settings reached the generator (2–3 animals)
    task = MathTask("reasoning_gym:aiw")
    items = task.items(3, 0)
    assert [i.target for i in items] == [p.answer for p in reasoning_gym_problems("aiw", 3, 0)]
    with pytest.raises(ValueError, match="evaluation only"):
        task.items(3, 0, split="train")
    with pytest.raises(ValueError, match="not a number"):
        reasoning_gym_problems("time_intervals", 2, 0)
    with pytest.raises(ValueError, match="no dataset"):
        reasoning_gym_problems("no_such_set", 2, 0)


def test_paired_bootstrap_interval_covers_the_difference_and_excludes_zero_only_when_clear():
    from ensemble.eval.table import paired_bootstrap, paired_table

    a = [0.0] * 50 + [1.0] * 50
    b = [1.0] * 80 + [0.0] * 20  # b solves 30 more of 100 (it solves a's 50 wins except 20, and 50 more)
    d, lo, hi = paired_bootstrap(a, b)
    assert d == pytest.approx(0.3) and lo < 0.3 < hi and lo > 0.1
    same = paired_bootstrap(a, a)
    assert same == (0.0, 0.0, 0.0)
    noisy = paired_bootstrap([0.0, 1.0] * 10, [1.0, 0.0] * 10)
    assert noisy[1] < 0.0 < noisy[2]
    rows = [{"item_id": str(i), "system": s, "metric": m} for s, ms in (("lm@1", a), ("ensemble@1", b))
            for i, m in enumerate(ms)]
    assert "+30.0 [" in paired_table(rows, [("lm@1", "ensemble@1")])
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1.0], [])


def test_cli_defaults_are_the_untuned_generator_and_sources_reach_the_task():
    import argparse

    from ensemble.tasks.math.cli import add_arguments, solver_spec
    from ensemble.tasks.math.task import DEFAULT_LM, DEFAULT_SHOTS

    p = argparse.ArgumentParser()
    add_arguments(p)
    spec = solver_spec(p.parse_args(["--source", "reasoning_gym:leg_counting?max_animals=3"]))
    assert spec.settings["lm"] == DEFAULT_LM == "smollm2-135m-instruct" and DEFAULT_SHOTS == 1
    assert spec.settings["task"]["shots"] == 1
    task = spec.build_task()
    assert task.source == "reasoning_gym:leg_counting?max_animals=3"
    assert task.items(2, 0)[0].id.startswith("leg_counting?max_animals=3/0/")

"""GSM8K-format math word problems: the JSONL reader, reasoning-gym ``gsm_symbolic``, answer scoring.

A GSM8K row is ``{"question": str, "answer": str}`` whose answer is a worked solution with calculator
annotations (``16-3-4=<<16-3-4=9>>9``) ending in ``#### <number>``. Scoring is GSM8K's own: take the
number after ``#### `` with commas removed, and compare strings exactly.

GSM-Symbolic problems (templatised GSM8K test questions) come from reasoning-gym, generated at run
time from a seed — nothing is stored. Their reference solutions are normalised to the GSM8K format by
:func:`annotate`, which wraps every checked ``a op b = c`` in a calculator annotation.

**Template-disjoint splits.** GSM-Symbolic's problems are instances of 85 templates (reasoning-gym's
generator ids, :data:`GSM_SYMBOLIC_TEMPLATES`). A fixed third of them, :data:`EVAL_TEMPLATES` (drawn once
with ``random.Random(16).sample(GSM_SYMBOLIC_TEMPLATES, 28)`` and written out here), serves only the
``"test"`` split; the other 57, :data:`TRAIN_TEMPLATES`, serve only the ``"train"`` split, which is used
for every training run *and* every development choice. So a number measured on ``split="test"`` is on
problem types that no training or tuning step has seen. The two splits also use disjoint dataset seeds.

**Other sources.** Any reasoning-gym dataset whose answers are numbers is a further evaluation source,
``"reasoning_gym:<name>"`` (e.g. ``reasoning_gym:leg_counting``, word problems the project never trains
on); its items carry the answer only (``#### N``), which is all GSM8K's exact match needs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble.tasks.math.calculator import format_number, safe_eval

ANS_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
"""GSM8K's answer pattern."""

INVALID_ANS = "[invalid]"
"""GSM8K's marker for a completion without an answer."""

TRAIN_SEED_OFFSET = 1_000_000
"""Training problems use dataset seed ``seed + TRAIN_SEED_OFFSET``; evaluation seeds must stay below it,
so training and evaluation problems never come from the same seed."""

GSM_SYMBOLIC_TEMPLATES: tuple[int, ...] = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
    29, 30, 31, 33, 34, 36, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 62, 64, 66, 67, 68, 69, 70, 71, 72, 73, 75, 78, 80, 81, 82, 83, 84, 85, 88, 89, 91, 92, 93,
    94, 95, 96, 99,
)
"""The 85 GSM-Symbolic templates reasoning-gym 0.1.25 generates (its ``tasks_ok``), by generator id."""

EVAL_TEMPLATES: tuple[int, ...] = (
    0, 1, 2, 9, 18, 28, 29, 30, 33, 34, 39, 40, 41, 42, 43, 45, 49, 54, 55, 56, 60, 66, 67, 72, 78, 80, 83, 91,
)
"""Templates of the ``"test"`` split only: ``sorted(random.Random(16).sample(GSM_SYMBOLIC_TEMPLATES, 28))``."""

TRAIN_TEMPLATES: tuple[int, ...] = tuple(t for t in GSM_SYMBOLIC_TEMPLATES if t not in EVAL_TEMPLATES)
"""Templates of the ``"train"`` split (training and development): the 57 others."""

SPLITS = ("train", "test")
"""``train``: training and every development choice; ``test``: reported numbers only."""

_NUM = r"\d[\d,]*(?:\.\d+)?"
_TIMES_RE = re.compile(r"(?<=\d) x (?=[$€£]?\(?\d)")
"""``12 x 3``: GSM-Symbolic's multiplication sign between numbers."""
_EXPR_RE = re.compile(
    rf"(?<![\w.<=])(\(?\s*{_NUM}\s*\)?(?:\s*[-+*/×÷]\s*\(?\s*{_NUM}\s*\)?)+)\s*=\s*([$€£]?)(-?{_NUM})(?![\d>])"
)


@dataclass(frozen=True)
class Problem:
    """One math word problem.

    Attributes:
        id: stable identifier (``"gsm_symbolic/<seed>/<index>"`` or ``"<file stem>/<line>"``).
        question: the problem text.
        solution: a reference solution in GSM8K format (ends with ``#### N``).
        answer: the final answer as GSM8K extracts it (commas removed).
        template: the GSM-Symbolic template id (``None`` for other sources).
    """

    id: str
    question: str
    solution: str
    answer: str
    template: int | None = None


def extract_answer(completion: str) -> str:
    """GSM8K's ``extract_answer``: the number after ``#### `` (commas removed) or ``INVALID_ANS``."""
    match = ANS_RE.search(completion)
    if not match:
        return INVALID_ANS
    return match.group(1).strip().replace(",", "")


def is_correct(completion: str, reference: str) -> bool:
    """GSM8K's exact match: the extracted answers are equal strings (a reference without ``####`` is
    taken to be the bare answer)."""
    gt = extract_answer(reference) if "####" in reference else reference.strip().replace(",", "")
    if gt == INVALID_ANS:
        raise ValueError(f"reference {reference!r} has no '#### N' answer")
    return extract_answer(completion) == gt


def annotate(solution: str) -> str:
    """Normalise a worked solution to GSM8K format with ``<<expr=value>>`` calculator annotations.

    ``×``/``÷`` (and `` x `` between numbers) become ``*``/``/``; every ``a op b = c`` whose arithmetic checks out becomes
    ``a op b = <<a op b=c>>c``; existing annotations are kept.

    Args:
        solution: e.g. ``"So she responds to 160-48=112 emails\\n#### 112"``.

    Returns:
        e.g. ``"So she responds to 160-48=<<160-48=112>>112 emails\\n#### 112"``.
    """
    text = _TIMES_RE.sub(" * ", solution.replace("×", "*").replace("÷", "/"))

    def wrap(m: re.Match) -> str:
        raw, currency, value = m.group(1), m.group(2), m.group(3)
        expr, lead = raw.strip(), raw[: len(raw) - len(raw.lstrip())]
        got = safe_eval(expr)
        want = safe_eval(value)
        if got is None or want is None or abs(got - want) > 1e-6 * max(1.0, abs(want)):
            return m.group(0)
        compact = expr.replace(" ", "").replace(",", "")
        return f"{lead}{expr} = {currency}<<{compact}={format_number(got)}>>{value}"

    return _EXPR_RE.sub(wrap, text)


def read_jsonl(path: str | os.PathLike, n: int | None = None) -> list[Problem]:
    """Read GSM8K's JSONL (``question``, ``answer`` ending ``#### N``).

    Args:
        path: the ``.jsonl`` file (e.g. GSM8K's ``test.jsonl``).
        n: read at most this many rows.

    Raises:
        ValueError: a row lacks ``question``/``answer`` or a ``#### N`` answer (the line is named).
    """
    path = Path(path)
    problems = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "question" not in row or "answer" not in row:
                raise ValueError(f"{path}:{line_no}: a GSM8K row needs 'question' and 'answer', got {sorted(row)}")
            answer = extract_answer(row["answer"])
            if answer == INVALID_ANS:
                raise ValueError(f"{path}:{line_no}: the answer does not end with '#### N': {row['answer'][-60:]!r}")
            problems.append(Problem(f"{path.stem}/{line_no}", row["question"], row["answer"], answer))
            if n is not None and len(problems) >= n:
                break
    return problems


def split_templates(split: str) -> tuple[int, ...]:
    """The GSM-Symbolic template ids of ``split`` (``"train"`` or ``"test"``; the two are disjoint)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {', '.join(SPLITS)}")
    return TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES


def gsm_symbolic(n: int, seed: int, split: str = "test") -> list[Problem]:
    """``n`` GSM-Symbolic problems of ``split``'s templates, generated by reasoning-gym from ``seed``.

    Problem ``i`` draws its template from ``split_templates(split)`` with ``random.Random(data_seed)`` and
    its names and numbers with ``random.Random(f"{data_seed}/{i}")``, so the same (n, seed, split) always
    gives the same problems, and a longer list extends a shorter one.

    Args:
        n: number of problems.
        seed: dataset seed; the ``"train"`` split uses ``seed + TRAIN_SEED_OFFSET``.
        split: ``"test"`` (evaluation templates) or ``"train"`` (training and development templates).

    Raises:
        ValueError: unknown split, or a seed outside ``[0, TRAIN_SEED_OFFSET)``.
    """
    templates = split_templates(split)
    if not 0 <= seed < TRAIN_SEED_OFFSET:
        raise ValueError(f"seed={seed} must be in [0, {TRAIN_SEED_OFFSET}) (larger seeds are reserved for training)")
    import random

    generators = _gsm_symbolic_generators()
    data_seed = seed + (TRAIN_SEED_OFFSET if split == "train" else 0)
    pick = random.Random(data_seed)
    problems = []
    for i in range(n):
        template = pick.choice(templates)
        row = generators[template](random.Random(f"{data_seed}/{i}"), 1.0)
        cot = row["metadata"].get("answer_cot") or f"#### {row['answer']}"
        question = row["question"].replace(" Give the result as your final answer. Do not include units.", "")
        answer = str(row["answer"]).replace(",", "")
        problems.append(Problem(f"gsm_symbolic/{split}/{data_seed}/{i}", question, _final_as(annotate(cot), answer),
                                answer, template))
    return problems


def _final_as(solution: str, answer: str) -> str:
    """``solution`` ending ``#### answer`` when its own final number equals ``answer`` (``#### 32.0`` → 32)."""
    written = extract_answer(solution)
    if written != answer and safe_eval(written) is not None and safe_eval(written) == safe_eval(answer):
        return solution[: solution.rindex("####")] + f"#### {answer}"
    return solution


def _gsm_symbolic_generators() -> dict[int, Callable[..., dict]]:
    """reasoning-gym's GSM-Symbolic generator functions by template id (checked against our template list)."""
    import reasoning_gym

    generators = reasoning_gym.create_dataset("gsm_symbolic", size=1, seed=0).generators
    missing = sorted(set(GSM_SYMBOLIC_TEMPLATES) - set(generators))
    if missing:
        raise RuntimeError(f"this reasoning-gym has no GSM-Symbolic templates {missing}; install reasoning-gym==0.1.25")
    return generators


REASONING_GYM_PREFIX = "reasoning_gym:"
"""Source names ``reasoning_gym:<dataset>``: any reasoning-gym dataset with numeric answers."""


def reasoning_gym_problems(name: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems of the reasoning-gym dataset ``name`` as GSM8K-format items.

    ``name`` may carry dataset settings as a query, ``"leg_counting?min_animals=2&max_animals=3"``
    (integers and floats are converted). The reference solution is the bare ``#### N`` (GSM8K's exact
    match needs nothing more). These sets are evaluation-only: the project trains on none of them.

    Raises:
        ValueError: unknown dataset, a malformed setting, or an answer that is not a number.
    """
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    name, _, query = name.partition("?")
    settings: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"setting {part!r} of {name!r} must look like key=value")
        settings[key] = int(value) if value.lstrip("-").isdigit() else _float_or_str(value)
    if name not in DATASETS:
        raise ValueError(f"reasoning-gym has no dataset {name!r}; numeric word-problem sets include leg_counting, aiw")
    problems = []
    for i, row in enumerate(reasoning_gym.create_dataset(name, size=n, seed=seed, **settings)):
        answer = str(row["answer"]).strip().replace(",", "")
        if safe_eval(answer) is None or not re.fullmatch(r"-?\d+(?:\.\d+)?", answer):
            raise ValueError(f"{name} item {i}: answer {row['answer']!r} is not a number; pick a numeric dataset")
        tag = f"{name}?{query}" if query else name
        problems.append(Problem(f"{tag}/{seed}/{i}", row["question"].strip(), f"#### {answer}", answer))
    return problems


def _float_or_str(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value

"""GSM8K-format math word problems: the JSONL reader, reasoning-gym ``gsm_symbolic``, answer scoring.

A GSM8K row is ``{"question": str, "answer": str}`` whose answer is a worked solution with calculator
annotations (``16-3-4=<<16-3-4=9>>9``) ending in ``#### <number>``. Scoring is GSM8K's own: take the
number after ``#### `` with commas removed, and compare strings exactly.

GSM-Symbolic problems (templatised GSM8K test questions) come from reasoning-gym, generated at run
time from a seed — nothing is stored. Their reference solutions are normalised to the GSM8K format by
:func:`annotate`, which wraps every checked ``a op b = c`` in a calculator annotation.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ensemble.tasks.math.calculator import format_number, safe_eval

ANS_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
"""GSM8K's answer pattern."""

INVALID_ANS = "[invalid]"
"""GSM8K's marker for a completion without an answer."""

TRAIN_SEED_OFFSET = 1_000_000
"""Training problems use dataset seed ``seed + TRAIN_SEED_OFFSET``; evaluation seeds must stay below it,
so training and evaluation problems never come from the same seed."""

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
    """

    id: str
    question: str
    solution: str
    answer: str


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


def gsm_symbolic(n: int, seed: int, split: str = "test") -> list[Problem]:
    """``n`` GSM-Symbolic problems generated by reasoning-gym from ``seed``.

    Args:
        n: number of problems.
        seed: dataset seed; the ``"train"`` split uses ``seed + TRAIN_SEED_OFFSET``.
        split: ``"test"`` (evaluation) or ``"train"`` (verifier training, prompt tuning).

    Raises:
        ValueError: unknown split, or a test seed in the training range.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split={split!r} must be 'test' or 'train'")
    if not 0 <= seed < TRAIN_SEED_OFFSET:
        raise ValueError(f"seed={seed} must be in [0, {TRAIN_SEED_OFFSET}) (larger seeds are reserved for training)")
    import reasoning_gym

    data_seed = seed + (TRAIN_SEED_OFFSET if split == "train" else 0)
    dataset = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=data_seed)
    problems = []
    for i, row in enumerate(dataset):
        cot = row["metadata"].get("answer_cot") or f"#### {row['answer']}"
        question = row["question"].replace(" Give the result as your final answer. Do not include units.", "")
        problems.append(Problem(f"gsm_symbolic/{data_seed}/{i}", question, annotate(cot), str(row["answer"]).replace(",", "")))
    return problems

"""Numeric-consistency features of a (question, partial solution) pair, for the numeric verifier.

Grade-school solutions reuse the question's numbers and their own intermediate results; a wrong step
usually brings a number from nowhere, a digit run-on, or an answer that is not the last result. These
features see exactly that, digit by digit, so they can rate a partial solution whose last token is
half of a number:

* every number is tagged ``Q`` (in the question), ``R`` (an earlier result), ``C`` (a small constant)
  or ``U`` (unexplained); a number still being typed is tagged by which numbers it is a prefix of;
* hashed uni/bigrams of the abstracted token stream (numbers replaced by their tags), over the whole
  solution and, separately, over its last few tokens;
* dense counts: unexplained numbers, question numbers used, arithmetic slips, the final answer's
  consistency, repetition, length;
* arithmetic written with units (``19 girls x 4 boys/girl = 76 boys``, ``£55/hour * 13 hours = £715``),
  which no calculator annotation covers: each completed result is checked, and a result still being
  typed is checked digit by digit (is it a prefix of the right value?).
"""

from __future__ import annotations

import re
import zlib

import torch

from ensemble.tasks.math.calculator import safe_eval

N_HASH = 4096
"""Hashed n-gram buckets."""

DENSE_NAMES = (
    "frac_unexplained", "any_unexplained", "partial_q", "partial_r", "partial_u", "partial_too_long",
    "frac_question_used", "arith_errors", "has_final", "final_is_last_result", "final_explained",
    "repeated_lines", "length", "n_lines", "long_number", "partial_result_ok", "partial_result_bad",
    "unit_arith_errors", "bias",
)
"""Names of the dense features, in order."""

N_FEATURES = N_HASH + len(DENSE_NAMES)
"""Length of a feature vector."""

SMALL_CONSTANTS = {0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0, 12.0, 24.0, 52.0, 60.0, 100.0, 365.0}
_WORD_NUMBERS = {"half": 0.5, "twice": 2.0, "double": 2.0, "triple": 3.0, "dozen": 12.0, "quarter": 0.25}
_NUM_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")
_TOKEN_RE = re.compile(r"####|<<|>>|\d[\d,]*(?:\.\d+)?|[A-Za-z]+|[-+*/=()$%.]|\n")
_EXPR_RE = re.compile(r"(\d[\d.,]*(?:\s*[-+*/]\s*\(?\d[\d.,]*\)?)+)\s*=\s*(?:<<[^>]*>>)?\s*[$€£]?(\d[\d,]*(?:\.\d+)?)")


_UNIT_RE = re.compile(r"/\s*[A-Za-z]+|[$€£]")
_ARITH_TOKEN_RE = re.compile(
    r"\d+(?:,\d{3})*(?:\.\d+)?%?|[-+*/()]|(?<=\s)x(?=\s)|[,;!?]|\b(?:half|twice|double|triple|dozen|quarter)\b",
    re.IGNORECASE,
)
_RESULT_RE = re.compile(r"=\s*(?:<<[^>]*>>)?\s*[$€£]?(\d[\d,]*(?:\.\d+)?)")


def unit_expression_value(segment: str) -> float | None:
    """The value of the arithmetic at the end of ``segment``, ignoring words and units.

    ``"There are 19 girls x 4 boys/girl "`` → 76; ``"saves: £715 - £144 "`` → 571; ``"$475 * 40% "`` →
    190. The longest trailing run of numbers and operators that evaluates (and holds an operator) counts;
    ``None`` when there is none.
    """
    text = _UNIT_RE.sub(" ", segment.split("<<")[0] if ">>" not in segment.split("<<")[-1] else segment)
    tokens = []
    for m in _ARITH_TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok == "x":
            tok = "*"
        elif tok.lower() in _WORD_NUMBERS:
            tok = _fmt(_WORD_NUMBERS[tok.lower()])
        elif tok in ",;!?":
            tok = ";"
        elif tok.endswith("%"):
            tok = f"({tok[:-1].replace(',', '')}/100)"
        else:
            tok = tok.replace(",", "")
        tokens.append(tok)
    for start in range(len(tokens)):
        run = tokens[start:]
        if not any(t in "+-*/" for t in run) or run[0] in "*/+);":
            continue
        value = safe_eval(" ".join(run))
        if value is not None:
            return value
    return None


def unit_arithmetic(solution: str) -> tuple[int, float | None]:
    """``(completed results that contradict their expression, value owed to a result being typed)``.

    The expression of a result is the text of its line before its ``=`` (after an earlier ``=`` or
    ``:``); the second item is the value a trailing, unfinished ``… = 7`` should grow into, else ``None``.
    """
    errors = 0
    owed = None
    for m in _RESULT_RE.finditer(solution):
        line_start = solution.rfind("\n", 0, m.start()) + 1
        segment = solution[line_start : m.start()]
        segment = re.split(r"[=:]", segment)[-1]
        want = unit_expression_value(segment)
        if want is None:
            continue
        typed = m.group(1).replace(",", "").rstrip(".")
        if m.end() == len(solution):
            owed = want
            continue
        got = _value(typed)
        if got is not None and abs(got - want) > 1e-4 * max(1.0, abs(want)) and round(want, 2) != got:
            errors += 1
    return errors, owed


def _value(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def question_numbers(question: str) -> set[float]:
    """Numbers in the question, with percentages also as fractions and number words as values."""
    values: set[float] = set()
    for m in _NUM_RE.finditer(question):
        v = _value(m.group(0))
        if v is None:
            continue
        values.add(v)
        if question[m.end() : m.end() + 1] == "%" or question[m.end() : m.end() + 8] == " percent":
            values.add(v / 100)
    lower = question.lower()
    values.update(v for w, v in _WORD_NUMBERS.items() if w in lower)
    return values


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:g}"


def _hash(token: str) -> int:
    return zlib.crc32(token.encode()) % N_HASH


def features(question: str, solution: str, qnums: set[float] | None = None) -> torch.Tensor:
    """The feature vector ``[N_FEATURES]`` of ``solution`` (possibly partial) for ``question``."""
    qnums = question_numbers(question) if qnums is None else qnums
    results: set[float] = set()
    tags: list[str] = []
    counts = {"num": 0, "unexplained": 0}
    used_q: set[float] = set()
    tokens = [m for m in _TOKEN_RE.finditer(solution)]
    partial = bool(solution) and solution[-1].isdigit()
    prev = ""
    for i, m in enumerate(tokens):
        tok = m.group(0)
        if tok[0].isdigit():
            v = _value(tok)
            is_last_partial = partial and i == len(tokens) - 1
            if is_last_partial:
                tags.append("P")
            elif prev in ("=", ">>", "####"):
                tags.append("E")
                if v is not None:
                    results.add(v)
            else:
                counts["num"] += 1
                if v in qnums:
                    tags.append("Q")
                    used_q.add(v)
                elif v in results:
                    tags.append("R")
                elif v in SMALL_CONSTANTS:
                    tags.append("C")
                else:
                    tags.append("U")
                    counts["unexplained"] += 1
        elif tok.isalpha():
            tags.append(tok.lower())
        else:
            tags.append({"\n": "NL"}.get(tok, tok))
        prev = tok if not tok.isspace() else prev
    # the number being typed: a prefix of which known numbers?
    p_q = p_r = p_u = too_long = 0.0
    if partial and tokens:
        typed = tokens[-1].group(0).replace(",", "")
        q_strs = [_fmt(v) for v in qnums]
        r_strs = [_fmt(v) for v in results]
        p_q = float(any(s.startswith(typed) for s in q_strs))
        p_r = float(any(s.startswith(typed) for s in r_strs))
        p_u = float(not (p_q or p_r))
        longest = max((len(s) for s in q_strs + r_strs), default=4)
        too_long = float(len(typed.replace(".", "")) > longest + 1)
    # arithmetic slips in completed "a op b = c"
    errors = 0
    for m in _EXPR_RE.finditer(solution):
        got, want = safe_eval(m.group(1)), _value(m.group(2))
        if got is not None and want is not None and abs(got - want) > 1e-4 * max(1.0, abs(want)):
            if not (partial and m.end() == len(solution)):
                errors += 1
    final = re.search(r"####\s*(-?\d[\d,]*(?:\.\d+)?)", solution)
    final_v = _value(final.group(1)) if final else None
    last_result = None
    for m in re.finditer(r"(?:=|>>)\s*[$€£]?(\d[\d,]*(?:\.\d+)?)", solution.split("####")[0]):
        last_result = _value(m.group(1))
    unit_errors, owed = unit_arithmetic(solution)
    result_ok = result_bad = 0.0
    if partial and owed is not None and tokens:
        typed = tokens[-1].group(0).replace(",", "")
        result_ok = float(_fmt(round(owed, 2)).startswith(typed))
        result_bad = 1.0 - result_ok
    lines = [ln.strip() for ln in solution.split("\n") if ln.strip()]
    repeated = (len(lines) - len(set(lines))) / max(len(lines), 1)
    dense = [
        counts["unexplained"] / (counts["num"] + 1), float(counts["unexplained"] > 0), p_q, p_r, p_u, too_long,
        len(used_q) / max(len(qnums), 1), min(errors, 3) / 3, float(final is not None),
        float(final_v is not None and final_v == last_result),
        float(final_v is not None and (final_v in results or final_v in qnums)),
        repeated, min(len(solution), 1500) / 1500, min(len(lines), 30) / 30,
        float(any(len(t.group(0)) > 9 for t in tokens if t.group(0)[0].isdigit())), result_ok, result_bad,
        min(unit_errors, 3) / 3, 1.0,
    ]
    x = torch.zeros(N_FEATURES)
    grams = [f"u:{t}" for t in tags] + [f"b:{a} {b}" for a, b in zip(tags, tags[1:], strict=False)]
    tail = tags[-6:]
    grams += [f"lu:{t}" for t in tail] + [f"lb:{a} {b}" for a, b in zip(tail, tail[1:], strict=False)]
    grams += [f"lt:{' '.join(tail[-3:])}"]
    for g in grams:
        x[_hash(g)] += 1.0
    x[:N_HASH] /= max(len(grams), 1) ** 0.5
    x[N_HASH:] = torch.tensor(dense)
    return x

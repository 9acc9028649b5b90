"""A safe calculator for GSM8K-style ``<<expr=value>>`` annotations, as GSM8K's own sampler uses it.

GSM8K solutions carry calculator annotations: ``16-3-4=<<16-3-4=9>>9``. When a sampled solution ends
with ``<<expr=``, GSM8K's sampler evaluates ``expr`` and forces ``value>>`` into the text, so the LM
never has to do the arithmetic. :func:`calculator_force` is that hook, in the shape
:class:`ensemble.generators.causal_lm.CausalLMGenerator` expects for ``force_fn``.

Evaluation walks the expression's syntax tree (numbers, ``+ - * /``, unary minus, parentheses) instead
of calling ``eval``, so no text can run code, and results beyond ``MAX_ABS`` are refused.
"""

from __future__ import annotations

import ast
import math
import operator
import re

ALLOWED_CHARS = set("0123456789*+-/.() ")
"""Characters GSM8K's calculator accepts on the left of ``=`` (commas are removed first)."""

MAX_ABS = 1e15
"""Results (and intermediate values) larger than this are refused."""

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expr: str) -> float | None:
    """Evaluate an arithmetic expression of numbers, ``+ - * /`` and parentheses.

    Args:
        expr: e.g. ``"16-3-4"`` or ``"(2+3)*1,000"`` (commas are removed).

    Returns:
        The value, or ``None`` when ``expr`` is not such an expression, divides by zero, or is too large.
    """
    expr = expr.replace(",", "").strip()
    if not expr or any(c not in ALLOWED_CHARS for c in expr):
        return None
    try:
        tree = ast.parse(expr, mode="eval")
        value = _eval(tree.body)
    except (SyntaxError, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None
    if value is None or not math.isfinite(value) or abs(value) > MAX_ABS:
        return None
    return value


def _eval(node: ast.AST) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval(node.left), _eval(node.right)
        if a is None or b is None:
            return None
        v = _BINOPS[type(node.op)](a, b)
        if abs(v) > MAX_ABS:
            raise OverflowError(v)
        return v
    return None


def format_number(value: float) -> str:
    """``12.0`` → ``"12"``; ``2.5`` → ``"2.5"``; at most 4 decimals, trailing zeros dropped."""
    if abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def use_calculator(sample: str) -> str | None:
    """The value of the open annotation at the end of ``sample`` (GSM8K's ``use_calculator``).

    Args:
        sample: solution text so far, e.g. ``"… she has 16-3-4=<<16-3-4="``.

    Returns:
        The formatted value of the expression between the last ``<<`` and its ``=``; ``None`` when the
        last annotation is closed, has no ``=``, or its expression is not arithmetic.
    """
    if "<<" not in sample:
        return None
    remaining = sample.split("<<")[-1]
    if ">>" in remaining or "=" not in remaining:
        return None
    value = safe_eval(remaining.split("=")[0])
    return None if value is None else format_number(value)


CURRENCY = "$€£"
"""Currency signs a bare expression may carry (``$16 - $4 =``); the value is written with the first."""

_BARE_RE = re.compile(r"([$€£]?[\d.,(][\d.,()*+/ x$€£-]*[\d)])\s*=$")
_TIMES_RE = re.compile(r"(?<=[\d)]) x (?=[$€£]?\(?\d)")


def bare_expression(text: str) -> str | None:
    """The arithmetic expression right before a trailing ``=`` outside annotations (``"… 3*8="`` → ``"3*8"``).

    Currency signs are dropped and `` x `` between numbers is a multiplication
    (``"… $225 x 3 ="`` → ``"225 * 3"``). Returns ``None`` unless the expression holds at least one
    operator between numbers.
    """
    match = _BARE_RE.search(text)
    if not match:
        return None
    expr = _TIMES_RE.sub(" * ", match.group(1).strip())
    expr = "".join(c for c in expr if c not in CURRENCY)
    core = expr.lstrip("-(")
    if not any(op in core for op in "+-*/"):
        return None
    return expr


def calculator_force(text: str, bare: bool = False) -> str:
    """``force_fn`` for the token rule: the calculator of GSM8K's sampler.

    When ``text`` ends with ``<<expr=``, force ``value>>``. With ``bare=True`` a trailing ``a*b=`` outside
    annotations is also completed with its value (``" value"`` when a space precedes the ``=``, in the
    expression's currency: ``"$16 - $4 ="`` → ``" $12"``), which suits small LMs that do not write
    annotations.

    Returns:
        The text to append (``""`` when nothing is forced).
    """
    if not text.endswith("="):
        return ""
    value = use_calculator(text)
    if value is not None:
        return f"{value}>>"
    tail = text.split("<<")[-1]
    if not bare or ("<<" in text and ">>" not in tail):
        return ""
    expr = bare_expression(text)
    if expr is None:
        return ""
    value = safe_eval(expr)
    if value is None:
        return ""
    written = _BARE_RE.search(text).group(1)
    currency = next((c for c in written if c in CURRENCY), "")
    return (" " if text[:-1].endswith(" ") else "") + currency + format_number(value)

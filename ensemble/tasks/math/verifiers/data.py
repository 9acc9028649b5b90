"""Training examples for math verifiers: (question, partial or complete solution, label).

* positives: reference solutions and their prefixes (scorers rate *partial* solutions), and LM samples
  whose final answer is right;
* negatives: perturbed references — a wrong operand, operator, result or final answer — cut anywhere
  after the first wrong character (so a half-typed wrong number is already wrong), and LM samples
  whose final answer is wrong (every later prefix labelled by the outcome, as in GSM8K's verifiers).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ensemble.tasks.math.data import Problem, is_correct

_NUMBER_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Example:
    """One labelled (question, solution) pair; ``source`` says where it came from."""

    question: str
    solution: str
    label: int
    source: str


def cut_points(text: str, start: int, k: int, rng: random.Random) -> list[int]:
    """Up to ``k`` distinct cut positions in ``(start, len(text)]``, always including the end."""
    if start >= len(text):
        return [len(text)]
    pool = list(range(start + 1, len(text)))
    picks = set(rng.sample(pool, min(k - 1, len(pool)))) if k > 1 else set()
    return sorted(picks | {len(text)})


def reference_examples(problems: Sequence[Problem], render: Callable[[str], str], rng: random.Random,
                       n_prefixes: int = 4) -> list[Example]:
    """Each reference solution and ``n_prefixes - 1`` random prefixes of it, labelled 1."""
    out = []
    for p in problems:
        sol = render(p.solution)
        for end in cut_points(sol, 0, n_prefixes, rng):
            out.append(Example(p.question, sol[:end], 1, "reference"))
    return out


def _wrong_number(right: str, pool: list[str], rng: random.Random) -> str:
    """A number whose first digit differs from ``right``'s (so its first typed digit is already wrong)."""
    options = [x for x in pool if x and x[0] != right[0]]
    if options and rng.random() < 0.6:
        return rng.choice(options)
    value = max(2, int(float(right.replace(",", "")) * rng.choice([0.5, 2, 3, 1.5, 10, 0.1])) + rng.randint(-3, 3))
    text = str(value)
    if text[0] == right[0]:
        text = str(rng.choice([d for d in "123456789" if d != right[0]])) + text[1:]
    return text


def perturb(solution: str, question: str, rng: random.Random) -> tuple[str, int] | None:
    """A wrong version of ``solution`` and the index of its first wrong character (``None`` if impossible).

    Kinds: a wrong operand (a question number or a scaled value), a wrong result after ``=``, a wrong
    final answer, or a swapped operator. The text after the perturbed line is dropped.
    """
    numbers = list(_NUMBER_RE.finditer(solution))
    ops = [m for m in re.finditer(r"(?<=\d)\s*([-+*/])\s*(?=\d)", solution)]
    kind = rng.choice(["operand", "operand", "result", "final", "operator"])
    pool = [m.group(0) for m in _NUMBER_RE.finditer(question)]
    if kind == "operator" and ops:
        m = rng.choice(ops)
        pos = m.start(1)
        new = rng.choice([o for o in "+-*/" if o != m.group(1)])
        text = solution[:pos] + new + solution[pos + 1 :]
    elif kind == "final" and "####" in solution:
        pos = solution.index("####") + 5
        right = solution[pos:].strip() or "1"
        text = solution[:pos] + _wrong_number(right, pool, rng)
    else:
        after_eq = [m for m in numbers if solution[: m.start()].rstrip().endswith(("=", ">>"))]
        operands = [m for m in numbers if m not in after_eq and "####" not in solution[max(0, m.start() - 5) : m.start()]]
        choices = after_eq if kind == "result" else operands
        if not choices:
            return None
        m = rng.choice(choices)
        pos = m.start()
        text = solution[:pos] + _wrong_number(m.group(0), pool, rng) + solution[m.end() :]
    line_end = text.find("\n", pos)
    return (text if line_end < 0 else text[:line_end]), pos


def perturbed_examples(problems: Sequence[Problem], render: Callable[[str], str], rng: random.Random,
                       n_per_problem: int = 2, n_prefixes: int = 3) -> list[Example]:
    """Perturbed references cut at ``n_prefixes`` points after the first wrong character, labelled 0."""
    out = []
    for p in problems:
        sol = render(p.solution)
        for _ in range(n_per_problem):
            res = perturb(sol, p.question, rng)
            if res is None:
                continue
            text, pos = res
            for end in cut_points(text, pos, n_prefixes, rng):
                out.append(Example(p.question, text[:end], 0, "perturbed"))
    return out


def degenerate_examples(problems: Sequence[Problem], render: Callable[[str], str], rng: random.Random,
                        n_prefixes: int = 2) -> list[Example]:
    """Run-on text a guided small LM falls into, labelled 0: a reference line repeated back to back,
    and a solution that keeps talking after its last step without ever giving ``#### N``.

    Without them a verifier trained on references and number perturbations learns that prose without
    numbers is safe, and steers the LM into repeating a sentence forever.
    """
    out = []
    for p in problems:
        sol = render(p.solution)
        lines = [ln for ln in sol.split("\n") if ln.strip() and not ln.startswith("####")]
        if not lines:
            continue
        i = rng.randrange(len(lines))
        head = "\n".join(lines[: i + 1])
        looped = head + ("\n" + lines[i]) * rng.choice([1, 2, 3])
        for end in cut_points(looped, len(head) + 1 + len(lines[i]) // 2, n_prefixes, rng):
            out.append(Example(p.question, looped[:end], 0, "repeated"))
        body = "\n".join(lines)
        rambling = body + "\n" + " ".join(rng.sample(lines, min(2, len(lines)))).replace("=", "and")
        for end in cut_points(rambling, len(body) + 2, n_prefixes, rng):
            out.append(Example(p.question, rambling[:end], 0, "run-on"))
    return out


def sample_examples(problems: Sequence[Problem], samples: Sequence[Sequence[str]], rng: random.Random,
                    n_prefixes: int = 3) -> list[Example]:
    """LM samples labelled by GSM8K exact match of their final answer; prefixes from 30 % of the length on."""
    out = []
    for p, texts in zip(problems, samples, strict=True):
        for text in texts:
            label = int(is_correct(text, p.answer))
            for end in cut_points(text, int(0.3 * len(text)), n_prefixes, rng):
                out.append(Example(p.question, text[:end], label, "lm-correct" if label else "lm-wrong"))
    return out


def lm_samples(model: object, tokenizer: object, prompt_fn: Callable[[str], str], problems: Sequence[Problem],
               per_problem: int, max_new_tokens: int = 160, temperature: float = 0.8, seed: int = 0,
               stop: Sequence[str] = ("\nQuestion:",),
               wrap: Callable[[Any], Any] = lambda it: it) -> list[list[str]]:
    """``per_problem`` sampled solutions per problem from a causal LM (batched ``generate``; ``wrap`` wraps
    the loop over problems, e.g. in a progress bar)."""
    import torch

    torch.manual_seed(seed)
    out = []
    for p in wrap(problems):
        enc = tokenizer(prompt_fn(p.question), return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=50,
                                 max_new_tokens=max_new_tokens, num_return_sequences=per_problem,
                                 pad_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        cleaned = []
        for t in texts:
            for s in stop:
                t = t.split(s)[0]
            cleaned.append(t.strip())
        out.append(cleaned)
    return out

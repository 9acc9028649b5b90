"""Grade-school math: GSM8K-format word problems solved by a causal LM guided by verifiers.

Glue only: the problems (reasoning-gym GSM-Symbolic generated from a seed, or a GSM8K JSONL file), the
prompt with one worked example, the calculator and stop rule handed to the generator, GSM8K's answer
extraction, and exact-match accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ensemble.contracts import Item, Task
from ensemble.tasks.math.calculator import calculator_force
from ensemble.tasks.math.data import (
    REASONING_GYM_PREFIX,
    Problem,
    extract_answer,
    gsm_symbolic,
    is_correct,
    read_jsonl,
    reasoning_gym_problems,
)

DEFAULT_LM = "smollm2-135m-instruct"
"""The default generator: SmolLM2-135M-Instruct as packaged, *untuned*, prompted with one worked example.
It keeps its general skill (a full fine-tune on GSM-Symbolic lost it on other problems) and needs no
training; the LoRA copy of ``ensemble train generator``, :data:`LORA_LM`, kept it but did not beat the untuned
LM on the evaluation templates (README, math section)."""

DEFAULT_SHOTS = 1
"""Worked examples in the default generator's prompt."""

LORA_LM = "generators/smollm2-gsm-lora"
"""Project checkpoint of ``ensemble train generator`` (LoRA on training templates, merged; same prompt as
the untuned LM, ``shots=1``)."""

EXAMPLE_QUESTION = (
    "Sara has 12 apples. She buys 3 bags with 8 apples each, then gives 10 apples to her friend. "
    "How many apples does Sara have now?"
)
"""The worked example shown in every prompt (written for this project; not from any dataset)."""

EXAMPLE_SOLUTION = (
    "The bags hold 3*8=<<3*8=24>>24 apples.\n"
    "So Sara has 12+24=<<12+24=36>>36 apples.\n"
    "After giving 10 away she has 36-10=<<36-10=26>>26 apples.\n"
    "#### 26"
)
"""Its solution in GSM8K format."""

SYSTEM_PROMPT = "Solve the math word problem step by step. Write each calculation like 3*8=24 and end with '#### <answer>'."
"""Instruction for chat models."""

_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")
_RESULT_RE = re.compile(r"=[ ]?[$€£]?[\d,]*(?:\.\d*)?$")
"""The end of a solution in the middle of (or right before) a result: ``… = ``, ``… = €18``."""
_DIGITS_RE = re.compile(r"^ ?[$€£]?[\d,]*\d[\d,]*$")
"""A token that writes digits of a number (``"7"``, ``" 12"``, ``"$3"``)."""
_FINAL_RE = re.compile(r"#### *-?[\d,.]*\d[^\d,.]")


def strip_annotations(solution: str) -> str:
    """``"3*8=<<3*8=24>>24"`` → ``"3*8=24"``: the bare format small LMs write."""
    return _ANNOTATION_RE.sub("", solution)


def in_result(text: str, top_token: str) -> bool:
    """The generator's ``focus_fn``: a result is being written after ``=`` and the LM's top token continues
    its digits (the verifiers choose those digits; once the LM would end the number, it is the LM's)."""
    return bool(_RESULT_RE.search(text)) and bool(_DIGITS_RE.match(top_token))


def solution_finished(text: str) -> bool:
    """True once ``#### N`` is followed by a non-number character (the answer is complete)."""
    return bool(_FINAL_RE.search(text))


class MathTask(Task):
    """GSM8K-format math problems.

    Args:
        source: ``"gsm_symbolic"`` (reasoning-gym, generated from the seed; ``split`` picks the
            template-disjoint train or test templates), ``"reasoning_gym:<dataset>[?key=value&…]"`` (another
            numeric reasoning-gym set, evaluation only, e.g. ``reasoning_gym:leg_counting``) or a path to a
            GSM8K ``.jsonl`` file.
        annotations: show and keep ``<<expr=value>>`` annotations in the prompt's worked example and in
            reference solutions (GSM8K's format). ``False`` (the default) uses the bare ``3*8=24`` format
            that small instruct LMs copy; the calculator completes either.
        chat: wrap the prompt in the tokenizer's chat template when it has one (``None`` = auto).
        shots: worked examples in the prompt (0 or 1).
    """

    name = "math"
    default_n = 200

    def __init__(self, source: str = "gsm_symbolic", annotations: bool = False, chat: bool | None = None,
                 shots: int = 1) -> None:
        if shots not in (0, 1):
            raise ValueError(f"shots={shots} must be 0 or 1")
        self.shots = shots
        self.source = source
        self.annotations = annotations
        self.chat = chat

    def spec(self) -> dict[str, Any]:
        """The task's settings (part of an evaluation's config hash)."""
        return {"name": self.name, "source": self.source, "annotations": self.annotations, "chat": self.chat,
                "shots": self.shots}

    # -- data -------------------------------------------------------------------------------------
    def problems(self, n: int, seed: int, split: str = "test") -> list[Problem]:
        """``n`` problems from the source (``split="train"``: GSM-Symbolic training and development templates,
        disjoint from the ``"test"`` ones)."""
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if self.source == "gsm_symbolic":
            return gsm_symbolic(n, seed, split)
        if split != "test":
            raise ValueError(f"source {self.source!r} is for evaluation only; split={split!r} needs source='gsm_symbolic'")
        if self.source.startswith(REASONING_GYM_PREFIX):
            return reasoning_gym_problems(self.source[len(REASONING_GYM_PREFIX):], n, seed)
        return read_jsonl(self.source, n)

    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        """``n`` items whose context is ``{"question": …}`` and target the GSM8K answer string."""
        return [
            Item(p.id, {"question": p.question}, p.answer, {"solution": self.render(p.solution), "index": i})
            for i, p in enumerate(self.problems(n, seed, split))
        ]

    def render(self, solution: str) -> str:
        """A reference solution in this task's format (annotations kept or stripped)."""
        return solution if self.annotations else strip_annotations(solution)

    # -- generation hooks ---------------------------------------------------------------------------
    def prompt(self, context: Any, tokenizer: Any = None) -> str:
        """The prompt: one worked example, then the question.

        Args:
            context: ``{"question": …}`` or the question string.
            tokenizer: when it has a chat template (and ``chat`` is not False), the prompt is a chat with
                a system instruction, the example as one user/assistant turn, then the question.
        """
        question = context["question"] if isinstance(context, dict) else str(context)
        example = self.render(EXAMPLE_SOLUTION)
        use_chat = self.chat if self.chat is not None else bool(getattr(tokenizer, "chat_template", None))
        if use_chat and tokenizer is not None:
            shot = [{"role": "user", "content": EXAMPLE_QUESTION}, {"role": "assistant", "content": example}]
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, *shot[: 2 * self.shots],
                        {"role": "user", "content": question}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        shot = f"Question: {EXAMPLE_QUESTION}\nAnswer: {example}\n\n" if self.shots else ""
        return f"{shot}Question: {question}\nAnswer:"

    def generator_hooks(self, tokenizer: Any = None) -> dict[str, Callable]:
        """``prompt_fn``, ``force_fn`` (the calculator), ``stop_fn`` and ``focus_fn`` (result digits) for a
        CausalLMGenerator."""
        bare = not self.annotations
        return {
            "prompt_fn": lambda context: self.prompt(context, tokenizer),
            "force_fn": lambda text: calculator_force(text, bare=bare),
            "stop_fn": solution_finished,
            "focus_fn": in_result,
        }

    stop_strings: tuple[str, ...] = ("\nQuestion:", "\n\n\n")
    """A solution also ends when the LM starts another question or runs into blank lines."""

    # -- answer and metric ------------------------------------------------------------------------
    def answer(self, output: Any, item: Item) -> str:
        """GSM8K's extraction: the number after ``#### `` (commas removed) or ``[invalid]``."""
        return extract_answer(str(output))

    def metric(self, answer: Any, item: Item) -> float:
        """Exact match of the extracted answer with the target (1.0 or 0.0)."""
        return float(is_correct(f"#### {answer}", str(item.target)))

    # -- evaluation and Serve ---------------------------------------------------------------------
    def settings_for(self, tiny: bool = False) -> dict[str, Any]:
        """Default :class:`~ensemble.tasks.math.solver.EvalSpec` fields; ``tiny``: tiny real models
        (a 2-layer LM, untrained verifiers on a tiny encoder) and short solutions."""
        if not tiny:
            return {}
        return {"lm": "tiny-causal-lm", "verifiers": {"numeric_verifier": {"checkpoint": None},
                                                      "minilm_verifier": {"checkpoint": None, "encoder": "tiny-text-encoder"}},
                "token": {"max_new_tokens": 6, "top_k": 4, "steps_per_token": 1, "min_p": 0.0}, "beams": (1, 2),
                "task": {"shots": 0}}  # the tiny LM's context is too short for the worked example

    def build_solver(self, settings: dict[str, Any] | None = None) -> Any:
        """A :class:`~ensemble.tasks.math.solver.MathEvaluator` for ``settings`` (``EvalSpec`` fields;
        this task's own settings are used for its prompt)."""
        from ensemble.tasks.math.solver import EvalSpec, MathEvaluator

        settings = dict(settings or {})
        settings["task"] = {**settings.get("task", {"shots": DEFAULT_SHOTS}), "source": self.source}
        return MathEvaluator(EvalSpec(**settings))

    def table(self, rows: list[dict[str, Any]], systems: list[str]) -> str:
        """Accuracy ± 95 % interval per system, problems won / lost against the LM alone, speed."""
        from ensemble.tasks.math.solver import math_table

        return math_table(rows, systems)

    def request_model(self) -> Any:
        """``POST /v1/math``: ``{"question", "system", "seed"}``."""
        from ensemble.tasks.math.serve import MathRequest

        return MathRequest

    def request_item(self, request: Any) -> tuple[Item, str, int]:
        """The item of a served question (no target: the metric of a served answer is not known)."""
        return Item("request", {"question": request.question}, None, {}), request.system, request.seed

    def response(self, row: dict[str, Any]) -> dict[str, Any]:
        """Solution text, answer, rounds and each verifier's moved tokens."""
        from ensemble.tasks.math.serve import math_response

        return math_response(row)

    def text_request(self, prompt: str, system: str | None, seed: int, media: tuple[bytes, ...] = ()) -> Any:
        """The math request of a chat or completion prompt: the prompt is the word problem (no attachments)."""
        from ensemble.tasks.math.serve import MathRequest

        if media:
            raise ValueError("the math task reads only text: remove the attached image/video parts")
        fields = {"question": prompt, "seed": seed} | ({"system": system} if system else {})
        return MathRequest(**fields)

    def response_text(self, response: dict[str, Any]) -> str:
        """The solution text."""
        return response["solution"]

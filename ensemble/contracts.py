"""The core contracts: Scorer, Generator, Task, and the values that pass between them.

A consensus round is **propose → score → aggregate → refine → stop?**:

* a :class:`Generator` turns its explicit, picklable *state* into a :class:`Proposal` of candidates;
* every :class:`Scorer` rates the candidates (higher is better; energy = −score), returning a
  :class:`ScoreOutput` — and, for differentiable scorers asked for it, the gradient of its scores
  with respect to the candidates;
* a ``ScorerEnsemble`` aggregates them into ``Feedback``;
* the generator refines its state from the feedback with its *update rule* (gradient, token, selection).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

UpdateRule = Literal["gradient", "token", "selection"]
UPDATE_RULES: tuple[str, ...] = ("gradient", "token", "selection")


class ContextError(ValueError):
    """A context the generator or a scorer cannot use (the caller's input, not a fault of the system).

    Raised by ``check_context``; servers answer it with a 4xx and its one-line message.
    """


def check_vector(context: Any, key: str, length: int, limit: float = 1e6) -> None:
    """Raise :class:`ContextError` unless ``context[key]`` (if present) is ``length`` finite numbers in ±``limit``."""
    if not isinstance(context, dict) or key not in context:
        return
    value = context[key]
    if not isinstance(value, list | tuple) or len(value) != length:
        raise ContextError(f"context[{key!r}] must be a list of {length} numbers, got {_kind(value)}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise ContextError(f"context[{key!r}] must hold numbers, got {_kind(x)}")
        if not abs(x) <= limit:  # also refuses NaN
            raise ContextError(f"context[{key!r}] values must be finite and within ±{limit:g}, got {x!r}")


def _kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return type(value).__name__


@dataclass
class Proposal:
    """Candidates a generator puts to the scorers in one round.

    Attributes:
        candidates: what the scorers rate. A list of strings (token rule: prefix + candidate token),
            a float tensor of shape ``[N, ...]`` (gradient rule: the current samples), or any
            sequence a task's scorers understand (selection rule: e.g. rendered camera views).
        need_grad: ask differentiable scorers for d score / d candidates (gradient rule).
        info: generator-side bookkeeping shown in round records (e.g. which beam a candidate extends).
        scorers: ask only the ensemble's scorers of these names this round (``None``: all of them), e.g.
            a verifier of whole solutions is left out of token rounds and asked only in a final selection.
    """

    candidates: Any
    need_grad: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    scorers: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.candidates)


@dataclass
class ScoreOutput:
    """One scorer's answer for one proposal.

    Attributes:
        scores: float tensor of shape ``[N]``, one per candidate; higher is better.
        grad: for differentiable scorers asked with ``need_grad``: d(scores[i]) / d(candidates[i]),
            a tensor shaped like the candidates; otherwise ``None``.
        abstain: the scorer has nothing to say about these candidates (e.g. a numeric verifier asked to
            choose between words, an LM whose distribution over them is flat). The ensemble then combines
            only the scorers that spoke, their weights renormalised, instead of counting a zero vote;
            ``scores`` must still hold ``N`` finite numbers (they are recorded, not used).
    """

    scores: Any
    grad: Any = None
    abstain: bool = False


class Scorer(ABC):
    """A pre-trained model that rates candidates for a context; higher is better.

    Subclasses implement :meth:`score`. Every scorer has the same call shape, so the ensemble, the
    Ray adapters and the contract tests treat them alike. :meth:`ascore` runs :meth:`score` in a
    worker thread (torch releases the GIL), so in-process scorers are awaited concurrently; remote
    adapters override it with a real asynchronous call.
    """

    #: True when :meth:`score` can return gradients with respect to tensor candidates.
    differentiable: ClassVar[bool] = False
    #: The candidate modality the scorer understands: "text", "image" or "views".
    modality: ClassVar[str] = "text"

    @abstractmethod
    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """Rate ``candidates`` for ``context``.

        Args:
            context: the task's conditioning (a question, a prompt and class, a goal …).
            candidates: see :class:`Proposal`.
            need_grad: return gradients of the scores w.r.t. tensor candidates. Scorers that are not
                differentiable raise ``TypeError`` when asked.

        Returns:
            A :class:`ScoreOutput` with ``scores`` of shape ``[N]``.
        """

    async def ascore(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """Awaitable :meth:`score`; runs in a worker thread so several scorers overlap."""
        return await asyncio.to_thread(self.score, context, candidates, need_grad=need_grad)

    def check_context(self, context: Any) -> None:
        """Raise :class:`ContextError` for a context this scorer cannot use (default: any is fine)."""
        return None

    async def acheck_context(self, context: Any) -> None:
        """Awaitable :meth:`check_context` (remote adapters ask their actor)."""
        self.check_context(context)

    def check_grad_request(self, need_grad: bool) -> None:
        """Raise a clear error when gradients are requested from a non-differentiable scorer."""
        if need_grad and not self.differentiable:
            raise TypeError(f"{type(self).__name__} is not differentiable; it cannot serve the gradient rule")


class Generator(ABC):
    """Proposes candidates and refines its state from the scorers' feedback.

    The state of a round is an explicit, picklable value, so any worker can resume it. A generator
    never holds the scorers: :func:`ensemble.consensus.run_consensus` is the one loop that joins them.
    """

    #: Which of the three update rules this generator applies: "gradient", "token" or "selection".
    update_rule: ClassVar[str] = "selection"

    @abstractmethod
    def init_state(self, context: Any, seed: int) -> Any:
        """The state before round 0 for ``context``, deterministic in ``seed``."""

    def check_context(self, context: Any) -> None:
        """Raise :class:`ContextError` for a context this generator cannot use (default: any is fine)."""
        return None

    @abstractmethod
    def propose(self, state: Any, context: Any) -> Proposal:
        """Candidates for this round."""

    @abstractmethod
    def refine(self, state: Any, proposal: Proposal, feedback: Any) -> Any:
        """Apply the update rule; returns the next state (the input state may be reused)."""

    @abstractmethod
    def is_done(self, state: Any) -> bool:
        """True once the generator has nothing left to refine (e.g. every beam ended)."""

    @abstractmethod
    def output(self, state: Any) -> Any:
        """The result carried by ``state`` (text, image tensor, executed plan …)."""

    def describe(self, state: Any, proposal: Proposal, feedback: Any) -> dict[str, Any]:
        """Generator-specific facts for the round record (e.g. the token chosen). Optional.

        Called after :meth:`refine` with the refined ``state``, the round's proposal and feedback.
        """
        return {}


@dataclass
class Item:
    """One evaluation item.

    Attributes:
        id: stable identifier (used to key resumable result files).
        context: what the generator and the scorers condition on.
        target: the reference answer for the metric.
        meta: free-form extras (source dataset, template …).
    """

    id: str
    context: Any
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """Glue only: items from a dataset, the components to use, the answer and the metric."""

    #: Registry name, equal to the folder name.
    name: ClassVar[str] = ""
    #: Items an evaluation draws when none are asked for.
    default_n: ClassVar[int] = 100
    #: Largest Serve request body (bytes, checked before parsing) unless the server sets its own limit;
    #: tasks that take uploads (a video) raise it.
    max_request_bytes: ClassVar[int] = 65536

    @abstractmethod
    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        """``n`` evaluation items drawn deterministically from ``seed``."""

    @abstractmethod
    def answer(self, output: Any, item: Item) -> Any:
        """Turn a consensus result's output into the task's answer."""

    @abstractmethod
    def metric(self, answer: Any, item: Item) -> float:
        """Score an answer against the item's target (1.0 = correct for accuracy tasks)."""

    # -- the evaluation and Serve contract ---------------------------------------------------------
    # A task names its systems (the rows of its results table), builds a solver from a small picklable
    # spec, and turns result rows into a table and Serve responses. Evaluation (local or Ray) and Serve
    # use only these methods.

    def build_solver(self, settings: dict[str, Any] | None = None) -> Solver:
        """The solver of this task for ``settings`` (the task's solver settings; ``None``: defaults)."""
        raise NotImplementedError(f"task {self.name!r} has no solver")

    def settings_for(self, tiny: bool = False) -> dict[str, Any]:
        """Default solver settings; ``tiny=True``: tiny real models (tests, smoke runs)."""
        return {}

    def table(self, rows: list[dict[str, Any]], systems: list[str]) -> str:
        """A Markdown table of ``rows`` (one line per system: mean metric with its 95 % interval …)."""
        from ensemble.eval.table import metric_table

        return metric_table(rows, systems)

    def request_model(self) -> Any:
        """The pydantic model of a Serve request for this task (``None``: not served)."""
        return None

    def request_item(self, request: Any) -> tuple[Item, str, int]:
        """``(item, system, seed)`` of a validated Serve request."""
        raise NotImplementedError(f"task {self.name!r} is not served")

    def response(self, row: dict[str, Any]) -> dict[str, Any]:
        """The Serve response of a result row (default: the row itself)."""
        return row

    def text_request(self, prompt: str, system: str | None, seed: int, media: tuple[bytes, ...] = ()) -> Any:
        """A text task's Serve request for a prompt (OpenAI-compatible endpoints); ``system`` ``None``
        means the default system; ``media``: the files attached to the message (images, videos), which a
        task that takes none refuses with a ``ValueError``. Tasks whose output is not text leave this
        unimplemented."""
        raise NotImplementedError(f"task {self.name!r} is not a text task")

    def response_text(self, response: dict[str, Any]) -> str:
        """The generated text of a Serve response (text tasks)."""
        raise NotImplementedError(f"task {self.name!r} is not a text task")


ROW_FIELDS: tuple[str, ...] = ("item_id", "system", "config_hash", "seed", "answer", "metric", "scorers",
                               "timings", "extras")
"""The one result-row format of every task. ``scorers``: per-scorer attribution summary (name → numbers);
``timings``: seconds (``seconds`` at least); ``extras``: task-specific fields (JSON-ready)."""


def make_row(item: Item, system: str, config_hash: str, seed: int, answer: Any, metric: float,
             seconds: float, scorers: dict[str, Any] | None = None, extras: dict[str, Any] | None = None,
             timings: dict[str, float] | None = None) -> dict[str, Any]:
    """A result row in the one format (see :data:`ROW_FIELDS`)."""
    return {"item_id": item.id, "system": system, "config_hash": config_hash, "seed": int(seed), "answer": answer,
            "metric": float(metric), "scorers": dict(scorers or {}),
            "timings": {"seconds": round(float(seconds), 4), **(timings or {})}, "extras": dict(extras or {})}


class Solver(ABC):
    """Solves one item of a task with one named system for a seed; built once per worker.

    A solver loads its models when built, from a :class:`SolverSpec`, where it runs (a process, a Ray
    actor, a Serve replica), and is then called for many items.
    """

    task: Task

    @abstractmethod
    def systems(self) -> list[str]:
        """Every system this solver can run (its task's results-table rows)."""

    def default_systems(self) -> list[str]:
        """The systems an evaluation runs when none are named."""
        return self.systems()

    @abstractmethod
    def config_hash(self, system: str) -> str:
        """The configuration hash of ``system``: rows are keyed by (item id, this hash, seed)."""

    @abstractmethod
    def solve(self, item: Item, system: str, seed: int, callback: Any = None) -> dict[str, Any]:
        """Solve ``item`` with ``system``; the result row (see :func:`make_row`).

        Args:
            item: the item.
            system: one of :meth:`systems`.
            seed: the evaluation seed; the run's own seed is :func:`ensemble.eval.run_seed` of it.
            callback: called with ``(round_record, state)`` after every consensus round.
        """

    def check_systems(self, systems: list[str]) -> None:
        """Raise a clear error for a system this solver cannot run."""
        bad = [s for s in systems if s not in self.systems()]
        if bad:
            raise ValueError(f"unknown system(s) {bad} for task {self.task.name!r}; valid: {', '.join(self.systems())}")


@dataclass
class SolverSpec:
    """What a worker builds its solver from; small and picklable (crosses process boundaries).

    Attributes:
        task: registered task name.
        task_kwargs: the task's constructor arguments.
        settings: the task's solver settings (models, budgets …; see the task's ``settings_for``).
    """

    task: str
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def build_task(self) -> Task:
        """The task object."""
        from ensemble.registry import TASKS

        return TASKS.make(self.task, **self.task_kwargs)

    def build(self) -> Solver:
        """The solver (loads its models)."""
        return self.build_task().build_solver(self.settings)

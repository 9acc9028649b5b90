"""Workers: plain classes built from a spec where they run; Ray turns them into actors elsewhere.

A worker never receives a model: it receives a :class:`~actors.spec.ComponentSpec` and builds the
component in :meth:`Worker.setup` on its own node. Every method also works in-process (the debugging
path: zero remote workers), and :func:`actors.placement.spawn` is the one place that makes a worker an
actor. A restarted actor (``max_restarts``) runs ``__init__`` again and rebuilds lazily on its first
call, so a crashed worker comes back with the same component.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections.abc import Sequence
from typing import Any

import torch

from actors.spec import ComponentSpec
from ensemble.contracts import ScoreOutput, Scorer

#: One scorer call: ``(context, candidates, need_grad)``.
ScoreCall = tuple[Any, Any, bool]


class Worker:
    """Base of all workers: lazy setup from a spec, health, stop, state get/set.

    Args:
        spec: what to build.
    """

    def __init__(self, spec: ComponentSpec) -> None:
        self.spec = spec
        self.component: Any = None
        self.started = time.time()
        self.calls = 0
        self.stopped = False

    def setup(self) -> dict[str, Any]:
        """Build the component from its spec (idempotent); returns :meth:`health`."""
        if self.component is None:
            self.component = self.spec.build()
        return self.health()

    def _ready(self) -> Any:
        if self.stopped:
            raise RuntimeError(f"{self.spec.kind} worker {self.spec.name!r} was stopped")
        if self.component is None:
            self.setup()
        return self.component

    def health(self) -> dict[str, Any]:
        """Liveness facts: built?, pid, host, calls served, uptime."""
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "ready": self.component is not None and not self.stopped,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "calls": self.calls,
            "uptime_s": time.time() - self.started,
        }

    def assert_healthy(self) -> None:
        """Raise when the worker cannot serve calls."""
        self._ready()

    def stop(self) -> None:
        """Release the component (and its memory); later calls raise."""
        self.component = None
        self.stopped = True

    def get_state(self) -> dict[str, Any]:
        """What a replacement worker needs to continue: the spec and the call count."""
        return {"spec": self.spec, "calls": self.calls}

    def set_state(self, state: dict[str, Any]) -> None:
        """Adopt a state from :meth:`get_state` (rebuilding when the spec differs)."""
        if state["spec"] != self.spec:
            self.spec, self.component = state["spec"], None
        self.calls = int(state.get("calls", 0))


class ScorerWorker(Worker):
    """Serves one scorer: single calls and micro-batches of calls from several consensus loops."""

    def describe(self) -> dict[str, Any]:
        """The scorer's class attributes the driver needs without building it locally."""
        scorer: Scorer = self._ready()
        return {"differentiable": bool(scorer.differentiable), "modality": scorer.modality}

    def check_context(self, context: Any) -> None:
        """:meth:`Scorer.check_context` (raises :class:`~ensemble.contracts.ContextError`)."""
        self._ready().check_context(context)

    def score(self, context: Any, candidates: Any, need_grad: bool = False) -> ScoreOutput:
        """One :meth:`Scorer.score` call."""
        scorer: Scorer = self._ready()
        self.calls += 1
        return scorer.score(context, candidates, need_grad=need_grad)

    def score_many(self, calls: Sequence[ScoreCall]) -> list[ScoreOutput | Exception]:
        """Score several calls (from several loops) with as few scorer passes as possible.

        Calls that share the context, ``need_grad`` and candidate shape are concatenated into one
        :meth:`Scorer.score` call and the output is split back. A scorer that defines
        ``score_many(calls)`` itself (e.g. a batched forward over different contexts) is used as is.

        Returns:
            One entry per call, in order: its :class:`ScoreOutput`, or the exception it raised (so one
            bad call does not fail the others in its batch).
        """
        scorer: Scorer = self._ready()
        self.calls += 1
        own = getattr(scorer, "score_many", None)
        if callable(own):
            return list(own(list(calls)))
        out: list[ScoreOutput | Exception | None] = [None] * len(calls)
        for group in group_calls(calls):
            context, _, need_grad = calls[group[0]]
            try:
                merged, sizes = concat_candidates([calls[i][1] for i in group])
                result = scorer.score(context, merged, need_grad=need_grad)
                for i, part in zip(group, split_output(result, sizes), strict=True):
                    out[i] = part
            except Exception as err:  # noqa: BLE001 - reported per call
                for i in group:
                    out[i] = err
        return out  # type: ignore[return-value]


def _context_key(context: Any) -> bytes:
    try:
        return pickle.dumps(context, protocol=5)
    except Exception:  # noqa: BLE001 - unpicklable contexts are never merged
        return repr(id(context)).encode()


def _shape_key(candidates: Any) -> tuple:
    if isinstance(candidates, torch.Tensor):
        return ("tensor", tuple(candidates.shape[1:]), str(candidates.dtype), str(candidates.device))
    if isinstance(candidates, list | tuple):
        return ("list",)
    return ("other", id(candidates))


def group_calls(calls: Sequence[ScoreCall]) -> list[list[int]]:
    """Indices of calls that can share one scorer pass (same context, need_grad and call shape)."""
    groups: dict[tuple, list[int]] = {}
    for i, (context, candidates, need_grad) in enumerate(calls):
        key = (_context_key(context), bool(need_grad), _shape_key(candidates))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def concat_candidates(parts: Sequence[Any]) -> tuple[Any, list[int]]:
    """Concatenate candidate batches (tensors along dim 0, or lists); returns ``(merged, sizes)``."""
    sizes = [len(p) for p in parts]
    if len(parts) == 1:
        return parts[0], sizes
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts), dim=0), sizes
    if all(isinstance(p, list | tuple) for p in parts):
        return [c for p in parts for c in p], sizes
    raise TypeError(f"cannot concatenate candidates of types {sorted({type(p).__name__ for p in parts})}")


def split_output(out: ScoreOutput, sizes: Sequence[int]) -> list[ScoreOutput]:
    """Split a :class:`ScoreOutput` of ``sum(sizes)`` candidates back into one per call."""
    if len(sizes) == 1:
        return [out]
    scores = torch.as_tensor(out.scores)
    if scores.numel() != sum(sizes):
        raise ValueError(f"scorer returned {scores.numel()} scores for {sum(sizes)} merged candidates")
    score_parts = torch.split(scores.flatten(), list(sizes))
    grad_parts: Sequence[Any] = [None] * len(sizes)
    if out.grad is not None:
        grad_parts = torch.split(torch.as_tensor(out.grad), list(sizes))
    return [
        ScoreOutput(scores=s.clone(), grad=None if g is None else g.clone(), abstain=out.abstain)
        for s, g in zip(score_parts, grad_parts, strict=True)
    ]


class Cancelled(RuntimeError):
    """A solver call stopped because its caller cancelled it."""


def _cancelled() -> bool:
    """Whether the running Ray actor task was cancelled (``False`` outside a Ray task)."""
    try:
        import ray

        return bool(ray.get_runtime_context().is_canceled())
    except Exception:  # noqa: BLE001 - not in a task (local use), or a Ray without the flag
        return False


def pin_render_threads() -> int:
    """Keep this worker's software rendering on the CPUs Ray reserved for it; returns that count.

    Mesa's llvmpipe (MuJoCo's EGL renderer without a GPU) starts one render thread per core of the
    machine, so N workers on N cores would each spread over all of them. Set before the first render
    (a worker's solver is built after this); an ``LP_NUM_THREADS`` already in the environment wins.
    """
    cpus = 1.0
    try:
        import ray

        # only ask Ray when connected: get_runtime_context() would otherwise start a default local
        # instance (in /tmp/ray, with a dashboard) as a side effect of building an environment
        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # noqa: BLE001 - outside a Ray worker
        cpus = 1.0
    n = max(1, int(cpus))
    os.environ.setdefault("LP_NUM_THREADS", str(n))
    return n


class SolverWorker:
    """Serves a task's solver, built where it runs from a small picklable spec.

    Args:
        spec: a :class:`~ensemble.contracts.SolverSpec` (task name, task kwargs, solver settings); the
            solver and its models are built in :meth:`setup`, once.
    """

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.solver: Any = None
        self.calls = 0

    def setup(self) -> dict[str, Any]:
        """Build the solver and load its models; idempotent."""
        if self.solver is None:
            pin_render_threads()
            self.solver = self.spec.build()
            if hasattr(self.solver, "setup"):
                self.solver.setup()
        return self.health()

    def solve(self, item: Any, system: str, seed: int) -> dict[str, Any]:
        """One item: the solver's result row. A ``ray.cancel`` of the call stops the run after its current
        round (the consensus callback checks the task's cancellation flag) and raises :class:`Cancelled`."""
        self.setup()
        self.calls += 1
        row = self.solver.solve(item, system, seed, callback=lambda _record, _state: _cancelled())
        if _cancelled():
            raise Cancelled(f"{system} on {item.id} was cancelled by its caller")
        return row

    def solve_stream(self, item: Any, system: str, seed: int) -> Any:
        """One item, streamed: ``{"round": record}`` as each consensus round ends, then ``{"row": row}``.

        On Ray call it as a streaming generator (``num_returns="streaming"``). The solver runs in a thread
        of this worker; its round callback feeds the stream.
        """
        import queue
        import threading

        from actors.coordinator import jsonable

        self.setup()
        self.calls += 1
        rounds: queue.Queue = queue.Queue()
        done: dict[str, Any] = {}
        stop = (
            threading.Event()
        )  # set when the caller cancels or drops the stream: the loop ends after its round

        def on_round(record: Any, _state: Any) -> bool:
            rounds.put(jsonable(record.to_dict()))
            return stop.is_set()

        def work() -> None:
            try:
                done["row"] = self.solver.solve(item, system, seed, callback=on_round)
            except BaseException as err:  # noqa: BLE001 - re-raised in the stream
                done["error"] = err
            rounds.put(None)

        solving = threading.Thread(target=work, daemon=True)
        solving.start()
        try:
            while True:
                try:
                    record = rounds.get(timeout=0.2)
                except queue.Empty:
                    if _cancelled():  # the flag is readable only from this (the task's) thread
                        stop.set()
                        solving.join()
                        raise Cancelled(f"{system} on {item.id} was cancelled by its caller") from None
                    continue
                if record is None:
                    break
                if _cancelled():
                    stop.set()
                yield {"round": record}
        finally:
            stop.set()  # also when the generator is closed early
        if "error" in done:
            raise done["error"]
        if _cancelled():
            raise Cancelled(f"{system} on {item.id} was cancelled by its caller")
        yield {"row": done["row"]}

    def health(self) -> dict[str, Any]:
        """Built?, task, pid, calls served."""
        return {
            "task": self.spec.task,
            "ready": self.solver is not None,
            "pid": os.getpid(),
            "calls": self.calls,
        }

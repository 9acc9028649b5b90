"""Remote adapters: the core contracts over Ray actor handles.

:class:`RemoteScorer` is a :class:`~ensemble.contracts.Scorer` whose ``ascore`` awaits a call to a
:class:`~actors.workers.ScorerWorker` actor (directly, or through a cross-loop
:class:`~actors.batching.Batcher`). The ensemble and :func:`ensemble.consensus.arun_consensus` run
unchanged: a scorer actor that dies or misses the per-call timeout is dropped for the round, its
weight renormalised away, and the round record names it; Ray restarts the actor for later rounds.
Cancelling the awaiting coroutine (a cancelled loop, a timeout) cancels the Ray call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.batching import BatchConfig, Batcher
from actors.workers import ScoreCall
from ensemble.contracts import ScoreOutput, Scorer


class ScorerCallError(RuntimeError):
    """A remote scorer call failed (actor died, call raised); the message is one line, no Ray traceback."""


def _first_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


async def await_ref(ref: ray.ObjectRef) -> Any:
    """Await an object ref; if the awaiting task is cancelled, cancel the Ray call too.

    Ray's errors become one-line errors: a dead actor a :class:`ScorerCallError`, an error raised by the
    call the same exception class as raised remotely (e.g. :class:`~ensemble.contracts.ContextError`).
    """
    try:
        return await ref
    except asyncio.CancelledError:
        ray.cancel(ref)
        raise
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if isinstance(getattr(err, "cause", None), Exception) else None
        if cause is not None and type(cause).__module__.startswith("ensemble"):
            raise type(cause)(*cause.args) from None
        raise ScorerCallError(_first_line(err)) from None
    except ray.exceptions.RayError as err:
        raise ScorerCallError(_first_line(err)) from None


async def actor_state(handle: ray.actor.ActorHandle, timeout_s: float = 2.0) -> dict[str, Any]:
    """Liveness of a worker actor: ``{"state": "ok" | "dead" | "restarting" | "unresponsive", ...}``.

    ``dead`` means gone for good (killed, or out of restarts); ``restarting`` and ``unresponsive``
    (busy or hung past ``timeout_s``) may recover.
    """
    try:
        health = await asyncio.wait_for(handle.health.remote(), timeout_s)
        return {"state": "ok", **(health if isinstance(health, dict) else {})}
    except TimeoutError:
        return {"state": "unresponsive", "reason": f"no health answer within {timeout_s:g} s"}
    except ray.exceptions.ActorDiedError as err:
        return {"state": "dead", "reason": _first_line(err)}
    except ray.exceptions.ActorUnavailableError as err:
        return {"state": "restarting", "reason": _first_line(err)}
    except Exception as err:  # noqa: BLE001 - report, never raise from a health check
        return {"state": "error", "reason": _first_line(err)}


class RemoteScorer(Scorer):
    """A scorer living in a Ray actor.

    Args:
        handle: a :class:`~actors.workers.ScorerWorker` actor handle.
        name: the scorer's name in the ensemble (for messages).
        differentiable: the remote scorer's ``differentiable`` flag.
        modality: the remote scorer's ``modality``.
        batch: cross-loop micro-batching; ``None`` or ``max_batch=1`` sends every call on its own.
    """

    def __init__(
        self,
        handle: ray.actor.ActorHandle,
        name: str,
        differentiable: bool = False,
        modality: str = "text",
        batch: BatchConfig | None = None,
    ) -> None:
        self.handle = handle
        self.name = name
        self.differentiable = differentiable  # type: ignore[misc] - instance value mirrors the remote class
        self.modality = modality  # type: ignore[misc]
        self.batcher = Batcher(self._send, batch) if batch is not None and batch.enabled else None

    @classmethod
    async def connect(
        cls, handle: ray.actor.ActorHandle, name: str, batch: BatchConfig | None = None
    ) -> RemoteScorer:
        """Ask the actor what it serves (building its scorer if needed) and wrap it."""
        info = await await_ref(handle.describe.remote())
        return cls(handle, name, info["differentiable"], info["modality"], batch)

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """Blocking remote call (for scripts; loops use :meth:`ascore`)."""
        self.check_grad_request(need_grad)
        return ray.get(self.handle.score.remote(context, candidates, need_grad))

    async def ascore(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """Awaitable remote call, micro-batched with other loops' calls when batching is on."""
        self.check_grad_request(need_grad)
        if self.batcher is not None:
            return await self.batcher.submit(context, candidates, need_grad)
        return await await_ref(self.handle.score.remote(context, candidates, need_grad))

    async def acheck_context(self, context: Any) -> None:
        """Ask the actor's scorer (raises :class:`~ensemble.contracts.ContextError`)."""
        await await_ref(self.handle.check_context.remote(context))

    async def _send(self, calls: list[ScoreCall]) -> list[Any]:
        return await await_ref(self.handle.score_many.remote(calls))

    def __repr__(self) -> str:
        return f"RemoteScorer({self.name!r}, batched={self.batcher is not None})"

"""Micro-batching of scorer calls across concurrent consensus loops.

Many loops in one coordinator each ask a scorer to rate their own candidates. A :class:`Batcher`
holds calls for at most ``max_wait_s`` (or until ``max_batch`` calls are waiting) and sends them as
one ``score_many`` call; the scorer worker concatenates the calls that share a call shape into a
single forward pass and splits the answer back. A loop that is cancelled (or times out) while its
call waits is simply left out of the batch; a batch whose callers have all gone is cancelled.

The batcher is pure asyncio: the ``send`` function it is given does the remote call, so the logic is
tested without Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.workers import ScoreCall

#: Sends a batch of calls; returns one ScoreOutput (or Exception) per call.
SendFn = Callable[[list[ScoreCall]], Awaitable[Sequence[Any]]]


@dataclass(frozen=True)
class BatchConfig:
    """Cross-loop micro-batching of scorer calls.

    Attributes:
        max_batch: calls sent together at most (1 disables batching).
        max_wait_s: how long the first waiting call waits for others before its batch is sent.
    """

    max_batch: int = 16
    max_wait_s: float = 0.005

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch={self.max_batch} must be >= 1 (1 disables batching)")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s={self.max_wait_s} must be >= 0")

    @property
    def enabled(self) -> bool:
        """True when calls of several loops may be merged."""
        return self.max_batch > 1


class Batcher:
    """Collects concurrent calls to one scorer and sends them in batches.

    Args:
        send: coroutine function sending a list of calls and returning one result per call (an
            exception instance in a slot fails that call only).
        config: batch size and wait.
    """

    def __init__(self, send: SendFn, config: BatchConfig | None = None) -> None:
        self.send = send
        self.config = config or BatchConfig()
        self._pending: list[tuple[ScoreCall, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task] = set()
        self.batches_sent = 0
        self.calls_sent = 0

    async def submit(self, context: Any, candidates: Any, need_grad: bool = False) -> Any:
        """Queue one call and wait for its result (cancelling the wait withdraws the call)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append(((context, candidates, need_grad), fut))
        if len(self._pending) >= self.config.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.config.max_wait_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            live = [(c, f) for c, f in self._pending[: self.config.max_batch] if not f.done()]
            del self._pending[: self.config.max_batch]
            if live:
                task = asyncio.get_running_loop().create_task(self._run(live))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _run(self, batch: list[tuple[ScoreCall, asyncio.Future]]) -> None:
        calls = [c for c, _ in batch]
        futures = [f for _, f in batch]
        self.batches_sent += 1
        self.calls_sent += len(calls)
        send = asyncio.ensure_future(self.send(calls))
        gone = _when_all_cancelled(futures)
        try:
            await asyncio.wait({send, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            send.cancel()
            raise
        if not send.done():  # every caller went away: cancel the remote call
            send.cancel()
            return
        gone.cancel()
        try:
            results = list(send.result())
        except BaseException as err:  # noqa: BLE001 - the whole batch failed
            results = [err] * len(calls)
        if len(results) != len(calls):
            err = RuntimeError(f"scorer returned {len(results)} results for a batch of {len(calls)}")
            results = [err] * len(calls)
        for fut, res in zip(futures, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def aclose(self) -> None:
        """Cancel pending calls and in-flight batches."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        for task in list(self._inflight):
            task.cancel()


def _when_all_cancelled(futures: list[asyncio.Future]) -> asyncio.Future:
    """A future that completes once every caller's future is cancelled (all callers gone)."""
    gone: asyncio.Future = asyncio.get_running_loop().create_future()
    remaining = [len(futures)]

    def on_done(fut: asyncio.Future) -> None:
        if fut.cancelled():
            remaining[0] -= 1
            if remaining[0] == 0 and not gone.done():
                gone.set_result(None)

    for fut in futures:
        fut.add_done_callback(on_done)
    return gone

"""The coordinator: one process that runs many consensus loops at once.

It holds the generator (built from its spec where it runs) and talks to the scorers through
:class:`~actors.remote.RemoteScorer` adapters — one shared cross-loop :class:`~actors.batching.Batcher`
per scorer, so the calls of concurrent loops that share a call shape become one scorer pass. Every
loop is :func:`ensemble.consensus.arun_consensus`, unchanged: scorers are awaited concurrently with the
per-call timeout of the ensemble config; a dead or slow scorer is dropped for the round and recorded.

It is a plain class with async methods: :func:`actors.placement.spawn` makes it an async actor, and
with ``scorers=None`` it builds the scorers in-process (the debugging path, no Ray needed).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import torch

from actors.batching import BatchConfig
from actors.spec import RunSpec
from ensemble.aggregate import ScorerEnsemble
from ensemble.consensus import ConsensusResult, RoundRecord, arun_consensus
from ensemble.contracts import ContextError, Item, Scorer

#: Round-record fields that measure time, so they differ between two otherwise identical runs.
TIMING_FIELDS = ("latency_s", "duration_s")


class Coordinator:
    """Runs consensus loops for one :class:`RunSpec`, many at a time.

    Args:
        run: generator, scorers, ensemble and consensus configs (and the task, to solve items).
        scorers: scorer name → :class:`~actors.workers.ScorerWorker` actor handle. ``None`` builds
            every scorer in this process instead (zero remote workers).
        batch: cross-loop micro-batching of scorer calls (ignored in-process).
        index: this coordinator's index among its peers (reported in results).
    """

    def __init__(
        self,
        run: RunSpec,
        scorers: dict[str, Any] | None = None,
        batch: BatchConfig | None = None,
        index: int = 0,
    ) -> None:
        self.run_spec = run
        self.scorer_handles = scorers
        self.batch = batch or BatchConfig()
        self.index = index
        self.generator: Any = None
        self.task: Any = None
        self.ensemble: ScorerEnsemble | None = None
        self._loops: dict[str, asyncio.Task] = {}
        self._ids = itertools.count()
        self._setup_lock: asyncio.Lock | None = None
        self.finished = 0

    # -- setup ---------------------------------------------------------------------------------------

    async def setup(self) -> dict[str, Any]:
        """Build the generator (and task) here and connect the scorers; idempotent."""
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self.ensemble is None:
                self.generator = self.run_spec.generator.build()
                if self.run_spec.task is not None:
                    self.task = self.run_spec.task.build()
                self.ensemble = ScorerEnsemble(await self._scorers(), self.run_spec.ensemble)
        return self.health()

    async def _scorers(self) -> dict[str, Scorer]:
        specs = self.run_spec.scorer_specs()
        if self.scorer_handles is None:
            return {name: spec.build() for name, spec in specs.items()}
        from actors.remote import RemoteScorer  # imports ray; the in-process path does not need it

        missing = set(specs) - set(self.scorer_handles)
        if missing:
            raise ValueError(f"no actor handle for scorers {sorted(missing)}")
        connected = await asyncio.gather(
            *(RemoteScorer.connect(self.scorer_handles[n], n, self.batch) for n in specs)
        )
        return dict(zip(specs, connected, strict=True))

    def health(self) -> dict[str, Any]:
        """Running loops, finished loops, and per-scorer batching counters."""
        batching = {}
        for name, scorer in (self.ensemble.scorers.items() if self.ensemble else []):
            batcher = getattr(scorer, "batcher", None)
            if batcher is not None:
                batching[name] = {"batches": batcher.batches_sent, "calls": batcher.calls_sent}
        return {
            "index": self.index,
            "ready": self.ensemble is not None,
            "running": len(self._loops),
            "finished": self.finished,
            "batching": batching,
        }

    async def scorer_states(self, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
        """Every scorer's liveness (see :func:`actors.remote.actor_state`); in-process scorers are ``ok``."""
        names = list(self.run_spec.scorers)
        if self.scorer_handles is None:
            return {n: {"state": "ok"} for n in names}
        from actors.remote import actor_state

        states = await asyncio.gather(*(actor_state(self.scorer_handles[n], timeout_s) for n in names))
        return dict(zip(names, states, strict=True))

    async def liveness(self) -> dict[str, Any]:
        """:meth:`health` plus every scorer's state."""
        return {**self.health(), "scorers": await self.scorer_states()}

    # -- loops ---------------------------------------------------------------------------------------

    async def run(
        self,
        context: Any,
        seed: int | None = None,
        state: Any = None,
        start_round: int = 0,
        loop_id: str | None = None,
        queue: asyncio.Queue | None = None,
    ) -> ConsensusResult:
        """Run one consensus loop on ``context`` (seed defaults to the run's consensus seed).

        Args:
            context: the item's conditioning.
            seed: the loop's seed (``ConsensusConfig.seed`` otherwise).
            state, start_round: resume from a generator state.
            loop_id: a name to :meth:`cancel` the loop by; one is made up when omitted.
            queue: in-process streaming: each :class:`RoundRecord` is put on it as the round ends.
        """
        await self.setup()
        await self.check_context(context)
        config = self.run_spec.consensus
        if seed is not None:
            config = replace(config, seed=seed)
        callback = None if queue is None else (lambda record, _state: queue.put(record))
        loop_id = loop_id or f"loop-{next(self._ids)}"
        if loop_id in self._loops:
            raise ValueError(f"a loop named {loop_id!r} is already running on coordinator {self.index}")
        task = asyncio.ensure_future(
            arun_consensus(self.generator, self.ensemble, context, config, callback, state, start_round)
        )
        self._loops[loop_id] = task
        try:
            return await task
        finally:
            self._loops.pop(loop_id, None)
            self.finished += 1

    async def check_context(self, context: Any) -> None:
        """Raise :class:`~ensemble.contracts.ContextError` when the generator or a scorer cannot use ``context``.

        Scorers that cannot be asked (a dead actor) are skipped here: the loop drops them and records it.
        """
        self.generator.check_context(context)
        results = await asyncio.gather(*(s.acheck_context(context) for s in self.ensemble.scorers.values()),
                                       return_exceptions=True)
        for res in results:
            if isinstance(res, ContextError):
                raise res

    async def stream(self, context: Any, seed: int | None = None, loop_id: str | None = None) -> AsyncIterator[Any]:
        """Yield each :class:`RoundRecord` as its round ends, then the :class:`ConsensusResult`.

        On Ray call it as a streaming generator: ``coord.stream.options(num_returns="streaming")``.
        """
        queue: asyncio.Queue = asyncio.Queue()
        runner = asyncio.ensure_future(self.run(context, seed, loop_id=loop_id, queue=queue))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                yield runner.result()
                return
        finally:
            runner.cancel()

    async def cancel(self, loop_id: str) -> bool:
        """Cancel a running loop (and its in-flight scorer calls); False when it is not running."""
        task = self._loops.get(loop_id)
        if task is None:
            return False
        task.cancel()
        return True

    def running(self) -> list[str]:
        """Names of the loops running now."""
        return list(self._loops)

    # -- evaluation ----------------------------------------------------------------------------------

    async def solve(self, item: Item, seed: int, config_hash: str) -> dict[str, Any]:
        """Run one evaluation item and return its result row (keyed by item id, config hash, seed)."""
        await self.setup()
        if self.task is None:
            raise ValueError("this coordinator's RunSpec has no task; set RunSpec.task to solve items")
        t0 = time.perf_counter()
        result = await self.run(item.context, seed=seed, loop_id=f"{item.id}|{seed}")
        answer = self.task.answer(result.output, item)
        metric = float(self.task.metric(answer, item))
        missing = sorted({name for r in result.rounds for name in r.missing})
        return {
            "item_id": item.id,
            "config_hash": config_hash,
            "seed": seed,
            "answer": jsonable(answer),
            "target": jsonable(item.target),
            "metric": metric,
            "stop_reason": result.stop_reason,
            "rounds": len(result.rounds),
            "n_candidates": result.n_candidates,
            "missing_scorers": missing,
            "duration_s": time.perf_counter() - t0,
            "coordinator": self.index,
        }


def jsonable(value: Any) -> Any:
    """Tensors and tuples to lists, so a result row is plain JSON."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def comparable(record: RoundRecord | dict[str, Any]) -> dict[str, Any]:
    """A round record without its timing fields (for local-vs-Ray equality checks)."""
    data = record.to_dict() if isinstance(record, RoundRecord) else dict(record)
    return {k: v for k, v in data.items() if k not in TIMING_FIELDS}

"""Resources and placement: where each worker runs, and the one place workers become Ray actors.

Placement follows differentiability. Scorers that must send gradients every step (``colocated``)
live next to the generator: one copy per coordinator, packed with it on one node by a ``STRICT_PACK``
placement group (with fractional GPUs they share one card). Gradient-free scorers get their own
actors, shared by every consensus loop of every coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@dataclass(frozen=True)
class Resources:
    """Ray resources of one actor.

    Attributes:
        num_cpus: logical CPUs reserved (fractions allowed).
        num_gpus: GPUs reserved; fractions (e.g. 0.25) let several workers share one card.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"num_cpus={self.num_cpus} and num_gpus={self.num_gpus} must be >= 0")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus={self.num_gpus}: above 1, Ray needs a whole number of GPUs")

    def bundle(self) -> dict[str, float]:
        """The placement-group bundle of these resources (zero entries left out)."""
        out = {"CPU": self.num_cpus, "GPU": self.num_gpus}
        return {k: v for k, v in out.items() if v > 0} or {"CPU": 0.001}


@dataclass
class PlacementConfig:
    """How many resources each worker gets and which scorers live with the generator.

    Attributes:
        generator: resources of a coordinator (it holds the generator).
        scorer: default resources of a scorer actor.
        scorers: per-scorer overrides by scorer name.
        colocated: scorers built next to the generator — one copy per coordinator, packed on the
            generator's node (``STRICT_PACK``). Use it for differentiable scorers queried every step.
        max_restarts: how often Ray restarts a crashed worker actor (-1 = forever).
        max_task_retries: how often Ray retries a call whose actor died. Scorer calls default to 0:
            the ensemble drops a dead scorer for the round (and records it) instead of waiting for a
            restart; the next round uses the restarted actor.
        coordinator_task_retries: retries of coordinator calls (evaluation items); results are keyed,
            so a retried item is never written twice.
    """

    generator: Resources = field(default_factory=Resources)
    scorer: Resources = field(default_factory=Resources)
    scorers: dict[str, Resources] = field(default_factory=dict)
    colocated: tuple[str, ...] = ()
    max_restarts: int = 3
    max_task_retries: int = 0
    coordinator_task_retries: int = 2

    def __post_init__(self) -> None:
        self.colocated = tuple(self.colocated)
        if self.max_restarts < -1 or self.max_task_retries < -1 or self.coordinator_task_retries < -1:
            raise ValueError("max_restarts / max_task_retries / coordinator_task_retries must be >= -1")

    def for_scorer(self, name: str) -> Resources:
        """Resources of scorer ``name``."""
        return self.scorers.get(name, self.scorer)

    def check_names(self, names: list[str]) -> None:
        """Raise when overrides or ``colocated`` name scorers that are not in the ensemble."""
        unknown = (set(self.scorers) | set(self.colocated)) - set(names)
        if unknown:
            raise ValueError(f"placement names unknown scorers {sorted(unknown)}; scorers are {names}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlacementConfig:
        """Build from plain dicts, e.g. ``{"generator": {"num_gpus": 0.5}, "scorers": {"v": {...}}}``."""
        data = dict(data)
        for key in ("generator", "scorer"):
            if isinstance(data.get(key), dict):
                data[key] = Resources(**data[key])
        data["scorers"] = {n: Resources(**r) if isinstance(r, dict) else r
                           for n, r in data.get("scorers", {}).items()}
        return cls(**data)


def spawn(
    worker_cls: type,
    *args: Any,
    resources: Resources,
    max_restarts: int = 0,
    max_task_retries: int = 0,
    max_concurrency: int | None = None,
    strategy: Any = None,
    name: str | None = None,
) -> ray.actor.ActorHandle:
    """Make ``worker_cls(*args)`` a Ray actor — the one place where workers become actors.

    Args:
        worker_cls: a plain worker class (see :mod:`actors.workers`, :mod:`actors.coordinator`).
        resources: CPUs / GPUs reserved for it.
        max_restarts: Ray restarts a crashed actor this many times (-1 = forever).
        max_task_retries: Ray retries a call whose actor died this many times.
        max_concurrency: concurrent calls (async actors: coroutines); ``None`` keeps Ray's default.
        strategy: a scheduling strategy (e.g. from :func:`pack_strategy`).
        name: optional actor name (shown in the Ray state API).
    """
    options: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
    }
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    if strategy is not None:
        options["scheduling_strategy"] = strategy
    if name is not None:
        options["name"] = name
    return ray.remote(worker_cls).options(**options).remote(*args)


def pack_group(bundles: list[Resources], timeout_s: float = 60.0) -> PlacementGroup:
    """A ``STRICT_PACK`` placement group (all bundles on one node) and wait until it is placed."""
    pg = placement_group([b.bundle() for b in bundles], strategy="STRICT_PACK")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        ray.util.remove_placement_group(pg)
        want = [b.bundle() for b in bundles]
        raise RuntimeError(
            f"placement group {want} could not be placed on one node within {timeout_s}s; "
            f"cluster resources: {ray.available_resources()}. Lower num_gpus / num_cpus or add a node."
        )
    return pg


def pack_strategy(pg: PlacementGroup, bundle_index: int) -> PlacementGroupSchedulingStrategy:
    """Schedule an actor into bundle ``bundle_index`` of ``pg``."""
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=bundle_index)


class NotReadyError(ValueError):
    """Actors did not become ready in time; the message names the free resources and what to change."""


def wait_ready(refs: list[Any], what: str, timeout_s: float) -> list[Any]:
    """``ray.get(refs)`` with a clear :class:`NotReadyError` instead of a bare ``GetTimeoutError``."""
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        raise NotReadyError(
            f"{len(pending)} of {len(refs)} {what} not ready after {timeout_s:g} s (cluster free: "
            f"{ray.available_resources()}); if they wait for resources lower their CPUs/GPUs, if models "
            f"load slowly raise --setup-timeout")
    return ray.get(refs)

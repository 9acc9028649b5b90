"""Environment runners: MPC candidate rollouts sharded over a group of Ray actors holding simulator copies.

:class:`EnvRunner` is a plain class (usable in-process) holding ``copies`` world models built from a
spec on its node; :func:`actors.placement.spawn` turns it into an actor. :class:`RayRolloutExecutor`
implements :class:`ensemble.tasks.robot.world_model.RolloutExecutor` over a group of runners: the plans of a round
are split into contiguous shards, one per runner, each runner restores the planning state and rolls
its shard out, and the outcomes come back in order. A runner whose actor died (or whose environment
raised) is rebuilt — a new actor from the same spec — and its shard is retried, up to ``max_retries``
times. Rollouts are deterministic functions of (state, plan), so retries and sharding never change
an episode: the same seed gives the same episode locally and on Ray.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from actors.placement import Resources, spawn
from ensemble.tasks.robot.world_model import Outcome, RolloutExecutor, SimulatorWorldModel


@dataclass(frozen=True)
class EnvSpec:
    """What a runner builds where it runs: a gymnasium id and its keyword arguments."""

    env_id: str = "envs:Tabletop-Relations-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> SimulatorWorldModel:
        """A simulator world model from this spec."""
        from actors.workers import pin_render_threads

        os.environ.setdefault("MUJOCO_GL", "egl")
        pin_render_threads()  # a runner renders on its reserved CPUs, so runners (not render threads) scale out
        return SimulatorWorldModel(self.env_id, **self.env_kwargs)


class EnvRunner:
    """Holds environment copies and rolls plans out from a given state.

    Args:
        spec: the environment to build (lazily, on the first call).
        copies: world models held; a runner's shard is split over them in turn (one thread).
    """

    def __init__(self, spec: EnvSpec, copies: int = 1) -> None:
        self.spec, self.copies = spec, max(1, int(copies))
        self.models: list[SimulatorWorldModel] = []
        self.calls = 0
        self.rollouts_done = 0

    def setup(self) -> dict[str, Any]:
        """Build the environment copies (idempotent); returns :meth:`health`."""
        while len(self.models) < self.copies:
            self.models.append(self.spec.build())
        return self.health()

    def health(self) -> dict[str, Any]:
        """Pid, copies built, calls and rollouts served, CPU seconds used by this process."""
        return {"pid": os.getpid(), "copies": len(self.models), "calls": self.calls,
                "rollouts": self.rollouts_done, "cpu_s": time.process_time()}

    def rollouts(self, state: np.ndarray, plans: Sequence[np.ndarray], render: str) -> list[Outcome]:
        """Restore ``state`` and roll out every plan; outcomes in order."""
        self.setup()
        self.calls += 1
        out = [self.models[i % len(self.models)].rollout(state, plan, render) for i, plan in enumerate(plans)]
        self.rollouts_done += len(out)
        return out

    def crash(self) -> None:
        """Kill this process (tests of recovery)."""
        os._exit(1)

    def close(self) -> None:
        """Close the environments."""
        for model in self.models:
            model.close()
        self.models.clear()


def shard(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous, nearly equal slices covering ``range(n)`` (empty slices dropped)."""
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


class RayRolloutExecutor(RolloutExecutor):
    """Shards candidate rollouts over ``num_runners`` environment actors; rebuilds and retries failures.

    Args:
        spec: the environment every runner builds (must match the generator's world model).
        num_runners: actors in the group.
        copies: environment copies per actor.
        num_cpus: CPUs reserved per actor.
        max_retries: times a failed shard is retried on a rebuilt runner.
    """

    def __init__(
        self, spec: EnvSpec, num_runners: int = 2, copies: int = 1, num_cpus: float = 1.0, max_retries: int = 2
    ) -> None:
        if num_runners < 1:
            raise ValueError(f"num_runners={num_runners} must be at least 1")
        self.spec, self.copies, self.max_retries = spec, copies, max_retries
        self.resources = Resources(num_cpus=num_cpus)
        self.runners = [self._spawn() for _ in range(num_runners)]
        self.rebuilt = 0
        self.retried = 0
        ray.get([r.setup.remote() for r in self.runners])

    def _spawn(self) -> Any:
        return spawn(EnvRunner, self.spec, self.copies, resources=self.resources)

    def rollouts(self, state: np.ndarray, plans: Sequence[np.ndarray], render: str) -> list[Outcome]:
        """Roll the plans out in shards, one per runner; failed shards go to a rebuilt runner."""
        slices = shard(len(plans), len(self.runners))
        refs = {k: self.runners[k].rollouts.remote(state, list(plans[s]), render) for k, s in enumerate(slices)}
        results: dict[int, list[Outcome]] = {}
        for k, s in enumerate(slices):
            for attempt in range(self.max_retries + 1):
                try:
                    results[k] = ray.get(refs[k])
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
                    if attempt == self.max_retries:
                        raise
                    self._rebuild(k)
                    self.retried += 1
                    refs[k] = self.runners[k].rollouts.remote(state, list(plans[s]), render)
        return [o for k in range(len(slices)) for o in results[k]]

    def _rebuild(self, k: int) -> None:
        """Replace runner ``k`` by a new actor built from the same spec."""
        try:
            ray.kill(self.runners[k], no_restart=True)
        except Exception:  # noqa: BLE001 - the actor may be gone already
            pass
        self.runners[k] = self._spawn()
        ray.get(self.runners[k].setup.remote())
        self.rebuilt += 1

    def health(self) -> list[dict[str, Any]]:
        """Health of every runner."""
        return ray.get([r.health.remote() for r in self.runners])

    def close(self) -> None:
        """Kill the runners."""
        for runner in self.runners:
            try:
                ray.kill(runner, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.runners = []


def throughput(executor: Any, state: np.ndarray, plans: Sequence[np.ndarray], render: str, repeats: int = 3) -> float:
    """Rollouts per second of ``executor`` on ``plans`` from ``state`` (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        executor.rollouts(state, plans, render)
        best = min(best, time.perf_counter() - t0)
    return len(plans) / best

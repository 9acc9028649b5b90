"""Bring a :class:`~actors.spec.RunSpec` up on Ray: shared scorer actors, coordinators, placement groups.

Zero remote workers is the in-process path: :func:`local_coordinator` returns the same
:class:`~actors.coordinator.Coordinator` with every component built in this process.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ray

from actors.batching import BatchConfig
from actors.coordinator import Coordinator
from actors.placement import PlacementConfig, pack_group, pack_strategy, spawn, wait_ready
from actors.spec import RunSpec
from actors.workers import ScorerWorker


def connect(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Connect to Ray (or start a private local instance bound to 127.0.0.1) unless already connected.

    Args:
        address: a cluster's GCS address ("host:port") or "auto". ``None`` uses ``RAY_ADDRESS`` when
            set (e.g. inside ``ray job submit``), else starts a local instance in a private temp dir
            with no dashboard.
        num_cpus: logical CPUs of a local instance.

    Returns:
        Facts about the connection: address, node IP, and ``temp_dir`` when this call started a
        private local instance (the caller may remove it after ``ray.shutdown()``), else ``None``.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    temp = None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            temp = tempfile.mkdtemp(prefix="ic-ray-", dir="/tmp")
            ray.init(num_cpus=num_cpus, _temp_dir=temp, include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False)
    ctx = ray.get_runtime_context()
    return {"address": ctx.gcs_address, "node_ip": ray.util.get_node_ip_address(), "temp_dir": temp}


def local_coordinator(run: RunSpec) -> Coordinator:
    """The in-process coordinator: generator and scorers built here, no Ray."""
    return Coordinator(run, scorers=None)


class RayRuntime:
    """Scorer actors and coordinator actors for one run configuration.

    Gradient-free scorers get one actor each, shared by all coordinators. Scorers listed in
    ``placement.colocated`` get one actor per coordinator, packed with it on one node.

    Args:
        run: what to run.
        n_coordinators: coordinator actors (each runs many loops concurrently).
        placement: resources, co-location, restarts.
        batch: cross-loop micro-batching of scorer calls.
    """

    def __init__(
        self,
        run: RunSpec,
        n_coordinators: int = 1,
        placement: PlacementConfig | None = None,
        batch: BatchConfig | None = None,
    ) -> None:
        if n_coordinators < 1:
            raise ValueError(f"n_coordinators={n_coordinators} must be >= 1 (use local_coordinator() for none)")
        self.run = run
        self.n_coordinators = n_coordinators
        self.placement = placement or PlacementConfig()
        self.batch = batch or BatchConfig()
        self.placement.check_names(list(run.scorers))
        self.scorers: dict[str, Any] = {}
        self.colocated: list[dict[str, Any]] = []
        self.coordinators: list[Any] = []
        self.groups: list[Any] = []

    def _scorer(self, name: str, spec: Any, strategy: Any = None) -> Any:
        p = self.placement
        return spawn(ScorerWorker, spec, resources=p.for_scorer(name), max_restarts=p.max_restarts,
                     max_task_retries=p.max_task_retries, strategy=strategy)

    def start(self, timeout_s: float = 300.0) -> RayRuntime:
        """Create the actors and wait until every component is built."""
        wait_ready(self.launch(), "coordinator(s)", timeout_s)
        return self

    def launch(self) -> list[Any]:
        """Create the actors and start building their components; returns the refs to wait on."""
        p = self.placement
        specs = self.run.scorer_specs()
        self.scorers = {n: self._scorer(n, s) for n, s in specs.items() if n not in p.colocated}
        for i in range(self.n_coordinators):
            strategy, own = None, {}
            if p.colocated:
                group = pack_group([p.generator] + [p.for_scorer(n) for n in p.colocated])
                self.groups.append(group)
                strategy = pack_strategy(group, 0)
                own = {n: self._scorer(n, specs[n], pack_strategy(group, j + 1)) for j, n in enumerate(p.colocated)}
            self.colocated.append(own)
            handles = {n: (own.get(n) or self.scorers[n]) for n in specs}
            self.coordinators.append(
                spawn(Coordinator, self.run, handles, self.batch, i, resources=p.generator,
                      max_restarts=p.max_restarts, max_task_retries=p.coordinator_task_retries,
                      strategy=strategy)
            )
        return [c.setup.remote() for c in self.coordinators]

    def scorer_handles(self, coordinator: int = 0) -> dict[str, Any]:
        """Scorer name → actor handle as seen by coordinator ``coordinator``."""
        return {n: self.colocated[coordinator].get(n) or self.scorers[n] for n in self.run.scorers}

    def shutdown(self) -> None:
        """Kill this runtime's actors and remove its placement groups (the cluster keeps running)."""
        for handle in [*self.coordinators, *self.scorers.values(), *(h for d in self.colocated for h in d.values())]:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for group in self.groups:
            ray.util.remove_placement_group(group)
        self.coordinators, self.scorers, self.colocated, self.groups = [], {}, [], []

    def __enter__(self) -> RayRuntime:
        return self.start() if not self.coordinators else self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

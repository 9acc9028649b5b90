"""The evaluation engine on Ray: a task's work list on a pool of solver workers, rows appended by the driver.

``ensemble eval TASK --ray`` calls :func:`evaluate_on_ray` with the task's
:class:`~ensemble.contracts.SolverSpec` and the units (item, system, seed) not yet in the results file.
Two engines run them:

* ``actors`` (default): a fixed pool of :class:`~actors.workers.SolverWorker` actors fed by the
  driver, one unit in flight per actor (each builds the solver and loads its models once);
* ``data``: Ray Data, Ray's own batch-inference engine — ``map_batches`` over an actor pool of
  ``workers`` solvers, results streamed back to the driver as they finish.

Measured side by side on long items (``ensemble bench eval robot``, README): the actor pool starts
~15 s sooner and runs 2 workers at 1.85× one worker's items/s once warm, Ray Data at 1.65× (its
streaming executor shares the driver's CPU), so the actor pool is the default.

Either way the driver appends each finished row to the :class:`~ensemble.results.ResultsFile`, keyed
by (item id, config hash, seed): a killed job resubmitted with the same command loses nothing and
writes nothing twice; a dead worker's unit is retried on another (Ray restarts actors and retries
their calls); a unit whose solver raises is reported with its full error and not written. Works as
a plain command and submitted with ``ray job submit -- ensemble eval TASK --ray`` (Ray sets
``RAY_ADDRESS`` for the job's driver).
"""

from __future__ import annotations

import pickle
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ensemble.eval.engine import EvalReport, Unit, error_text, pending_units, select_rows
from ensemble.results import ResultsFile

ENGINES = ("data", "actors")


class SolveBatch:
    """The Ray Data callable: builds the solver once per actor, solves a batch of pickled units.

    Returns per unit its key, the row (pickled, so any JSON-ready value survives Arrow unchanged) and
    the error text (empty on success).
    """

    def __init__(self, spec: Any) -> None:
        from actors.workers import pin_render_threads

        pin_render_threads()
        self.solver = spec.build()
        if hasattr(self.solver, "setup"):
            self.solver.setup()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        keys, rows, errors = [], [], []
        for blob in batch["unit"]:
            unit: Unit = pickle.loads(blob)
            keys.append(unit.key)
            try:
                rows.append(pickle.dumps(self.solver.solve(unit.item, unit.system, unit.seed)))
                errors.append("")
            except Exception as err:  # noqa: BLE001 - reported by the driver, the run goes on
                rows.append(b"")
                errors.append(error_text(err))
        return {"key": keys, "row": rows, "error": errors}


def evaluate_on_ray(spec: Any, units: Sequence[Unit], results: ResultsFile, *, address: str | None = None,
                    workers: int | None = None, worker_cpus: float = 1.0, worker_gpus: float | None = None,
                    engine: str = "actors", progress: bool = True, max_retries: int = 3) -> EvalReport:
    """Run every unit not yet in ``results`` on Ray; the driver appends each row as it lands.

    Args:
        spec: the task's :class:`~ensemble.contracts.SolverSpec` (small, picklable).
        units: the work list (:func:`ensemble.eval.work_list`).
        results: the resumable results file.
        address: Ray address; ``None`` uses ``RAY_ADDRESS`` (jobs) or starts a private local instance.
        workers: solver workers at most; default: as many as the cluster's CPUs hold.
        worker_cpus: CPUs reserved per worker.
        worker_gpus: GPUs per worker; default 1 when the spec's ``device`` is CUDA, else 0.
        engine: ``"data"`` (Ray Data actor pool) or ``"actors"`` (fixed SolverWorker pool).
        progress: a progress bar on stderr.
        max_retries: a dead worker's unit is retried this often on another worker.
    """
    import ray

    from actors.runtime import connect

    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; valid engines: {', '.join(ENGINES)}")
    started = time.perf_counter()
    todo = pending_units(units, results)
    report = EvalReport(total=len(units), skipped=len(units) - len(todo))
    if todo:
        connect(address)
        if worker_gpus is None:
            worker_gpus = 1.0 if str(spec.settings.get("device", "cpu")).startswith("cuda") else 0.0
        cluster_cpus = ray.cluster_resources().get("CPU", 1)
        n = max(1, min(len(todo), workers or int(cluster_cpus // max(worker_cpus, 1e-9)) or 1))
        bar = _bar(report.total, report.skipped, progress)
        run = _run_data if engine == "data" else _run_actors
        try:
            for key, row, error in run(spec, todo, n, worker_cpus, worker_gpus, max_retries):
                if error:
                    report.failed[key] = error
                else:
                    report.written += int(results.append(row))
                    report.landed_s.append(time.perf_counter() - started)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    report.rows = select_rows(results, units)
    report.duration_s = time.perf_counter() - started
    return report


def _bar(total: int, done: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="eval on Ray", unit="run", file=sys.stderr)


def _run_data(spec: Any, todo: list[Unit], n: int, cpus: float, gpus: float, retries: int):  # noqa: ARG001
    """Ray Data: ``map_batches`` over an actor pool of n solvers (1..n if some die); yields (key, row, error)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items([{"unit": pickle.dumps(u)} for u in todo], override_num_blocks=len(todo))
    # Ray Data restarts a dead pool actor and retries its batch on the pool (max_restarts and
    # max_task_retries default to -1 for actor pools), so a dead worker's unit runs elsewhere.
    # All n workers start at once (an autoscaling pool that starts at 1 adds the second only after a
    # queue has built up: tens of seconds of one idle core), and each holds one unit at a time, so no
    # long unit waits behind another on a busy worker while a free one idles at the end.
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=n, initial_size=n, max_tasks_in_flight_per_actor=1)
    ds = ds.map_batches(SolveBatch, fn_constructor_args=(spec,), batch_size=1, compute=pool,
                        num_cpus=cpus, num_gpus=gpus)
    for rec in ds.iter_rows():
        yield rec["key"], (pickle.loads(rec["row"]) if not rec["error"] else None), rec["error"]


def _run_actors(spec: Any, todo: list[Unit], n: int, cpus: float, gpus: float, retries: int):
    """A fixed pool of SolverWorker actors, one unit in flight each; yields (key, row, error)."""
    import ray

    from actors.placement import Resources, spawn
    from actors.workers import SolverWorker

    handles = [spawn(SolverWorker, spec, resources=Resources(num_cpus=cpus, num_gpus=gpus), max_restarts=retries,
                     max_task_retries=retries) for _ in range(n)]
    queue, pending, free = deque(todo), {}, deque(handles)
    try:
        while queue or pending:
            while queue and free:  # every free worker gets the next unit
                unit, handle = queue.popleft(), free.popleft()
                pending[handle.solve.remote(unit.item, unit.system, unit.seed)] = (unit, handle)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                unit, handle = pending.pop(ref)
                free.append(handle)
                try:
                    yield unit.key, ray.get(ref), ""
                except Exception as err:  # noqa: BLE001 - reported, the run goes on
                    yield unit.key, None, error_text(err)
    finally:
        for h in handles:
            ray.kill(h, no_restart=True)

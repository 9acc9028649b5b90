"""Parallel evaluation on Ray: work sharded over actors, each finished row appended idempotently.

Two entry points share one driver loop:

* :func:`evaluate_on_ray` — what ``ensemble eval math --ray`` calls: the (item, system, beam) work list
  of an ``EvalSpec`` sharded over solver actors, each building a ``MathEvaluator`` where it runs;
* :func:`evaluate_run_on_ray` — any :class:`~actors.spec.RunSpec` with a task: items sharded over
  coordinator actors (many concurrent loops each, scorer actors shared, calls micro-batched).

The driver keeps a bounded number of units in flight per actor and appends each finished row to a
:class:`~ensemble.results.ResultsFile` keyed by ``(item id, config hash, seed)``. Units already in the
file are skipped before anything is sent, and a retried call (a restarted actor, a resumed job)
cannot write a row twice, so a killed run resumed with the same command loses and duplicates nothing.
Works as a plain script and submitted with ``ray job submit -- …`` (Ray sets ``RAY_ADDRESS`` for the
job's driver)::

    python -m actors.evaluation --run-spec run.json --n 50 --results results/run.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.batching import BatchConfig
from actors.placement import PlacementConfig, Resources
from actors.spec import RunSpec
from actors.table import markdown_table
from ensemble.contracts import Item
from ensemble.results import ResultsFile, result_key


@dataclass
class EvalSummary:
    """What an evaluation run did.

    Attributes:
        total: (item, seed) pairs asked for; ``skipped``: already in the results file;
        written: rows appended by this run; ``failed``: item id → error of items that raised.
        rows: this configuration's rows for the requested items (from the file, one per key).
        table: the Markdown summary table; ``duration_s``: wall time of this run.
    """

    total: int
    skipped: int
    written: int
    failed: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""
    duration_s: float = 0.0

    @property
    def metric(self) -> float | None:
        """Mean metric over the rows (``None`` when there are none)."""
        return sum(r["metric"] for r in self.rows) / len(self.rows) if self.rows else None


def _print_progress(done: int, total: int, row: dict[str, Any], started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    extra = " ".join(f"{k}={row[k]}" for k in ("system", "beam", "metric", "correct", "rounds") if k in row)
    print(f"[{done}/{total}] {row['item_id']} seed={row['seed']} {extra} ({rate:.2f} items/s)",
          file=sys.stderr, flush=True)


def evaluate_on_ray(
    spec: Any,
    items: Sequence[Item],
    systems: Sequence[str],
    beams: Sequence[int],
    seed: int,
    results: ResultsFile,
    *,
    address: str | None = None,
    workers: int | None = None,
    inflight: int = 1,
    solver: str = "ensemble.evaluation:MathEvaluator",
    resources: Resources | None = None,
    max_restarts: int = 3,
    progress: Callable[[int, int, dict[str, Any], float], None] | None = _print_progress,
) -> list[dict[str, Any]]:
    """``ensemble eval math --ray``: the (item, system, beam) work list sharded over solver actors.

    Each actor builds ``solver(spec)`` (e.g. a :class:`~ensemble.evaluation.MathEvaluator`: the LM and
    the verifiers) once, where it runs; each finished row is appended to ``results`` by the driver,
    idempotently, and work already in ``results`` is never sent.

    Args:
        spec: the evaluation spec (``EvalSpec``): small and picklable; it offers ``hash(system, beam)``.
        items, systems, beams, seed: what to evaluate (see :func:`ensemble.evaluation.work_list`).
        results: the resumable results file.
        address: Ray address; ``None`` uses ``RAY_ADDRESS`` (jobs) or starts a private local instance.
        workers: solver actors; default: one per CPU the cluster has (at most one per work unit).
        inflight: work units queued per actor (1 keeps the shards balanced).
        solver: the solver class's entry point.
        resources: per actor; default 1 CPU, and 1 GPU when ``spec.device`` is CUDA.
        max_restarts: Ray restarts a crashed solver actor this often; its unit is retried (at most
            twice), and a retried unit can never write its row twice.
        progress: called after each finished unit with ``(done, total, row, start_time)``.

    Returns:
        This evaluation's rows (old and new) in work-list order.
    """
    import ray

    from actors.placement import spawn
    from actors.runtime import connect
    from actors.workers import SolverWorker
    from ensemble.evaluation import select_rows, work_list

    started = time.perf_counter()
    units = work_list(spec, items, systems, beams, seed)
    todo = deque(u for u in units if result_key(u[0].id, spec.hash(u[1], u[2]), seed) not in results)
    summary = EvalSummary(total=len(units), skipped=len(units) - len(todo), written=0)
    if todo:
        connect(address)
        gpu = str(getattr(spec, "device", "cpu")).startswith("cuda")
        resources = resources or Resources(num_cpus=1, num_gpus=1 if gpu else 0)
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // max(resources.num_cpus, 1)))
        handles = [spawn(SolverWorker, solver, spec, resources=resources, max_restarts=max_restarts,
                         max_task_retries=2) for _ in range(min(n, len(todo)))]
        try:
            _drive(handles, todo, lambda i, u: handles[i].solve.remote(u[0], u[1], u[2], seed),
                   results, summary, inflight, progress, started, ray)
        finally:
            for h in handles:
                ray.kill(h, no_restart=True)
    if summary.failed:
        detail = "; ".join(f"{k}: {v}" for k, v in list(summary.failed.items())[:3])
        print(f"{len(summary.failed)} work unit(s) failed (rerun to retry them): {detail}", file=sys.stderr)
    return select_rows(results.rows(), spec, items, systems, beams, seed)


def evaluate_run_on_ray(
    run: RunSpec,
    results: str | Path,
    items: Sequence[Item] | None = None,
    *,
    n: int | None = None,
    item_seed: int = 0,
    split: str = "test",
    seeds: Sequence[int] | None = None,
    n_coordinators: int = 1,
    inflight: int = 8,
    placement: PlacementConfig | None = None,
    batch: BatchConfig | None = None,
    address: str | None = None,
    progress: Callable[[int, int, dict[str, Any], float], None] | None = _print_progress,
    table_path: str | Path | None = None,
) -> EvalSummary:
    """Evaluate ``run`` on a task's items with Ray; resumable and idempotent.

    Args:
        run: the configuration; ``run.task`` must be set.
        results: the JSONL results file (created; rows of earlier runs are kept and skipped).
        items: the items; default ``run.task``'s ``items(n, item_seed, split)``.
        n, item_seed, split: which items to draw when ``items`` is not given.
        seeds: consensus seeds per item (one row each); default ``[run.consensus.seed]``.
        n_coordinators: coordinator actors the items are sharded over.
        inflight: items running concurrently per coordinator (each is one consensus loop).
        placement, batch: resources / co-location, and cross-loop batching of scorer calls.
        address: Ray address; ``None`` uses ``RAY_ADDRESS`` (jobs) or starts a private local instance.
        progress: called after each finished item with ``(done, total, row, start_time)``.
        table_path: also write the Markdown table there (default: next to ``results``, ``.md``).

    Returns:
        An :class:`EvalSummary`.
    """
    import ray

    from actors.runtime import RayRuntime, connect

    if run.task is None:
        raise ValueError("evaluate_on_ray needs RunSpec.task (which task's items and metric to use)")
    if items is None:
        if n is None:
            raise ValueError("give either items or n (how many items to draw from the task)")
        items = run.task.build().items(n, item_seed, split)
    seeds = list(seeds) if seeds is not None else [run.consensus.seed]
    started = time.perf_counter()
    file = ResultsFile(results)
    chash = run.config_hash()
    wanted = [(item, s) for item in items for s in seeds]
    todo = deque((item, s) for item, s in wanted if result_key(item.id, chash, s) not in file)
    summary = EvalSummary(total=len(wanted), skipped=len(wanted) - len(todo), written=0)
    if todo:
        connect(address)
        with RayRuntime(run, n_coordinators, placement, batch) as runtime:
            coords = runtime.coordinators
            _drive(coords, todo, lambda i, w: coords[i].solve.remote(w[0], w[1], chash),
                   file, summary, inflight, progress, started, ray)
    keys = {result_key(item.id, chash, s) for item, s in wanted}
    summary.rows = [r for r in file.rows() if ResultsFile.key_of(r) in keys]
    summary.duration_s = time.perf_counter() - started
    summary.table = summary_table(run, summary)
    out = Path(table_path) if table_path else Path(results).with_suffix(".md")
    out.write_text(summary.table + "\n", encoding="utf-8")
    return summary


def _drive(workers: Sequence[Any], todo: deque, submit: Callable[[int, tuple], Any], file: ResultsFile,
           summary: EvalSummary, inflight: int, progress: Any, started: float, ray: Any) -> None:
    """Keep ``inflight`` work units per worker running; append each result row as it lands.

    ``submit(worker_index, unit)`` starts one unit and returns its object ref; the first element of
    a unit is its :class:`Item`. Rows are appended idempotently, so a retried unit writes nothing.
    """
    pending: dict[Any, tuple] = {}
    turn = 0
    done = summary.skipped
    while todo or pending:
        while todo and len(pending) < inflight * len(workers):
            unit = todo.popleft()
            pending[submit(turn % len(workers), unit)] = unit
            turn += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            unit = pending.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - reported, the run goes on
                key = "|".join(str(getattr(u, "id", u)) for u in unit)
                summary.failed[key] = f"{type(err).__name__}: {err}"[:500]
                continue
            summary.written += int(file.append(row))
            done += 1
            if progress is not None:
                progress(done, summary.total, row, started)


def summary_table(run: RunSpec, summary: EvalSummary) -> str:
    """Markdown: the configuration's metric, rounds, dropped scorers and throughput."""
    rows = summary.rows
    n = len(rows)
    mean = lambda key: sum(float(r[key]) for r in rows) / n if n else None  # noqa: E731
    dropped = sum(1 for r in rows if r.get("missing_scorers"))
    header = ["task", "generator", "scorers", "items", "metric", "rounds (mean)", "items with a dropped scorer",
              "failed", "written this run", "items/s this run"]
    rate = summary.written / summary.duration_s if summary.duration_s else None
    line = [run.task.name if run.task else "–", run.generator.name, ", ".join(run.scorers), n, mean("metric"),
            mean("rounds"), dropped, len(summary.failed), summary.written, rate]
    return markdown_table(header, [line])


def main(argv: list[str] | None = None) -> int:
    """``python -m actors.evaluation``: evaluate a run spec (JSON) on Ray; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m actors.evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-spec", required=True, help="JSON file of a RunSpec (RunSpec.to_dict())")
    p.add_argument("--results", required=True, help="JSONL results file (resumed when it exists)")
    p.add_argument("--n", type=int, required=True, help="items to draw from the task")
    p.add_argument("--item-seed", type=int, default=0)
    p.add_argument("--coordinators", type=int, default=1)
    p.add_argument("--inflight", type=int, default=8, help="concurrent items per coordinator")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local instance)")
    args = p.parse_args(argv)
    run = RunSpec.from_dict(json.loads(Path(args.run_spec).read_text()))
    summary = evaluate_run_on_ray(run, args.results, n=args.n, item_seed=args.item_seed,
                              n_coordinators=args.coordinators, inflight=args.inflight, address=args.address)
    print(summary.table)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluation throughput on Ray: items/s with 2 solver workers vs 1, and Ray Data vs a plain actor pool.

Runs the same work list (``--n`` items of ``TASK`` × ``--systems``, one seed) through
:func:`actors.evaluation.evaluate_on_ray` several times, each into a fresh results file, on one private
loopback Ray instance, and prints items/s side by side with the ratios:

* ``data ×1`` / ``data ×2``: Ray Data's actor pool with 1 and 2 solver workers;
* ``actors ×2``: a fixed pool of 2 :class:`~actors.workers.SolverWorker` actors fed by the driver.

Two rates per run: *wall* covers everything a user waits for (workers starting and loading their
models included); *steady* counts units landed after every worker's first row over the time they took
(``EvalReport.steady_items_per_s``), i.e. the pool's throughput once warm — what a long evaluation sees.

    ensemble bench eval robot --n 12 --systems 3views-cem
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags: the task and its flags come from ``ensemble eval``'s parser."""
    parser.add_argument("task", help="registered task, e.g. robot")
    parser.add_argument("--n", type=int, default=12, help="items")
    parser.add_argument("--systems", default=None, help="comma-separated systems (default: the task's first)")
    parser.add_argument("--tiny", action="store_true", help="tiny real models")
    parser.add_argument("--runs", default="data:1,data:2,actors:2,actors:1", help="engine:workers measured in this order")
    parser.add_argument("--address", default=None, help="Ray address (default: a private local instance)")


def run(args: argparse.Namespace) -> int:
    """Measure and print the Markdown table."""
    from actors.cli import build_parser
    from actors.commands.eval import build_spec
    from actors.evaluation import evaluate_on_ray
    from actors.runtime import connect
    from ensemble.eval import work_list
    from ensemble.eval.table import markdown_table
    from ensemble.results import ResultsFile

    importlib.import_module(f"ensemble.tasks.{args.task}.cli")
    eval_args = build_parser().parse_args(["eval", args.task, "--n", str(args.n), *(["--tiny"] if args.tiny else [])])
    spec = build_spec(eval_args)
    solver = spec.build()
    systems = [s.strip() for s in args.systems.split(",")] if args.systems else solver.default_systems()[:1]
    solver.check_systems(systems)
    items = spec.build_task().items(args.n, 0)
    units = work_list(items, systems, [0], {s: solver.config_hash(s) for s in systems})
    runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",")]
    info = connect(args.address)
    rows, rates, steady = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, workers in runs:
            results = ResultsFile(Path(tmp) / f"{engine}-{workers}.jsonl")
            t0 = time.perf_counter()
            report = evaluate_on_ray(spec, units, results, workers=workers, engine=engine, progress=False)
            seconds = time.perf_counter() - t0
            if report.failed:
                raise RuntimeError(f"{len(report.failed)} runs failed: {next(iter(report.failed.values()))}")
            rates[(engine, workers)] = len(units) / seconds
            steady[(engine, workers)] = report.steady_items_per_s(min(workers, len(units)))
            rows.append([f"{engine} ×{workers}", len(units), seconds, report.landed_s[0], rates[(engine, workers)],
                         steady[(engine, workers)]])
            print(f"{engine} ×{workers}: {len(units)} runs in {seconds:.1f} s", flush=True)
    first = next((k for k in runs if k[1] == 1), None)
    for row, key in zip(rows, runs, strict=True):  # each engine against its own 1-worker run when measured
        base = (key[0], 1) if (key[0], 1) in rates else first
        row.append(rates[key] / rates[base] if base else None)
        row.append(steady[key] / steady[base] if base and steady[key] and steady[base] else None)
        row[0] += f" (vs {base[0]} ×1)" if base and base[0] != key[0] else ""
    print(f"\n{args.task}: {len(units)} runs ({', '.join(systems)}), Ray at {info['address']}\n")
    print(markdown_table(["engine × workers", "runs", "wall s", "first row s", "items / s (wall)",
                          "items / s (steady)", "wall × 1 worker", "steady × 1 worker"], rows))
    return 0

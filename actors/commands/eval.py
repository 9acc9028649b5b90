"""``ensemble eval TASK``: the one evaluation engine of every task, in-process or on Ray, resumable.

Each finished (item, system, seed) is appended to a results JSONL keyed by (item id, config hash,
seed); rerunning the same command skips what is there, so an interrupted run loses and repeats
nothing. It ends with the task's Markdown table (also written next to the results file as
``<out>.md``) and exits non-zero when items failed, printing the first full error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from actors.commands._tasks import task_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    eval_parser = sub.add_parser("eval", help="evaluate a task's systems, resumably, in-process or on Ray")
    tasks = eval_parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name in task_names():
        from ensemble.registry import TASKS

        p = tasks.add_parser(name, help=TASKS.entry(name).summary)
        add_generic_arguments(p, name)
        importlib.import_module(f"ensemble.tasks.{name}.cli").add_arguments(p)
        p.set_defaults(func=run)


def add_generic_arguments(p: argparse.ArgumentParser, task: str) -> None:
    """The flags every task's evaluation shares."""
    p.add_argument("--n", type=int, default=None, help="number of items (default: the task's evaluation size)")
    p.add_argument("--skip", type=int, default=0, metavar="N", help="leave out the first N of the --n items")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="evaluation seeds: the item draw uses the first; every item runs once per seed "
                        "(report the mean and spread over several)")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="test (report) or train (development: choosing settings, never reported)")
    p.add_argument("--systems", default=None, help="comma-separated systems (default: the task's table rows)")
    p.add_argument("--out", default=f"results/{task}.jsonl", help="results JSONL (appended, resumable)")
    p.add_argument("--tiny", action="store_true", help="tiny real models (a smoke run; numbers mean nothing)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--shard", default=None, metavar="I/K",
                   help="evaluate only items i with i %% K == I (one process per core on one --out)")
    p.add_argument("--ray", action="store_true", help="run the items on a pool of Ray solver workers")
    p.add_argument("--address", default=None, help="Ray cluster address (implies --ray; default RAY_ADDRESS)")
    p.add_argument("--workers", type=int, default=None, help="Ray solver workers (default: one per free CPU)")
    p.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs per Ray solver worker")
    p.add_argument("--engine", default="actors", choices=["actors", "data"],
                   help="Ray engine: actors (a fixed SolverWorker pool, default: faster for long items, README) "
                        "or data (a Ray Data actor pool)")


def build_spec(args: argparse.Namespace) -> Any:
    """The task's :class:`~ensemble.contracts.SolverSpec` from the parsed flags (``--tiny`` applied)."""
    spec = importlib.import_module(f"ensemble.tasks.{args.task}.cli").solver_spec(args)
    if args.tiny:
        spec.settings = {**spec.settings, **spec.build_task().settings_for(tiny=True)}
        from ensemble.registry import TASKS

        spec.task_kwargs = {**spec.task_kwargs, **(TASKS.entry(args.task).tiny or {})}
    return spec


def run(args: argparse.Namespace) -> int:
    from ensemble.eval import evaluate_local, work_list
    from ensemble.results import ResultsFile

    spec = build_spec(args)
    task = spec.build_task()
    solver = spec.build()  # cheap: models load on the first solve
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else solver.default_systems()
    solver.check_systems(systems)
    n = args.n or task.default_n
    if not 0 <= args.skip < n:
        raise ValueError(f"--skip {args.skip}: need 0 <= skip < --n ({n})")
    items = task.items(n, args.seed[0], split=args.split)[args.skip:]
    if args.shard:
        if args.ray or args.address:
            raise ValueError("--shard splits the work between local processes; with --ray the cluster shards it")
        items = items[slice(*_shard(args.shard))]
    units = work_list(items, systems, args.seed, {s: solver.config_hash(s) for s in systems})
    results = ResultsFile(args.out)
    if args.ray or args.address:
        from actors.evaluation import evaluate_on_ray

        report = evaluate_on_ray(spec, units, results, address=args.address, workers=args.workers,
                                 worker_cpus=args.worker_cpus, engine=args.engine, progress=not args.no_progress)
    else:
        progress = None
        if not args.no_progress:
            from tqdm import tqdm

            def progress(work):
                return tqdm(work, desc=f"{args.task} eval", unit="run")

        report = evaluate_local(solver, units, results, progress=progress)
    return finish(args, task, systems, units, report, results)


def finish(args: argparse.Namespace, task: Any, systems: list[str], units: list[Any], report: Any,
           results: Any) -> int:
    """Print and write the table; report failures (non-zero exit, first full error printed)."""
    from ensemble.eval import select_rows

    rows = select_rows(results, units)
    table = task.table(rows, systems)
    seeds = ", ".join(str(s) for s in args.seed)
    title = (f"{args.task}: {len({u.item.id for u in units})} items ({args.split} split), seeds {seeds}, "
             f"{len(rows)} of {len(units)} runs in {args.out}")
    print(f"\n{title}\n\n{table}")
    Path(str(args.out) + ".md").write_text(f"{title}\n\n{table}\n")
    if report.failed:
        first_key, first_error = next(iter(report.failed.items()))
        print(f"\n{len(report.failed)} of {len(units)} runs failed (not written; rerun the same command to retry "
              f"them). First failure, {first_key}:\n{first_error}", file=sys.stderr)
        return 1
    return 0


def _shard(text: str) -> tuple[int, None, int]:
    """``"I/K"`` → the slice ``(I, None, K)``, with a clear error for anything else."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r} must look like I/K, e.g. 0/2") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= I < K")
    return index, None, count

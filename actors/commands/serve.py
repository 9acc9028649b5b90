"""``ensemble serve [TASK]``: an HTTP endpoint (Ray Serve).

``ensemble serve TASK`` serves a task's evaluated systems (``POST /v1/<task>`` with the task's typed
request, answered by the same solver as ``ensemble eval TASK`` on a pool of solver workers);
``ensemble serve --preset demo`` / ``--spec RUN.json`` serve a RunSpec through coordinator and
scorer actors (``POST /v1/consensus``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PRESETS = ("demo",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    import importlib

    from actors.commands._tasks import task_names

    p = sub.add_parser("serve", help="serve a task (or a RunSpec) over HTTP (Ray Serve), on 127.0.0.1 by default")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--spec", type=Path, help="a RunSpec JSON file (generator, scorers, ensemble, consensus)")
    src.add_argument("--preset", choices=PRESETS, default="demo", help="a built-in configuration (default: demo)")
    _add_common(p)
    p.set_defaults(func=run)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    for name in task_names():
        tp = tasks.add_parser(name, help=f"serve the {name} task: POST /v1/{name}")
        _add_common(tp)
        tp.add_argument("--workers", type=int, default=1, help="solver workers (each loads the models once)")
        tp.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs per solver worker")
        tp.add_argument("--tiny", action="store_true", help="tiny real models (a smoke run)")
        importlib.import_module(f"ensemble.tasks.{name}.cli").add_arguments(tp)
        tp.set_defaults(func=run_task)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; Serve has no auth)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--coordinators", type=int, default=1, help="coordinator actors behind the endpoint")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a private local instance)")
    p.add_argument("--max-ongoing", type=int, default=16, help="concurrent requests per replica")
    p.add_argument("--max-queued", type=int, default=64, help="queued requests before 503")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is cancelled (504)")


def preset(name: str):
    """A built-in :class:`~actors.spec.RunSpec`."""
    from actors import spec as S

    if name == "demo":
        return S.RunSpec(
            generator=S.generator("sampling", dim=2, n_candidates=32, rounds=6),
            scorers={"a": S.scorer("quadratic", target=[2.0, 0.0]), "b": S.scorer("quadratic", target=[0.0, 2.0])},
        )
    raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")


def run(args: argparse.Namespace) -> int:
    from ray import serve

    from actors.runtime import RayRuntime, connect
    from actors.serve import start
    from actors.serve_schema import ServeLimits
    from actors.spec import RunSpec

    run_spec = RunSpec.from_dict(json.loads(args.spec.read_text())) if args.spec else preset(args.preset)
    limits = ServeLimits(max_ongoing_requests=args.max_ongoing, max_queued_requests=args.max_queued,
                         request_timeout_s=args.timeout)
    info = connect(args.address)
    runtime = RayRuntime(run_spec, n_coordinators=args.coordinators).start()
    try:
        url = start(runtime.coordinators, args.host, args.port, limits, run_spec.to_dict())
        print(f"serving on {url}  (Ray at {info['address']}); POST {url}/v1/consensus, Ctrl-C to stop", flush=True)
        _wait_for_interrupt()
    finally:
        serve.shutdown()
        runtime.shutdown()
        import ray

        ray.shutdown()
    return 0


def run_task(args: argparse.Namespace) -> int:
    """Serve one task: solver workers, then the task app; blocks until Ctrl-C."""
    import ray
    from ray import serve

    from actors.commands.eval import build_spec
    from actors.placement import Resources, spawn
    from actors.runtime import connect
    from actors.serve_schema import ServeLimits
    from actors.serve_task import start_task
    from actors.workers import SolverWorker

    spec = build_spec(args)
    if args.task == "robot":
        spec.settings["frames"] = True  # the response carries the camera views as a GIF
    limits = ServeLimits(max_ongoing_requests=args.max_ongoing, max_queued_requests=args.max_queued,
                         request_timeout_s=args.timeout)
    info = connect(args.address)
    gpu = 1.0 if str(spec.settings.get("device", "cpu")).startswith("cuda") else 0.0
    workers = [spawn(SolverWorker, spec, resources=Resources(num_cpus=args.worker_cpus, num_gpus=gpu), max_restarts=3,
                     max_task_retries=1) for _ in range(args.workers)]
    try:
        print(f"loading the {args.task} models on {len(workers)} worker(s)…", flush=True)
        ray.get([w.setup.remote() for w in workers])
        url = start_task(spec, workers, args.host, args.port, limits)
        print(f"serving {args.task} on {url}  (Ray at {info['address']}); POST {url}/v1/{args.task}, "
              f"GET {url}/healthz, Ctrl-C to stop", flush=True)
        _wait_for_interrupt()
    finally:
        serve.shutdown()
        for w in workers:
            ray.kill(w, no_restart=True)
        ray.shutdown()
    return 0


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass

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
from dataclasses import replace
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
    # Only RunSpec apps have scorer actors that can be lost one by one. In a task app every solver worker
    # holds the whole ensemble: a lost worker leaves the others answering with every scorer.
    p.add_argument("--degrade", action="store_true",
                   help="keep answering when a scorer is gone for good (answers name the missing scorers); "
                        "default: refuse with 503")
    p.add_argument("--coordinator-cpus", type=float, default=0.25,
                   help="CPUs per coordinator actor (it awaits scorers; default 0.25)")
    p.add_argument("--scorer-cpus", action="append", default=[], metavar="[NAME=]CPUS",
                   help="CPUs per scorer actor (default 0.25, right for analytic scorers; give 1 or more for "
                        "models); NAME=CPUS sets one scorer; repeatable")
    p.add_argument("--scorer-timeout", type=float, default=None,
                   help="seconds a scorer call may take before it is dropped for the round (default: the spec's "
                        "ensemble.timeout_s, 120)")
    p.set_defaults(func=run)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    for name in task_names():
        tp = tasks.add_parser(name, help=f"serve the {name} task: POST /v1/{name}")
        _add_common(tp)
        tp.add_argument("--workers", type=int, default=1, help="solver workers (each loads the models once)")
        tp.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs per solver worker (default 1)")
        tp.add_argument("--tiny", action="store_true", help="tiny real models (a smoke run)")
        importlib.import_module(f"ensemble.tasks.{name}.cli").add_arguments(tp)
        tp.set_defaults(func=run_task)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default loopback; any other address needs a token)")
    p.add_argument("--token", default=None,
                   help="bearer token required on every route but /healthz (default: $ENSEMBLE_SERVE_TOKEN)")
    p.add_argument("--token-file", default=None, help="read the bearer token from this file")
    p.add_argument("--port", type=int, default=None,
                   help="HTTP port (default 8000; on a cluster that already serves: its port, which is cluster-wide)")
    p.add_argument("--name", default=None, help="app name on the cluster (default: the task, or the preset)")
    p.add_argument("--route-prefix", default=None,
                   help="URL prefix of this app (default '/' when free, else '/<name>')")
    p.add_argument("--ingress-cpus", type=float, default=0.1, help="CPUs of the HTTP ingress replica (default 0.1)")
    p.add_argument("--setup-timeout", type=float, default=600.0,
                   help="seconds to wait for the actors to build their models")
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
    """Serve a RunSpec through coordinator and scorer actors; blocks until Ctrl-C."""
    from actors.placement import wait_ready
    from actors.runtime import RayRuntime, connect
    from actors.serve import start
    from actors.serve_deploy import Demand, check_fits, plan_route, undeploy
    from actors.spec import RunSpec

    run_spec = RunSpec.from_dict(json.loads(args.spec.read_text())) if args.spec else preset(args.preset)
    if args.scorer_timeout is not None:
        run_spec.ensemble = replace(run_spec.ensemble, timeout_s=args.scorer_timeout)
    limits = _limits(args)
    placement = _placement(args, list(run_spec.scorers))
    name = args.name or (args.spec.stem if args.spec else args.preset)
    token = _token(args)
    info = connect(args.address)
    try:
        plan_route(name, args.route_prefix, args.host, args.port)  # refuse early: name, route, port
        check_fits([Demand("coordinator", placement.generator.num_cpus, flag="--coordinator-cpus")] * args.coordinators
                   + [Demand(f"scorer {n}", placement.for_scorer(n).num_cpus, flag="--scorer-cpus")
                      for n in run_spec.scorers]
                   + [Demand("ingress", limits.ingress_cpus, flag="--ingress-cpus")])
        runtime = RayRuntime(run_spec, n_coordinators=args.coordinators, placement=placement)
        ours = False
        try:
            building = runtime.launch()  # the actors build while Serve starts
            ours = True  # from here on the app name is ours (plan_route found it free)
            url = start(runtime.coordinators, args.host, args.port, limits, run_spec.to_dict(), name=name,
                        route_prefix=args.route_prefix, token=token)
            wait_ready(building, "coordinator(s)", args.setup_timeout)
            print(f"serving {name!r} on {url}  (Ray at {info['address']}); POST {url}/v1/consensus, "
                  f"GET {url}/healthz{_auth_note(token)}, Ctrl-C to stop", flush=True)
            _wait_for_interrupt()
        finally:
            if ours:
                undeploy(name)  # only this app
            runtime.shutdown()
    finally:
        _disconnect(info)
    return 0


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token of ``--token`` / ``--token-file`` / ``$ENSEMBLE_SERVE_TOKEN``; refuses an open non-loopback bind."""
    from actors.serve_auth import check_binding, resolve_token

    token = resolve_token(args.token, args.token_file)
    check_binding(args.host, token)
    return token


def _auth_note(token: str | None) -> str:
    return "; every other route needs `Authorization: Bearer <token>`" if token else ""


def _limits(args: argparse.Namespace):
    from actors.serve_schema import ServeLimits

    return ServeLimits(max_ongoing_requests=args.max_ongoing, max_queued_requests=args.max_queued,
                       request_timeout_s=args.timeout, ingress_cpus=args.ingress_cpus,
                       degrade=getattr(args, "degrade", False))


def _placement(args: argparse.Namespace, scorers: list[str]):
    """The placement of ``--coordinator-cpus`` and ``--scorer-cpus [NAME=]CPUS``."""
    from actors.placement import PlacementConfig, Resources

    default, own = 0.25, {}
    for text in args.scorer_cpus:
        name, _, value = text.rpartition("=")
        try:
            cpus = float(value)
        except ValueError:
            raise ValueError(f"--scorer-cpus {text!r} must be CPUS or NAME=CPUS, e.g. 0.5 or a=1") from None
        if name:
            own[name] = Resources(num_cpus=cpus)
        else:
            default = cpus
    placement = PlacementConfig(generator=Resources(num_cpus=args.coordinator_cpus),
                                scorer=Resources(num_cpus=default), scorers=own)
    placement.check_names(scorers)
    return placement


def _disconnect(info: dict) -> None:
    """Leave the cluster; a private local instance this command started goes with it."""
    import shutil

    import ray

    ray.shutdown()
    if info.get("temp_dir"):
        shutil.rmtree(info["temp_dir"], ignore_errors=True)


def run_task(args: argparse.Namespace) -> int:
    """Serve one task: solver workers, then the task app; blocks until Ctrl-C."""
    import ray

    from actors.commands.eval import build_spec
    from actors.placement import Resources, spawn, wait_ready
    from actors.runtime import connect
    from actors.serve_deploy import Demand, check_fits, plan_route, undeploy
    from actors.serve_task import start_task
    from actors.workers import SolverWorker

    if getattr(args, "degrade", False):
        raise ValueError("--degrade applies to --preset/--spec apps (scorer actors lost one by one); in a task app "
                         "every solver worker holds the whole ensemble, and a lost worker leaves the others answering")
    spec = build_spec(args)
    if args.task == "robot":
        spec.settings["frames"] = True  # the response carries the camera views as a GIF
    limits = _limits(args)
    name = args.name or args.task
    token = _token(args)
    gpu = 1.0 if str(spec.settings.get("device", "cpu")).startswith("cuda") else 0.0
    info = connect(args.address)
    workers: list = []
    ours = False
    try:
        plan_route(name, args.route_prefix, args.host, args.port)  # refuse early: name, route, port
        check_fits([Demand(f"solver worker {i}", args.worker_cpus, gpu, flag="--worker-cpus")
                    for i in range(args.workers)] + [Demand("ingress", limits.ingress_cpus, flag="--ingress-cpus")])
        workers = [spawn(SolverWorker, spec, resources=Resources(num_cpus=args.worker_cpus, num_gpus=gpu),
                         max_restarts=3, max_task_retries=1) for _ in range(args.workers)]
        print(f"loading the {args.task} models on {len(workers)} worker(s)…", flush=True)
        building = [w.setup.remote() for w in workers]  # the models load while Serve starts
        ours = True  # from here on the app name is ours (plan_route found it free)
        url = start_task(spec, workers, args.host, args.port, limits, name=name, route_prefix=args.route_prefix,
                         token=token)
        wait_ready(building, "solver worker(s)", args.setup_timeout)
        print(f"serving {args.task} as {name!r} on {url}  (Ray at {info['address']}); POST {url}/v1/{args.task}, "
              f"GET {url}/healthz{_auth_note(token)}, Ctrl-C to stop", flush=True)
        _wait_for_interrupt()
    finally:
        if ours:
            undeploy(name)  # only this app
        for w in workers:
            ray.kill(w, no_restart=True)
        _disconnect(info)
    return 0


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C (or SIGTERM); further signals are ignored so the app is deleted cleanly."""
    import signal

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping: deleting this app (other apps on the cluster keep running)…", flush=True)

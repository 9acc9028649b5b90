"""``ensemble bench ray``: what the Ray runtime costs and buys, measured side by side in one run.

(a) one round with N equal-cost scorers (``quadratic`` with ``delay_s``: a model of known cost) on
    Ray actors vs the same scorers in-process, called one after the other;
(b) items/s of one coordinator running 16 concurrent consensus loops, with and without cross-loop
    micro-batching of scorer calls (every call costs ``delay_s``, as one model forward would);
(c) the fixed overhead of a Ray round vs an in-process round with trivial (instant) scorers.

Prints a Markdown table with the ratios. Runs on a private local Ray instance bound to 127.0.0.1
unless ``--address`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shutil
import statistics
import time
from typing import Any

from ensemble.eval.table import markdown_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks measured side by side (ray, robot, math, video_qa, eval)")
    targets = bench.add_subparsers(dest="target", metavar="TARGET", required=True)
    from actors import bench_eval, bench_robot

    for name in ("math", "video_qa"):  # task folders' own benchmarks (ensemble/tasks/<name>/bench.py)
        module = importlib.import_module(f"ensemble.tasks.{name}.bench")
        tp = targets.add_parser(name, help=module.HELP)
        module.add_arguments(tp)
        tp.set_defaults(func=module.run)
    rp = targets.add_parser("robot", help="MPC rollout throughput: 2 environment actors vs 1")
    bench_robot.add_arguments(rp)
    rp.set_defaults(func=bench_robot.run)
    from ensemble.tasks.robot import bench_planner

    pp = targets.add_parser("robot-planner", help="one MPC control step per goal: random shooting vs CEM variants")
    bench_planner.add_arguments(pp)
    pp.set_defaults(func=bench_planner.run)
    from ensemble.tasks.robot import bench_segmenter

    sp = targets.add_parser("robot-segmenter", help=bench_segmenter.HELP)
    bench_segmenter.add_arguments(sp)
    sp.set_defaults(func=bench_segmenter.run)
    ep = targets.add_parser("eval", help="evaluation on Ray: items/s with 2 solver workers vs 1, Ray Data vs actors")
    bench_eval.add_arguments(ep)
    ep.set_defaults(func=bench_eval.run)
    p = targets.add_parser("ray", help="the actor runtime vs in-process: parallel round, batching, overhead")
    p.add_argument("--scorers", type=int, default=2, help="(a) equal-cost scorers per round")
    p.add_argument("--cost", type=float, default=0.2, help="(a) seconds per scorer call")
    p.add_argument("--loops", type=int, default=16, help="(b) concurrent consensus loops")
    p.add_argument("--batch-cost", type=float, default=0.02, help="(b) seconds per scorer call")
    p.add_argument("--repeats", type=int, default=5, help="repetitions; the median is reported")
    p.add_argument("--address", default=None, help="Ray address (default: a private local instance)")
    p.set_defaults(func=run)


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _scorer_specs(n: int, cost: float) -> dict[str, Any]:
    from actors import spec as S

    return {f"s{i}": S.scorer("quadratic", target=[float(i), 0.0], delay_s=cost) for i in range(n)}


def bench_round(n: int, cost: float, repeats: int) -> tuple[float, float]:
    """(a) seconds of one scoring round: in-process sequential, and on Ray (one actor per scorer)."""
    import torch

    from actors.batching import BatchConfig
    from actors.placement import Resources, spawn
    from actors.remote import RemoteScorer
    from actors.workers import ScorerWorker
    from ensemble.aggregate import ScorerEnsemble
    from ensemble.contracts import Proposal

    specs = _scorer_specs(n, cost)
    proposal = Proposal(candidates=torch.randn(64, 2))
    local = [s.build() for s in specs.values()]
    sequential = _median_time(lambda: [s.score(None, proposal.candidates) for s in local], repeats)
    handles = {name: spawn(ScorerWorker, s, resources=Resources(num_cpus=0.5)) for name, s in specs.items()}
    try:
        remote = {name: asyncio.run(RemoteScorer.connect(h, name, BatchConfig(max_batch=1)))
                  for name, h in handles.items()}
        ensemble = ScorerEnsemble(remote)
        asyncio.run(ensemble.ascore(None, proposal))  # warm-up
        on_ray = _median_time(lambda: asyncio.run(ensemble.ascore(None, proposal)), repeats)
    finally:
        _kill(handles.values())
    return sequential, on_ray


def bench_overhead(repeats: int, rounds: int = 50) -> tuple[float, float]:
    """(c) seconds per consensus round with two instant scorers: in-process, and on Ray actors."""
    from actors import spec as S
    from actors.batching import BatchConfig
    from actors.placement import Resources, spawn
    from actors.remote import RemoteScorer
    from actors.workers import ScorerWorker
    from ensemble.aggregate import ScorerEnsemble
    from ensemble.config import ConsensusConfig
    from ensemble.consensus import run_consensus

    specs = _scorer_specs(2, 0.0)
    gen = S.generator("gradient", shape=(4, 2), steps=rounds, step_size=0.05).build()
    config = ConsensusConfig(max_rounds=rounds)
    local = ScorerEnsemble({n: s.build() for n, s in specs.items()})
    in_process = _median_time(lambda: run_consensus(gen, local, None, config), repeats) / rounds
    handles = {name: spawn(ScorerWorker, s, resources=Resources(num_cpus=0.5)) for name, s in specs.items()}
    try:
        remote = ScorerEnsemble({n: asyncio.run(RemoteScorer.connect(h, n, BatchConfig(max_batch=1)))
                                 for n, h in handles.items()})
        run_consensus(gen, remote, None, config)  # warm-up
        on_ray = _median_time(lambda: run_consensus(gen, remote, None, config), repeats) / rounds
    finally:
        _kill(handles.values())
    return in_process, on_ray


def bench_batching(loops: int, cost: float, repeats: int) -> tuple[float, float]:
    """(b) items/s of one coordinator with ``loops`` concurrent loops: unbatched, batched."""
    import ray

    from actors import spec as S
    from actors.batching import BatchConfig
    from actors.placement import PlacementConfig, Resources
    from actors.runtime import RayRuntime
    from ensemble.config import ConsensusConfig

    run = S.RunSpec(generator=S.generator("sampling", dim=2, n_candidates=32, rounds=3),
                    scorers=_scorer_specs(2, cost), consensus=ConsensusConfig(max_rounds=3))
    placement = PlacementConfig(generator=Resources(num_cpus=0.5), scorer=Resources(num_cpus=0.5))
    rates = []
    for batch in (BatchConfig(max_batch=1), BatchConfig(max_batch=loops, max_wait_s=0.005)):
        with RayRuntime(run, placement=placement, batch=batch) as rt:
            coord = rt.coordinators[0]
            ray.get([coord.run.remote(None, seed=s) for s in range(loops)])  # warm-up
            dt = _median_time(lambda c=coord: ray.get([c.run.remote(None, seed=s) for s in range(loops)]), repeats)
            rates.append(loops / dt)
    return rates[0], rates[1]


def _kill(handles: Any) -> None:
    import ray

    for h in handles:
        ray.kill(h, no_restart=True)


def run(args: argparse.Namespace) -> int:
    import ray

    from actors.runtime import connect

    info = connect(args.address)
    print(f"Ray at {info['address']} (node {info['node_ip']}); medians of {args.repeats} repeats\n")
    try:
        seq, par = bench_round(args.scorers, args.cost, args.repeats)
        unbatched, batched = bench_batching(args.loops, args.batch_cost, args.repeats)
        local_round, ray_round = bench_overhead(args.repeats)
    finally:
        if info["temp_dir"]:  # we started a private instance: stop it and remove its files
            ray.shutdown()
            shutil.rmtree(info["temp_dir"], ignore_errors=True)
    ms = lambda s: f"{s * 1e3:.1f} ms"  # noqa: E731
    rows = [
        [f"(a) one round, {args.scorers} scorers x {args.cost * 1e3:.0f} ms", f"sequential {ms(seq)}",
         f"Ray {ms(par)}", f"{par / seq:.2f}x time", "<= 0.6x"],
        [f"(b) {args.loops} concurrent loops, scorer call {args.batch_cost * 1e3:.0f} ms",
         f"unbatched {unbatched:.1f} items/s", f"batched {batched:.1f} items/s", f"{batched / unbatched:.2f}x items/s",
         ">= 2x"],
        ["(c) round overhead, 2 instant scorers", f"in-process {ms(local_round)}", f"Ray {ms(ray_round)}",
         f"+{ms(ray_round - local_round)}", "<= +5 ms"],
    ]
    print(markdown_table(["benchmark", "baseline", "Ray", "ratio", "target"], rows))
    return 0

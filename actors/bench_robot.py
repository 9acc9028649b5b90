"""Rollout throughput of MPC candidate rollouts: 2 environment actors vs 1, measured side by side.

Each measurement rolls the same ``--candidates`` plans out from the same planning state (restore,
pick-and-place, settle, render every view) through a :class:`actors.env_runners.RayRolloutExecutor`
with 1 and with 2 runners (1 CPU each), alternating the two so that background load hits both alike,
and reports rollouts per second (median over ``--repeats`` rounds) and the ratio, plus the CPU time
per rollout spent in the rollout processes: equal CPU ms / rollout for 1 and 2 actors means the work
parallelises fully and the wall-clock ratio is bounded only by the cores other processes leave free. The in-process
executor is measured too, as the no-Ray reference.

    ensemble bench robot --candidates 96 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the benchmark."""
    parser.add_argument("--candidates", type=int, default=96, help="plans per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per executor (median reported)")
    parser.add_argument("--views", type=int, default=3, help="cameras rendered per rollout")
    parser.add_argument("--render", default="segmentation", choices=("segmentation", "rgb", "both"))
    parser.add_argument("--address", default=None, help="Ray address (default: a private local instance)")


def run(args: argparse.Namespace) -> int:
    """Measure and print the Markdown table; returns 0 when 2 actors reach 1.8x of 1 actor."""
    import numpy as np

    from actors.env_runners import EnvSpec, RayRolloutExecutor
    from actors.runtime import connect
    from ensemble.eval.table import markdown_table
    from ensemble.tasks.robot.solver import VIEW_SETS
    from ensemble.tasks.robot.world_model import LocalExecutor

    os.environ.setdefault("MUJOCO_GL", "egl")
    spec = EnvSpec("envs:Tabletop-Relations-v0", {"cameras": VIEW_SETS[args.views]})
    wm = spec.build()
    wm.reset(0)
    state = wm.snapshot()
    rng = np.random.default_rng(0)
    plans = [np.array([[rng.integers(4), rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2)]], dtype=np.float32)
             for _ in range(args.candidates)]
    connect(args.address, num_cpus=4)  # logical CPUs: room for the 1-actor and the 2-actor groups
    executors = {"in-process": LocalExecutor(wm),
                 "1 env actor": RayRolloutExecutor(spec, num_runners=1),
                 "2 env actors": RayRolloutExecutor(spec, num_runners=2)}
    times: dict[str, list[float]] = {k: [] for k in executors}
    for ex in executors.values():  # warm-up (renderers, first calls)
        ex.rollouts(state, plans[: max(2, len(plans) // 8)], args.render)
    cpu = {k: 0.0 for k in executors}
    for _ in range(args.repeats):
        for name, ex in executors.items():
            c0 = _cpu(ex)
            t0 = time.perf_counter()
            ex.rollouts(state, plans, args.render)
            times[name].append(time.perf_counter() - t0)
            cpu[name] += _cpu(ex) - c0
    rate = {k: len(plans) / statistics.median(v) for k, v in times.items()}
    ratio = rate["2 env actors"] / rate["1 env actor"]
    rows = [[k, f"{rate[k]:.0f}", f"{1000 * statistics.median(times[k]) / len(plans):.2f}",
             f"{1000 * cpu[k] / (args.repeats * len(plans)):.2f}", f"{rate[k] / rate['1 env actor']:.2f}x"]
            for k in executors]
    print(f"{len(plans)} rollouts per round, {args.views} views ({args.render}), {args.repeats} rounds, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})")
    print(markdown_table(["executor", "rollouts / s", "wall ms / rollout", "CPU ms / rollout", "vs 1 actor"], rows))
    print(f"2 vs 1 env actors: {ratio:.2f}x (target >= 1.8x)")
    for ex in executors.values():
        ex.close()
    wm.close()
    import ray

    ray.shutdown()
    return 0 if ratio >= 1.8 else 1


def _cpu(executor) -> float:
    """CPU seconds used so far by the processes doing ``executor``'s rollouts."""
    if hasattr(executor, "health"):
        return sum(h["cpu_s"] for h in executor.health())
    return time.process_time()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

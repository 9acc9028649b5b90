"""Command-line layer of the robot task: flags of ``eval`` / ``serve``, and ``ensemble run robot``.

``run`` executes one episode (MPC + one segmentation scorer per camera view, summed) and saves the
camera views of every executed step as an image strip or GIF.
"""

from __future__ import annotations

import argparse
from typing import Any

from ensemble.tasks.robot.solver import VIEW_SETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval robot`` / ``serve robot`` beyond the generic ones."""
    parser.add_argument("--views", type=int, default=3, choices=sorted(VIEW_SETS), help="N of the N-view systems")
    parser.add_argument("--candidates", type=int, default=48, help="plans per sampling iteration")
    parser.add_argument("--iterations", type=int, default=3, help="sampling iterations per executed action")
    parser.add_argument("--max-steps", type=int, default=6, help="executed actions per episode at most")


def solver_spec(args: argparse.Namespace) -> Any:
    """The :class:`~ensemble.contracts.SolverSpec` of parsed flags."""
    from ensemble.contracts import SolverSpec

    return SolverSpec("robot", {}, {"views": args.views, "candidates": args.candidates, "iterations": args.iterations,
                                    "max_steps": args.max_steps})


RUN_HELP = "one tabletop episode toward a goal; saves the camera views"
"""Help line of ``ensemble run robot``."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble run robot``."""
    parser.add_argument("--goal", default=None, help='e.g. "red bowl on top of blue mug; green mug left of red bowl" '
                        "(default: sampled from --scene-seed)")
    parser.add_argument("--scene-seed", type=int, default=0, help="seed of the scene")
    parser.add_argument("--system", default=None, help="e.g. 3views-cem (default), 1view-cem, oracle-cem, 3views-random")
    parser.add_argument("--seed", type=int, default=0, help="planner seed")
    parser.add_argument("--out", default="episode.gif", help="image strip (.png) or animation (.gif) of the views")
    parser.add_argument("--ray", action="store_true", help="shard rollouts over Ray environment actors")
    parser.add_argument("--runners", type=int, default=2, help="environment actors with --ray")
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run one episode, print the plan, save the views of every executed step."""
    from ensemble.contracts import Item
    from ensemble.media import save_strip
    from ensemble.registry import TASKS
    from ensemble.tasks.robot.solver import RobotSettings, RobotSolver, episode_frames

    task = TASKS.make("robot")
    spec = solver_spec(args)
    factory = args.rollout_executor_factory(args.runners) if args.ray else None
    solver = RobotSolver(task, RobotSettings(**spec.settings), executor_factory=factory)
    system = args.system or solver.default_systems()[0]
    solver.check_systems([system])
    context = {"scene_seed": args.scene_seed, **({"goal": args.goal} if args.goal else {})}
    item = Item("cli", context, True, {"index": 0})
    try:
        row = solver.solve(item, system, args.seed)
        extras = row["extras"]
        print(f"goal: {extras['goal']}\nobjects: {', '.join(extras['object_names'])}")
        for k, a in enumerate(extras["actions"]):
            print(f"step {k + 1}: move {extras['object_names'][int(round(a[0]))]} to ({a[1]:+.3f}, {a[2]:+.3f})")
        generator = solver._system(system)[0]
        state0 = generator.init_state(item.context, 0)
        frames = episode_frames(generator.world_model, state0.env_state, extras["actions"])
        path = save_strip(frames, args.out)
        print(f"success: {bool(row['answer'])} after {extras['steps']} steps; relations: {extras['relations']}; "
              f"{extras['rollouts']} rollouts, {row['timings']['seconds']:.1f} s")
        print(f"views saved to {path}")
        return 0 if row["answer"] else 1
    finally:
        solver.close()

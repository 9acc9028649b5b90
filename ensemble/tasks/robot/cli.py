"""Command-line layer of the robot task: flags of ``eval`` / ``serve``, and ``ensemble run robot``.

``run`` executes one episode (MPC + one segmentation scorer per camera view, summed) and saves the
camera views of every executed step as an image strip or GIF.
"""

from __future__ import annotations

import argparse
from typing import Any

from ensemble.tasks.robot.segformer import CHECKPOINT
from ensemble.tasks.robot.solver import VIEW_SETS, RobotSettings
from ensemble.tasks.robot.spatial import HIDDEN_RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval robot`` / ``serve robot`` beyond the generic ones."""
    parser.add_argument("--views", type=int, default=3, choices=sorted(VIEW_SETS), help="N of the N-view systems")
    parser.add_argument("--candidates", type=int, default=48, help="plans per sampling iteration")
    parser.add_argument("--iterations", type=int, default=3, help="sampling iterations per executed action")
    parser.add_argument("--max-steps", type=int, default=RobotSettings.max_steps, help="executed actions per episode at most")
    parser.add_argument("--cem-distribution", default="elites", choices=["elites", "gaussian"],
                        help="CEM's refitted distribution: a mixture around the elite plans, or one Gaussian per object")
    parser.add_argument("--cem-explore", type=float, default=0.25,
                        help="fraction of each later CEM iteration's plans drawn afresh from the proposal distribution")
    parser.add_argument("--relation-margin", type=float, default=0.08,
                        help="left/right margin of the view scorers in image widths (the environment's 4 cm is ~0.03)")
    parser.add_argument("--no-stable-placement", dest="stable_placement", action="store_false",
                        help="let the planner release objects on another object's rim (they topple; the earlier planner)")
    parser.add_argument("--lookahead", type=float, default=RobotSettings.lookahead,
                        help="fraction of the planner's fresh plans that are two actions (0: one action each)")
    parser.add_argument("--hidden-under-stack", default=RobotSettings.hidden_under_stack, choices=list(HIDDEN_RULES),
                        help="when a view scorer takes an object it does not show to be under the goal object stacked "
                             "on it: always, seen (another view shows it), beneath (another side view shows it "
                             "beneath that object), off")
    parser.add_argument("--no-hidden-under-stack", dest="hidden_under_stack", action="store_const", const="off",
                        help="the same as --hidden-under-stack off (the second pass's scorer)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each solver process")
    parser.add_argument("--segmenter-model", default=CHECKPOINT,
                        help="SegFormer of the learned-segmenter systems: project checkpoint name or directory "
                        "(train it with `ensemble train robot-segmenter`)")


def solver_spec(args: argparse.Namespace) -> Any:
    """The :class:`~ensemble.contracts.SolverSpec` of parsed flags."""
    from ensemble.contracts import SolverSpec

    return SolverSpec("robot", {}, {"views": args.views, "candidates": args.candidates, "iterations": args.iterations,
                                    "max_steps": args.max_steps, "segmenter_model": args.segmenter_model,
                                    "cem_distribution": args.cem_distribution, "cem_explore": args.cem_explore,
                                    "relation_margin": args.relation_margin, "stable_placement": args.stable_placement,
                                    "hidden_under_stack": args.hidden_under_stack, "lookahead": args.lookahead,
                                    "threads": args.threads})


RUN_HELP = "one tabletop episode toward a goal; saves the camera views"
"""Help line of ``ensemble run robot``."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble run robot``."""
    parser.add_argument("--goal", default=None, help='e.g. "red bowl on top of blue mug; green mug left of red bowl" '
                        "(default: sampled from --scene-seed)")
    parser.add_argument("--goal-image", default=None, help="the goal as a photo of the desired arrangement (PNG/JPEG "
                        "from --goal-camera); scored by comparing segmented layouts (default system 3views-photo-<default planner>)")
    parser.add_argument("--goal-camera", default="front", help="camera the --goal-image was taken from")
    parser.add_argument("--save-goal-image", default=None, help="write the scene's goal arrangement as seen by "
                        "--goal-camera to this file (a photo goal for --goal-image) and exit")
    parser.add_argument("--scene-seed", type=int, default=0, help="seed of the scene")
    parser.add_argument("--system", default=None, help="e.g. 3views-cem, 3views-random, 1view-random, oracle-cem "
                        "(default: the first table row, 3views-<default planner>)")
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
    from ensemble.tasks.robot.solver import DEFAULT_PLANNER, RobotSettings, RobotSolver, episode_frames

    task = TASKS.make("robot")
    spec = solver_spec(args)
    factory = args.rollout_executor_factory(args.runners) if args.ray else None
    solver = RobotSolver(task, RobotSettings(**spec.settings), executor_factory=factory)
    photo = args.goal_image is not None
    system = args.system or (f"{spec.settings['views']}views-photo-{DEFAULT_PLANNER}" if photo else solver.default_systems()[0])
    solver.check_systems([system])
    context = {"scene_seed": args.scene_seed, **({"goal": args.goal} if args.goal else {})}
    item = Item("cli", context, True, {"index": 0})
    try:
        if args.save_goal_image:
            return _save_goal_image(solver, system, item, args)
        if photo:
            item.context["goal_views"] = {args.goal_camera: _load_photo(args.goal_image)}
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


def _load_photo(path: str) -> Any:
    """A goal photo file as an (H, W, 3) uint8 array (resized to the renders when planning starts)."""
    from pathlib import Path

    from ensemble.tasks.robot.goal_photo import read_photo

    try:
        return read_photo(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise SystemExit(f"--goal-image {path}: {err}") from None


def _save_goal_image(solver: Any, system: str, item: Any, args: argparse.Namespace) -> int:
    """Write the goal arrangement of the scene as seen by ``--goal-camera`` (the environment's scripted
    planner builds it; a photo goal to try ``--goal-image`` with)."""
    from PIL import Image

    generator = solver._system(system)[0]
    generator.init_state(item.context, 0)
    views = generator.world_model.goal_photo()
    if args.goal_camera not in views:
        raise SystemExit(f"--goal-camera {args.goal_camera!r} is not one of this system's cameras {sorted(views)}")
    Image.fromarray(views[args.goal_camera]).save(args.save_goal_image)
    print(f"goal: {generator.world_model.info()['goal']}\nphoto of its arrangement from {args.goal_camera} "
          f"saved to {args.save_goal_image}")
    return 0


# -- train --------------------------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train robot-segmenter``."""
    from ensemble.tasks.robot.segmenter_train import SegmenterTrainConfig

    d = SegmenterTrainConfig()
    p.add_argument("--scenes", type=int, default=d.scenes, help="training scenes rendered (x4 cameras, random lighting)")
    p.add_argument("--heldout-scenes", type=int, default=d.heldout_scenes, help="held-out scenes for the IoU report")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--size", default=d.size, choices=["small", "tiny"], help="SegFormer size")
    p.add_argument("--name", default=d.name, help="project checkpoint name to save as")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--pair-scenes", type=float, default=d.pair_scenes,
                   help="probability a training scene is two same-colour bowl/mug pairs (0: random objects)")
    p.add_argument("--partner-moves", type=float, default=d.partner_moves,
                   help="probability a move onto another object picks the same-colour partner")
    p.add_argument("--rim-moves", type=float, default=d.rim_moves,
                   help="probability a move onto another object releases on its rim (objects lean or topple)")
    p.add_argument("--onto-moves", type=float, default=d.onto_moves, help="probability a random move goes onto another object")
    p.add_argument("--max-moves", type=int, default=d.max_moves, help="random moves per training scene, 0 to this many")


def train(args: argparse.Namespace) -> int:
    """Train the SegFormer segmenter on simulator-labelled renders; print held-out IoU per class."""
    import torch

    from ensemble.tasks.robot.segmenter_train import SegmenterTrainConfig, train_segmenter

    torch.set_num_threads(args.threads)
    cfg = SegmenterTrainConfig(scenes=args.scenes, heldout_scenes=args.heldout_scenes, steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, size=args.size, name=args.name, seed=args.seed,
                               pair_scenes=args.pair_scenes, partner_moves=args.partner_moves, rim_moves=args.rim_moves,
                               onto_moves=args.onto_moves, max_moves=args.max_moves)
    r = train_segmenter(cfg)
    print("held-out IoU per class: " + ", ".join(f"{c} {v:.3f}" for c, v in r["heldout_iou"].items()))
    print("restricted to each scene's objects: " + ", ".join(f"{c} {v:.3f}" for c, v in r["heldout_iou_scene_objects"].items()))
    print(f"mIoU over objects {r['heldout_miou_objects']:.3f} ({r['heldout_miou_scene_objects']:.3f} restricted), over all classes {r['heldout_miou_all']:.3f}; "
          f"{r['parameters']} parameters; {r['seconds']:.0f} s ({r['render_seconds']:.0f} s rendering); saved {r['path']}")
    return 0


TRAIN_TARGETS = {
    "robot-segmenter": ("the robot task's RGB segmenter (a small SegFormer) on simulator-labelled tabletop renders",
                        add_train_arguments, train),
}
"""``ensemble train`` targets of this task: name → (help, add_arguments, run)."""

"""Command-line layer of the robot task: ``ensemble run robot`` and ``ensemble eval robot``.

``run`` executes one episode offline (MPC + one segmentation scorer per camera view, summed) and saves
the camera views of every executed step as an image strip or GIF. ``eval`` compares, on the same
seeded three-relation goals: N views vs 1 view vs ground-truth relations, and random shooting vs CEM;
each finished episode is appended to a resumable JSONL results file; it ends with a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.table import markdown_table

VIEW_SETS: dict[int, tuple[str, ...]] = {
    1: ("front",),
    2: ("front", "top"),
    3: ("front", "left", "top"),
    4: ("front", "left", "right", "top"),
}
"""Cameras used with ``--views N``."""

ENV_ID = "envs:Tabletop-Relations-v0"


@dataclass(frozen=True)
class RobotConfig:
    """One evaluated configuration.

    Attributes:
        name: row label.
        views: number of camera views (scorers); ignored by the oracle.
        scorer: ``"views"`` (per-view segmentation scorers) or ``"oracle"`` (ground-truth relations).
        method: ``"cem"`` or ``"random"``.
        segmenter: ``"simulator"`` or ``"colour"``.
    """

    name: str
    views: int = 3
    scorer: str = "views"
    method: str = "cem"
    segmenter: str = "simulator"

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras this configuration renders."""
        return VIEW_SETS[1] if self.scorer == "oracle" else VIEW_SETS[self.views]


def standard_configs(views: int) -> dict[str, RobotConfig]:
    """The comparisons of the evaluation, by name."""
    return {
        f"{views}views-cem": RobotConfig(f"{views}views-cem", views, "views", "cem"),
        "1view-cem": RobotConfig("1view-cem", 1, "views", "cem"),
        "oracle-cem": RobotConfig("oracle-cem", views, "oracle", "cem"),
        f"{views}views-random": RobotConfig(f"{views}views-random", views, "views", "random"),
        "1view-random": RobotConfig("1view-random", 1, "views", "random"),
        f"{views}views-colour-cem": RobotConfig(f"{views}views-colour-cem", views, "views", "cem", "colour"),
    }


def build(config: RobotConfig, n_candidates: int, iterations: int, max_steps: int, executor: Any = None):
    """The MPC generator and the scorer ensemble of one configuration."""
    from ensemble.aggregate import ScorerEnsemble
    from ensemble.registry import GENERATORS, SCORERS
    from ensemble.tasks.robot import view_scorers

    if config.scorer == "oracle":
        scorers = {"oracle": SCORERS.make("oracle_relations")}
    else:
        scorers = view_scorers(config.cameras, config.segmenter)
    generator = GENERATORS.make(
        "mpc",
        env_id=ENV_ID,
        env_kwargs={"cameras": config.cameras},
        n_candidates=n_candidates,
        iterations=iterations,
        method=config.method,
        max_steps=max_steps,
        render="rgb" if config.segmenter == "colour" else "segmentation",
        executor=executor,
    )
    return generator, ScorerEnsemble(scorers)


def _ray_executor(args: argparse.Namespace, cameras: tuple[str, ...]) -> Any:
    from actors.env_runners import EnvSpec, RayRolloutExecutor
    from actors.runtime import connect

    connect(getattr(args, "address", None))
    return RayRolloutExecutor(EnvSpec(ENV_ID, {"cameras": cameras}), num_runners=args.runners)


# ------------------------------------------------------------------------------------------------ run
def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble run robot``."""
    parser.add_argument("--goal", default=None, help='e.g. "red bowl on top of blue mug; green mug left of red bowl" (default: sampled from --seed)')
    parser.add_argument("--views", type=int, default=3, choices=sorted(VIEW_SETS), help="camera views, one scorer each")
    parser.add_argument("--method", default="cem", choices=("cem", "random"))
    parser.add_argument("--segmenter", default="simulator", help="simulator | colour | a segmentation model name")
    parser.add_argument("--oracle", action="store_true", help="score with the ground-truth relations instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", type=int, default=48, help="plans per sampling iteration")
    parser.add_argument("--iterations", type=int, default=3, help="sampling iterations per executed action")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--out", default="episode.gif", help="image strip (.png) or animation (.gif) of the views")
    parser.add_argument("--ray", action="store_true", help="shard rollouts over Ray environment actors")
    parser.add_argument("--runners", type=int, default=2, help="environment actors with --ray")


def run(args: argparse.Namespace) -> int:
    """Run one episode and save the views of every executed step."""
    import numpy as np

    from ensemble.config import ConsensusConfig
    from ensemble.consensus import run_consensus
    from envs.media import save_strip, tile_views

    config = RobotConfig("run", args.views, "oracle" if args.oracle else "views", args.method, args.segmenter)
    executor = _ray_executor(args, config.cameras) if args.ray else None
    generator, ensemble = build(config, args.candidates, args.iterations, args.max_steps, executor)
    context = {"goal": args.goal} if args.goal else {}
    try:
        state0 = generator.init_state(context or None, args.seed)
        print(f"goal: {state0.goal}\nobjects: {', '.join(generator.world_model.info()['object_names'])}")
        context = {"goal": state0.goal}  # the scorers judge the goal (sampled from the seed when not given)
        result = run_consensus(generator, ensemble, context, ConsensusConfig(seed=args.seed), state=state0)
        frames = []
        wm = generator.world_model
        wm.restore(state0.env_state)
        frames.append(tile_views(list(wm.render_views().values())))
        for action in result.output["actions"]:
            wm.step(np.asarray(action, dtype=np.float32))
            frames.append(tile_views(list(wm.render_views().values())))
        path = save_strip(frames, args.out)
        out = result.output
        for k, action in enumerate(out["actions"]):
            print(f"step {k + 1}: move {wm.info()['object_names'][int(round(action[0]))]} to ({action[1]:+.3f}, {action[2]:+.3f})")
        print(f"success: {out['success']} after {out['steps']} steps; relations: {out['relations']}; "
              f"{len(result.rounds)} rounds, {result.n_candidates} rollouts, {result.duration_s:.1f} s")
        print(f"views saved to {path}")
        return 0 if out["success"] else 1
    finally:
        generator.close()


# ----------------------------------------------------------------------------------------------- eval
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval robot``."""
    parser.add_argument("--n", type=int, default=50, help="seeded three-relation goals")
    parser.add_argument("--seed", type=int, default=0, help="item seed (scenes) and sampling seed")
    parser.add_argument("--views", type=int, default=3, choices=sorted(VIEW_SETS), help="N of the N-view rows")
    parser.add_argument("--configs", default=None, help="comma-separated rows (default: all but the colour row); "
                        "choices: " + ", ".join(standard_configs(3)).replace("3views", "<N>views"))
    parser.add_argument("--candidates", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--results", default="results/robot_eval.jsonl", help="resumable results file")
    parser.add_argument("--table", default=None, help="also write the Markdown table here")
    parser.add_argument("--ray", action="store_true", help="shard rollouts over Ray environment actors")
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def evaluate(args: argparse.Namespace) -> int:
    """Evaluate every configuration on the same goals; append rows; print the table."""
    from tqdm import tqdm

    from ensemble.config import ConsensusConfig
    from ensemble.consensus import run_consensus
    from ensemble.registry import TASKS
    from ensemble.results import ResultsFile, config_hash

    configs = standard_configs(args.views)
    names = args.configs.split(",") if args.configs else [n for n in configs if "colour" not in n]
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise ValueError(f"unknown configs {unknown}; valid: {', '.join(configs)}")
    task = TASKS.make("robot", env_id=ENV_ID)
    items = task.items(args.n, seed=args.seed)
    results = ResultsFile(args.results)
    for name in names:
        config = configs[name]
        budget = {"candidates": args.candidates, "iterations": args.iterations, "max_steps": args.max_steps}
        chash = config_hash({"task": task.spec(), "config": config.__dict__, **budget})
        todo = [i for i in items if results.key_of({"item_id": i.id, "config_hash": chash, "seed": args.seed}) not in results]
        if not todo:
            continue
        executor = _ray_executor(args, config.cameras) if args.ray else None
        generator, ensemble = build(config, args.candidates, args.iterations, args.max_steps, executor)
        try:
            for item in tqdm(todo, desc=name, disable=args.no_progress):
                t0 = time.perf_counter()
                res = run_consensus(generator, ensemble, item.context, ConsensusConfig(seed=args.seed))
                answer = task.answer(res.output, item)
                results.append({
                    "item_id": item.id, "config_hash": chash, "seed": args.seed, "config": name,
                    "views": 1 if config.scorer == "oracle" else config.views, "scorer": config.scorer,
                    "method": config.method, "segmenter": config.segmenter, "goal": item.context["goal"],
                    "success": task.metric(answer, item), "steps": res.output["steps"],
                    "rollouts": res.n_candidates, "seconds": time.perf_counter() - t0, **budget,
                })
        finally:
            generator.close()
    table = results_table(results.rows(), names, {i.id for i in items}, args.seed)
    print(table)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(table + "\n")
    return 0


def results_table(rows: list[dict[str, Any]], names: list[str], ids: set[str], seed: int) -> str:
    """One Markdown row per configuration: success rate, episodes, mean steps and rollouts, seconds."""
    out = []
    for name in names:
        mine = [r for r in rows if r["config"] == name and r["item_id"] in ids and r["seed"] == seed]
        if not mine:
            continue
        n = len(mine)
        first = mine[0]
        scorer = "ground-truth relations" if first["scorer"] == "oracle" else (
            f"{first['views']} view scorer{'s' if first['views'] > 1 else ''} ({first['segmenter']} segm.)")
        out.append([name, scorer, first["method"], f"{100 * sum(r['success'] for r in mine) / n:.0f} %", n,
                    sum(r["steps"] for r in mine) / n, sum(r["rollouts"] for r in mine) / n,
                    sum(r["seconds"] for r in mine) / n])
    return markdown_table(["config", "scorers", "MPC", "success", "goals", "mean steps", "rollouts / episode", "s / episode"], out)


def main(argv: list[str] | None = None) -> int:
    """``python -m actors.robot_cli run|eval …`` until the lead wires the subcommands."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    parser = argparse.ArgumentParser(prog="robot")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run"))
    add_eval_arguments(sub.add_parser("eval"))
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else evaluate(args)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["add_eval_arguments", "add_run_arguments", "evaluate", "run"]

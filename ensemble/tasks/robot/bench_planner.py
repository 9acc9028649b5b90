"""How well each sampling planner optimises one control step, separated from episode-level luck.

From the first planning state of each of ``--n`` goals (``--seed``), every planner variant runs one
control step (``--iterations`` rounds of ``--candidates`` plans, scored by the per-view scorers on the
simulator's segmentation, so perception is not what is measured) for each of ``--planner-seeds`` seeds,
and executes its choice. Reported per variant: the summed view energy of the chosen plan (lower is
better; mean and the mean over goals of its spread across planner seeds), the goal relations that hold
after the executed action (ground truth), and how collapsed CEM's final elites are (distinct objects
among them, their targets' spread).

    ensemble bench robot-planner --n 20 --seed 100 --planner-seeds 3
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "random": {"method": "random"},
    "cem-gaussian": {"method": "cem", "distribution": "gaussian", "explore": 0.0},
    "cem-elites": {"method": "cem", "distribution": "elites", "explore": 0.0},
    "cem-elites+explore": {"method": "cem", "distribution": "elites", "explore": 0.25},
}
"""Planner variants: MPC generator arguments."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble bench robot-planner``."""
    parser.add_argument("--n", type=int, default=20, help="goals (first planning state of each)")
    parser.add_argument("--seed", type=int, default=100, help="goal seed (100: the tuning seed)")
    parser.add_argument("--planner-seeds", type=int, default=3, help="planner seeds per goal and variant")
    parser.add_argument("--candidates", type=int, default=48, help="plans per iteration")
    parser.add_argument("--iterations", type=int, default=3, help="iterations in the control step")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ", ".join(VARIANTS))


def control_step(generator: Any, ensemble: Any, state: Any) -> tuple[Any, float, np.ndarray | None]:
    """Run one control step; returns the state after executing, the chosen plan's energy, the final elites."""
    context = generator.scorer_context(state)
    elites, best = None, float("inf")
    step = state.step
    while state.step == step and not state.done:
        proposal = generator.propose(state, context)
        feedback = ensemble.score(context, proposal)
        best = min(best, float(feedback.energy.min()))
        state = generator.refine(state, proposal, feedback)
        if state.elites is not None:
            elites = state.elites.copy()
    return state, best, elites


def run(args: argparse.Namespace) -> int:
    """Measure every variant and print the Markdown table."""
    import torch

    from ensemble.aggregate import ScorerEnsemble
    from ensemble.eval.table import markdown_table
    from ensemble.registry import GENERATORS, TASKS
    from ensemble.tasks.robot.task import view_scorers

    torch.set_num_threads(1)
    items = TASKS.make("robot").items(args.n, args.seed)
    cameras = ("front", "left", "top")
    ensemble = ScorerEnsemble(view_scorers(cameras, "simulator"))
    rows = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        t0 = time.perf_counter()
        gen = GENERATORS.make("mpc", env_kwargs={"cameras": cameras}, n_candidates=args.candidates,
                              iterations=args.iterations, max_steps=1, **VARIANTS[name])
        energies = np.full((len(items), args.planner_seeds), np.nan)
        holds = np.zeros_like(energies)
        objects, spread = [], []
        try:
            for i, item in enumerate(items):
                for s in range(args.planner_seeds):
                    state0 = gen.init_state(item.context, 1000 * s + i)
                    state, best_energy, elites = control_step(gen, ensemble, state0)
                    energies[i, s], holds[i, s] = best_energy, sum(state.relations)
                    if elites is not None:
                        objects.append(len(np.unique(elites[:, 0, 0])))
                        spread.append(float(np.mean(np.std(elites[:, 0, 1:], axis=0))))
        finally:
            gen.close()
        rows.append([name, f"{np.nanmean(energies):.3f}", f"{np.nanmean(np.nanstd(energies, axis=1)):.3f}",
                     f"{holds.mean():.2f}", f"{np.mean(objects):.2f}" if objects else "–",
                     f"{100 * np.mean(spread):.1f}" if spread else "–", f"{time.perf_counter() - t0:.0f}"])
        print(markdown_table(["planner", "chosen plan's energy (mean)", "spread over planner seeds",
                              "relations holding after the step", "distinct objects in final elites",
                              "elite target spread (cm)", "s"], rows), flush=True)
    return 0

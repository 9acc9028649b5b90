"""``ensemble demo``: the smallest real consensus run — three update rules on analytic scorers.

It needs no model weights, so it shows the loop, the round records and the attribution on any machine
in a second. The tasks (``ensemble run math …``) are the real workloads.
"""

from __future__ import annotations

import argparse

from ensemble.eval.table import markdown_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a one-second consensus run of each update rule on analytic scorers")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ensemble import ConsensusConfig, ScorerEnsemble, run_consensus
    from ensemble.generators.gradient import GradientGenerator
    from ensemble.generators.sampling import SamplingGenerator
    from ensemble.scorers.quadratic import QuadraticScorer

    ens = ScorerEnsemble({"a": QuadraticScorer(target=[2.0, 0.0]), "b": QuadraticScorer(target=[0.0, 2.0])})
    for name, gen in (
        ("gradient", GradientGenerator(shape=(1, 2), steps=20, step_size=0.1)),
        ("selection (CEM)", SamplingGenerator(dim=2, n_candidates=32, rounds=6)),
    ):
        res = run_consensus(gen, ens, None, ConsensusConfig(seed=args.seed))
        print(f"## {name}: output {res.output.flatten().tolist()} (consensus optimum [1.0, 1.0]), "
              f"stop: {res.stop_reason}\n")
        rows = [[r.round, r.best_energy, r.scorer_energy["a"], r.scorer_energy["b"], r.agreement] for r in res.rounds[:: max(1, len(res.rounds) // 6)]]
        print(markdown_table(["round", "summed energy", "energy a", "energy b", "agreement"], rows), "\n")
    return 0

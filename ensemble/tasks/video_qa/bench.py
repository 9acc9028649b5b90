"""ZeroCap vs MAGIC-style vs the LM alone: seconds per question, measured side by side in one run.

On the same ``--n`` *train-split* questions (no test question is touched), with one LM and one set of
CLIPs loaded once, it times

* ``lm``: the LM alone (blind: the video is never read), the speed reference;
* ``zerocap``: the LM guided by the CLIP ensemble with a context gradient step per token (the paper);
* ``magic``: the same ensemble reranking the LM's top-k, no gradient (MAGIC-style);

alternating the three question by question so background load hits all alike (after one untimed warm-up
of each on the first question), and prints a Markdown table (s / question, scored rounds / question,
slowdown vs the LM alone, correct).

    ensemble bench video_qa --n 12 --source easyvqa
"""

from __future__ import annotations

import argparse
import dataclasses

HELP = "video QA: s/question of ZeroCap vs MAGIC-style vs the LM alone"
"""Help line of ``ensemble bench video_qa``."""
DECODERS = ("lm", "zerocap", "magic")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the benchmark (the model and token-rule flags of ``ensemble eval video_qa`` included)."""
    from ensemble.tasks.video_qa.cli import add_model_flags

    parser.add_argument("--n", type=int, default=12, help="train-split questions")
    parser.add_argument("--seed", type=int, default=0, help="train-split seed")
    parser.add_argument("--source", default="easyvqa", choices=["easyvqa", "tabletop"], help="question source")
    parser.add_argument("--beam", type=int, default=1, help="beam size of every decoder")
    parser.add_argument("--tiny", action="store_true", help="tiny real models (a smoke run; numbers mean nothing)")
    add_model_flags(parser)


def solvers(args: argparse.Namespace) -> dict[str, object]:
    """The ZeroCap, MAGIC-style and LM-alone solvers of the flags, sharing one loaded LM and one set of CLIPs;
    each has its own generator, so no decoder reuses another's prompt encoding or forward passes."""
    from ensemble.tasks.video_qa.cli import spec_from_args
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    task = VideoQATask(source=args.source)
    spec = VideoQASpec(**task.settings_for(tiny=True)) if args.tiny else spec_from_args(args)
    zerocap = VideoQASolver(dataclasses.replace(spec, mode="zerocap"), task)
    zerocap.setup()
    model, tokenizer = zerocap.generator.model, zerocap.generator.tokenizer
    magic = VideoQASolver(dataclasses.replace(spec, mode="magic"), task, lm=(model, tokenizer),
                          scorers=zerocap.scorers)
    lm = VideoQASolver(spec, task, lm=(model, tokenizer), scorers=zerocap.scorers)
    return {"zerocap": zerocap, "magic": magic, "lm": lm}


def run(args: argparse.Namespace) -> int:
    """Measure and print the Markdown table."""
    import torch

    from ensemble.eval.table import markdown_table

    if args.threads:
        torch.set_num_threads(args.threads)
    by_mode = solvers(args)
    task = by_mode["zerocap"].task
    items = task.items(args.n, args.seed, split="train")
    plan = {"lm": (by_mode["lm"], f"lm@{args.beam}"), "zerocap": (by_mode["zerocap"], f"ensemble@{args.beam}"),
            "magic": (by_mode["magic"], f"ensemble@{args.beam}")}
    for solver, system in plan.values():  # warm-up: first passes over a prompt length are slower on CPU
        solver.solve(items[0], system, args.seed)
    stats = {d: {"s": 0.0, "rounds": 0, "correct": 0.0, "n": 0} for d in DECODERS}
    for i, item in enumerate(items):
        order = DECODERS[i % 3:] + DECODERS[: i % 3]  # rotate who goes first
        for decoder in order:
            solver, system = plan[decoder]
            row = solver.solve(item, system, args.seed)
            acc = stats[decoder]
            acc["s"] += row["timings"]["seconds"]
            acc["rounds"] += row["extras"].get("rounds", 0)
            acc["correct"] += row["metric"]
            acc["n"] += 1
        print(f"{i + 1}/{len(items)} " + ", ".join(f"{d} {stats[d]['s']:.1f}s" for d in DECODERS), flush=True)
    ref = stats["lm"]["s"] / max(stats["lm"]["n"], 1)
    names = {"lm": "LM alone (blind)", "zerocap": "ZeroCap (context gradient)", "magic": "MAGIC-style (rerank)"}
    rows = []
    for d in DECODERS:
        a = stats[d]
        sp = a["s"] / max(a["n"], 1)
        rows.append([names[d], a["n"], sp, a["rounds"] / max(a["n"], 1), sp / ref if ref else None,
                     f"{int(a['correct'])}/{a['n']}"])
    spec = by_mode["zerocap"].spec
    print(f"\n{args.source} train split, seed {args.seed}, beam {args.beam}, LM {spec.lm}, CLIPs "
          f"{', '.join(spec.clips)}, threads {args.threads}\n")
    print(markdown_table(["decoder", "questions", "s / question", "scored rounds / question", "x LM alone",
                          "correct"], rows))
    return 0


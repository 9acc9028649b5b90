"""ZeroCap vs MAGIC-style vs the LM alone: seconds per question, measured side by side in one run.

On the same ``--n`` *train-split* questions (no test question is touched), with one LM and one set of
CLIPs loaded once, it times

* ``lm``: the LM alone (blind: the video is never read), the speed reference;
* ``zerocap``: the LM guided by the CLIP ensemble with a context gradient step per token (the paper);
* ``magic``: the same ensemble reranking the LM's top-k, no gradient (MAGIC-style);

alternating the three question by question so background load hits all alike (after one untimed warm-up
of each on the first question), and prints a Markdown table (s / question, scored rounds / question,
slowdown vs the LM alone, correct).

With ``--reference`` it also times both guided decoders on the *reference text path* (each CLIP embeds its new
candidate texts as one padded batch, ``grouped_text=False``), every guided decoder then on its own copy of the CLIPs
(its own text cache, as when one system is evaluated, so no decoder's cost depends on who went first), and reports
each guided decoder's speed-up over its reference and on how many questions the two answered alike:

    ensemble bench video_qa --n 12 --source easyvqa
    ensemble bench video_qa --n 3 --source tabletop --beam 5 --reference --threads 1   # top-512 × 5 beams
"""

from __future__ import annotations

import argparse
import dataclasses

HELP = "video QA: s/question of ZeroCap vs MAGIC-style vs the LM alone"
"""Help line of ``ensemble bench video_qa``."""
DECODERS = ("lm", "zerocap", "magic")
REFERENCE = {"zerocap-ref": "zerocap", "magic-ref": "magic"}
"""``--reference`` decoders: the guided decoders on the reference text path (one padded batch per CLIP call)."""
NAMES = {"lm": "LM alone (blind)", "zerocap": "ZeroCap (context gradient)", "magic": "MAGIC-style (rerank)",
         "zerocap-ref": "ZeroCap, reference text path", "magic-ref": "MAGIC-style, reference text path"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the benchmark (the model and token-rule flags of ``ensemble eval video_qa`` included)."""
    from ensemble.tasks.video_qa.cli import add_model_flags

    parser.add_argument("--n", type=int, default=12, help="train-split questions")
    parser.add_argument("--seed", type=int, default=0, help="train-split seed")
    parser.add_argument("--source", default="easyvqa", choices=["easyvqa", "tabletop"], help="question source")
    parser.add_argument("--beam", type=int, default=1, help="beam size of every decoder")
    parser.add_argument("--tiny", action="store_true", help="tiny real models (a smoke run; numbers mean nothing)")
    parser.add_argument("--reference", action="store_true",
                        help="also time ZeroCap and MAGIC-style on the reference text path (one padded batch of "
                             "texts per CLIP call, its own CLIPs): speed-up and identical answers, side by side")
    add_model_flags(parser)


def solvers(args: argparse.Namespace) -> dict[str, object]:
    """The ZeroCap, MAGIC-style and LM-alone solvers of the flags, sharing one loaded LM and one set of CLIPs;
    each has its own generator, so no decoder reuses another's prompt encoding or forward passes. With
    ``--reference``, also ZeroCap and MAGIC-style over a second set of the CLIPs on the reference text path."""
    from ensemble.tasks.video_qa.cli import spec_from_args
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    task = VideoQATask(source=args.source)
    spec = VideoQASpec(**task.settings_for(tiny=True)) if args.tiny else spec_from_args(args)
    zerocap = VideoQASolver(dataclasses.replace(spec, mode="zerocap"), task)
    zerocap.setup()
    lm_pair = (zerocap.generator.model, zerocap.generator.tokenizer)
    out = {"zerocap": zerocap,
           "magic": VideoQASolver(dataclasses.replace(spec, mode="magic"), task, lm=lm_pair, scorers=zerocap.scorers),
           "lm": VideoQASolver(spec, task, lm=lm_pair, scorers=zerocap.scorers)}
    if getattr(args, "reference", False):  # every guided decoder on its own CLIPs: its own text cache, as in an eval
        out["magic"] = VideoQASolver(dataclasses.replace(spec, mode="magic"), task, lm=lm_pair)
        ref = dataclasses.replace(spec, clips={n: {**kw, "grouped_text": False} for n, kw in spec.clips.items()})
        for name, mode in REFERENCE.items():
            out[name] = VideoQASolver(dataclasses.replace(ref, mode=mode), task, lm=lm_pair)
    return out


def run(args: argparse.Namespace) -> int:
    """Measure and print the Markdown table."""
    import torch

    from ensemble.eval.table import markdown_table

    if args.threads:
        torch.set_num_threads(args.threads)
    by_mode = solvers(args)
    decoders = tuple(by_mode) if len(by_mode) > 3 else DECODERS
    task = by_mode["zerocap"].task
    items = task.items(args.n, args.seed, split="train")
    plan = {d: (by_mode[d], f"lm@{args.beam}" if d == "lm" else f"ensemble@{args.beam}") for d in decoders}
    for solver, system in plan.values():  # warm-up: first passes over a prompt length are slower on CPU
        solver.solve(items[0], system, args.seed)
    stats = {d: {"s": 0.0, "rounds": 0, "correct": 0.0, "n": 0, "outputs": []} for d in decoders}
    for i, item in enumerate(items):
        k = i % len(decoders)
        for decoder in decoders[k:] + decoders[:k]:  # rotate who goes first
            solver, system = plan[decoder]
            row = solver.solve(item, system, args.seed)
            acc = stats[decoder]
            acc["s"] += row["timings"]["seconds"]
            acc["rounds"] += row["extras"].get("rounds", 0)
            acc["correct"] += row["metric"]
            acc["n"] += 1
            acc["outputs"].append(row["extras"]["output"])
        print(f"{i + 1}/{len(items)} " + ", ".join(f"{d} {stats[d]['s']:.1f}s" for d in decoders), flush=True)
    per_q = {d: a["s"] / max(a["n"], 1) for d, a in stats.items()}
    ref = per_q["lm"]
    rows = []
    for d in decoders:
        a = stats[d]
        row = [NAMES[d], a["n"], per_q[d], a["rounds"] / max(a["n"], 1), per_q[d] / ref if ref else None,
               f"{int(a['correct'])}/{a['n']}"]
        if len(decoders) > 3:
            other = next((r for r, g in REFERENCE.items() if g == d), None)
            row += ([per_q[other] / per_q[d] if per_q[d] else None,
                     f"{sum(x == y for x, y in zip(a['outputs'], stats[other]['outputs'], strict=True))}/{a['n']}"]
                    if other else [None, None])
        rows.append(row)
    spec = by_mode["zerocap"].spec
    top_k = spec.token_config().get("top_k")
    print(f"\n{args.source} train split, seed {args.seed}, beam {args.beam}, top-{top_k}, LM {spec.lm}, CLIPs "
          f"{', '.join(spec.clips)}, threads {args.threads}\n")
    header = ["decoder", "questions", "s / question", "scored rounds / question", "x LM alone", "correct"]
    if len(decoders) > 3:
        header += ["speed-up over the reference text path", "same answer as the reference path"]
    print(markdown_table(header, rows))
    return 0

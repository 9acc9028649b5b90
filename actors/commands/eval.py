"""``ensemble eval math``: LM alone vs + each verifier vs + the ensemble, beam 1 and 5, resumable.

Each finished (item, system, beam) is appended to a results JSONL keyed by (item id, config hash,
seed); rerunning the same command skips what is there, so an interrupted run loses and repeats
nothing. Ends with a Markdown table (also written next to the results file as ``<out>.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from actors.commands._math_args import add_model_flags, spec_from_args
from actors.table import markdown_table

HEADER = ["system", "beam", "problems", "accuracy %", "won / lost vs LM alone", "s / problem", "tokens / s"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    eval_parser = sub.add_parser("eval", help="evaluate systems on a task, resumably, with a Markdown table")
    tasks = eval_parser.add_subparsers(dest="task", metavar="TASK", required=True)
    from actors import image_cli, robot_cli

    rp = tasks.add_parser("robot", help="success rates: 1 view vs N views vs ground truth, random vs CEM")
    robot_cli.add_eval_arguments(rp)
    rp.set_defaults(func=robot_cli.evaluate)
    ip = tasks.add_parser("image", help="diffusion alone vs + CLIP / + classifier / + CFG / all: accuracy, FID/KID/IS-like")
    image_cli.add_eval_arguments(ip)
    ip.set_defaults(func=image_cli.evaluate)
    p = tasks.add_parser("math", help="LM alone vs + each verifier vs + the ensemble, beam 1 and 5")
    p.add_argument("--n", type=int, default=200, help="number of problems")
    p.add_argument("--skip", type=int, default=0, metavar="N",
                   help="leave out the first N of the --n problems (e.g. finished in an earlier results file)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (GSM-Symbolic test split)")
    p.add_argument("--source", default="gsm_symbolic", help="gsm_symbolic or a GSM8K .jsonl path")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="GSM-Symbolic split: test (report) or train (development: choosing settings, never reported)")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    p.add_argument("--systems", default="lm,numeric_verifier,minilm_verifier,ensemble",
                   help="comma-separated: lm, verifier names, ensemble")
    p.add_argument("--out", default="results/math.jsonl", help="results JSONL (appended, resumable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--shard", default=None, metavar="I/K",
                   help="evaluate only problems i with i %% K == I, e.g. one process per core with 0/2 and 1/2 on "
                        "the same --out (appends are locked); the table covers every row already in the file")
    p.add_argument("--ray", action="store_true", help="shard the items over a Ray cluster")
    p.add_argument("--address", default=None, help="Ray cluster address (implies --ray)")
    add_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ensemble.evaluation import evaluate_local, select_rows, summarise
    from ensemble.results import ResultsFile
    from ensemble.tasks.math import MathTask

    spec = spec_from_args(args)
    spec.task["source"] = args.source
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    spec.check_systems(systems)
    if any(b < 1 for b in args.beams):
        raise ValueError(f"--beams {args.beams}: beam sizes must be >= 1")
    if not 0 <= args.skip < args.n:
        raise ValueError(f"--skip {args.skip}: need 0 <= skip < --n ({args.n})")
    items = MathTask(**spec.task).items(args.n, args.seed, split=args.split)[args.skip:]
    mine = items[slice(*_shard(args.shard))] if args.shard else items
    if args.shard and (args.ray or args.address):
        raise ValueError("--shard splits the work between local processes; with --ray the cluster shards it")
    results = ResultsFile(args.out)
    if args.ray or args.address:
        from actors.evaluation import evaluate_on_ray

        rows = evaluate_on_ray(spec, items, systems, args.beams, args.seed, results, address=args.address)
    else:
        progress = None
        if not args.no_progress:
            from tqdm import tqdm

            def progress(work):
                return tqdm(work, desc="math eval", unit="run")

        evaluate_local(spec, mine, systems, args.beams, args.seed, results, progress=progress)
        rows = select_rows(results.rows(), spec, items, systems, args.beams, args.seed)
    if len(rows) < len(items) * len(systems) * len(args.beams):
        print(f"\n{len(rows)} of {len(items) * len(systems) * len(args.beams)} runs are in {args.out} "
              "(other shards still running?)")
    table = markdown_table(HEADER, summarise(rows, systems, args.beams))
    which = f"problems {args.skip + 1}–{args.n}" if args.skip else f"{len(items)} problems"
    title = f"GSM-Symbolic ({args.source}, {args.split} split), {which}, seed {args.seed}, LM {spec.lm}"
    print(f"\n{title}\n\n{table}")
    Path(str(args.out) + ".md").write_text(f"{title}\n\n{table}\n")
    return 0


def _shard(text: str) -> tuple[int, None, int]:
    """``"I/K"`` → the slice ``(I, None, K)``, with a clear error for anything else."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r} must look like I/K, e.g. 0/2") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= I < K")
    return index, None, count

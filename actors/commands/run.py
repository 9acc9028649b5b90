"""``ensemble run math "<question>"``: solve one problem and show the rounds — which scorer moved which token."""

from __future__ import annotations

import argparse

from actors.commands._math_args import add_model_flags, spec_from_args
from actors.table import markdown_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    run_parser = sub.add_parser("run", help="run one task instance and show its consensus rounds")
    tasks = run_parser.add_subparsers(dest="task", metavar="TASK", required=True)
    from actors import image_cli, robot_cli

    rp = tasks.add_parser("robot", help="one tabletop episode toward a goal; saves the camera views")
    robot_cli.add_run_arguments(rp)
    rp.set_defaults(func=robot_cli.run)
    ip = tasks.add_parser("image", help="sample images for a prompt; prints each scorer's energy per denoising step")
    image_cli.add_run_arguments(ip)
    ip.set_defaults(func=image_cli.run)
    p = tasks.add_parser("math", help="solve one word problem with the LM guided by the verifier ensemble")
    p.add_argument("question", help="the word problem")
    p.add_argument("--system", default="ensemble", help="lm, a verifier name, or ensemble (default)")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-rounds", action="store_true", help="show every round, not only those where a scorer moved the token")
    add_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ensemble.contracts import Item
    from ensemble.evaluation import LM_ALONE, MathEvaluator

    spec = spec_from_args(args)
    spec.check_systems([args.system])
    evaluator = MathEvaluator(spec)
    records = []
    row = evaluator.solve(Item("cli", {"question": args.question}), args.system, args.beam, args.seed,
                          callback=lambda rec, state: records.append(rec))
    if args.system != LM_ALONE:
        shown = []
        for r in records:
            info = r.info
            if info.get("final"):
                continue
            committed = (info.get("committed") or [""])[0]
            moved = [n for n, t in info.get("scorer_top", {}).items() if t == committed and t != info.get("lm_top")]
            if args.all_rounds or moved:
                shown.append([r.round, info.get("n_tokens"), repr(info.get("lm_top")), repr(committed),
                              ", ".join(f"{n}:{t!r}" for n, t in info.get("scorer_top", {}).items()),
                              ", ".join(moved) or "–", r.n_candidates])
        print(f"## rounds ({len(records)} in total; {'all' if args.all_rounds else 'those where a scorer moved the token'})\n")
        print(markdown_table(["round", "token #", "LM top", "committed", "each scorer's favourite", "moved by", "candidates"], shown))
        print(f"\nmoved tokens per scorer: {row.get('moved')}")
        final = next((r for r in records if r.info.get("final")), None)
        if final is not None:
            info = final.info
            print(f"final selection among {final.n_candidates} finished beams: the verifiers chose #{info['chosen']} "
                  f"(the LM's own best: #{info['lm_choice']}; each scorer's favourite: {info['scorer_top']})")
    print(f"\n## solution ({args.system}, beam {args.beam}, {row['tokens']} tokens in {row['seconds']:.1f}s)\n")
    print(row["output"])
    print(f"\nanswer: {row['answer']}")
    return 0

"""``ensemble train verifiers``: train the math verifiers offline on CPU and save them as checkpoints."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train project models offline (math verifiers, image models)")
    p.add_argument("what", choices=["verifiers", "image-models"])
    p.add_argument("--only", default="minilm_verifier,numeric_verifier", help="comma-separated verifiers to train")
    p.add_argument("--n-problems", type=int, default=600, help="training problems per verifier")
    p.add_argument("--seed", type=int, default=0, help="training seed (GSM-Symbolic training split)")
    p.add_argument("--lm", default="smollm2-135m-instruct", help="LM to sample extra examples from ('none' to skip)")
    p.add_argument("--lm-problems", type=int, default=24)
    p.add_argument("--lm-samples", type=int, default=4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--annotations", action="store_true", help="train on <<expr=value>> format solutions")
    p.add_argument("--out", action="append", default=[], metavar="NAME=DIR", help="save a verifier elsewhere")
    p.add_argument("--threads", type=int, default=2)
    from actors import image_cli

    image_cli.add_train_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "image-models":
        from actors import image_cli

        return image_cli.train(args)
    import torch

    from ensemble.verifiers.checkpoint import DEFAULT_CHECKPOINTS
    from ensemble.verifiers.train import TrainConfig, train_verifiers

    torch.set_num_threads(args.threads)
    names = dict(DEFAULT_CHECKPOINTS)
    for item in args.out:
        key, _, path = item.partition("=")
        if key not in names or not path:
            raise ValueError(f"--out {item!r} must look like NAME=DIR with NAME in {sorted(names)}")
        names[key] = path
    cfg = TrainConfig(n_problems=args.n_problems, seed=args.seed, lm=None if args.lm == "none" else args.lm,
                      lm_problems=args.lm_problems, lm_samples=args.lm_samples, epochs=args.epochs,
                      annotations=args.annotations, names=names)
    report = train_verifiers(cfg, [w.strip() for w in args.only.split(",") if w.strip()])
    for name, r in report.items():
        print(f"{name}: {r['path']} held-out accuracy {r.get('held_out_acc', float('nan')):.3f} "
              f"({r['n_examples']} examples, {r['seconds']:.0f}s)")
    return 0

"""Training commands of the math task: ``ensemble train verifiers``, ``… generator`` and ``… calibration``.

Offered to the generic ``ensemble train`` command through :data:`TRAIN_TARGETS`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ensemble.tasks.math.task import DEFAULT_LM, DEFAULT_SHOTS, LORA_LM


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags both math trainings share."""
    p.add_argument("--n-problems", type=int, default=None, help="training problems (verifiers: 600 each; generator: 256 with LoRA, 2000 without)")
    p.add_argument("--seed", type=int, default=None, help="training seed, GSM-Symbolic training split (verifiers: 0; generator: 100)")
    p.add_argument("--epochs", type=int, default=None, help="verifiers: 30; generator: 1")
    p.add_argument("--annotations", action="store_true", help="train on <<expr=value>> format solutions")
    p.add_argument("--threads", type=int, default=2)


def add_verifier_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train verifiers``."""
    add_common_arguments(p)
    p.add_argument("--only", default="minilm_verifier,numeric_verifier", help="comma-separated verifiers to train")
    p.add_argument("--lm", default=DEFAULT_LM,
                   help="LM whose samples become examples ('none' to skip; default: the default math generator, "
                        "the untuned SmolLM2-135M-Instruct)")
    p.add_argument("--lm-problems", type=int, default=80, help="training problems the LM is sampled on")
    p.add_argument("--lm-samples", type=int, default=4, help="samples per such problem")
    p.add_argument("--held-lm-problems", type=int, default=12,
                   help="held-out problems the LM is sampled on (held_out_lm_auc: right vs wrong LM solutions)")
    p.add_argument("--shots", type=int, default=DEFAULT_SHOTS, choices=[0, 1],
                   help="worked examples in the LM's prompt (match the generator: 1 for the untuned one)")
    p.add_argument("--out", action="append", default=[], metavar="NAME=DIR", help="save a verifier elsewhere")


LORA_DEFAULTS = {"name": LORA_LM, "n_problems": 256, "lr": 1e-3, "shots": DEFAULT_SHOTS}
"""``ensemble train generator`` with LoRA (the default): few steps on the default generator's own prompt (one
worked example), 13 CPU-minutes (28 min wall on a loaded 2-core machine); the result is a drop-in for the untuned LM (same ``--shots``)."""

FULL_DEFAULTS = {"name": "generators/smollm2-gsm", "n_problems": 2000, "lr": 2e-4, "shots": 0}
"""``--lora-rank 0``: the full fine-tune (every parameter, no worked example; ~40 min on 2 cores)."""


def add_generator_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train generator``."""
    add_common_arguments(p)
    p.add_argument("--base", default="smollm2-135m-instruct", help="causal LM to fine-tune")
    p.add_argument("--lora-rank", type=int, default=8,
                   help="LoRA adapter rank on every linear projection (default 8; 0 = no LoRA: a full fine-tune, "
                        "or the top --train-layers blocks)")
    p.add_argument("--name", default=None,
                   help=f"checkpoint name or directory (default {LORA_DEFAULTS['name']}; with --lora-rank 0 "
                        f"{FULL_DEFAULTS['name']})")
    p.add_argument("--train-layers", type=int, default=None,
                   help="with --lora-rank 0: top transformer blocks trained (default 0 = all)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 with LoRA, 2e-4 without)")
    p.add_argument("--shots", type=int, default=None, choices=[0, 1],
                   help="worked examples in the training prompt, to decode with the same --shots "
                        "(default 1 with LoRA, as the untuned default generator; 0 without)")
    p.add_argument("--lm-batch-size", type=int, default=8, help="sequences per step")


def train_verifiers_command(args: argparse.Namespace) -> int:
    """``ensemble train verifiers``: the question–solution classifiers."""
    import torch

    from ensemble.tasks.math.verifiers.checkpoint import DEFAULT_CHECKPOINTS
    from ensemble.tasks.math.verifiers.train import TrainConfig, train_verifiers

    torch.set_num_threads(args.threads)
    names = dict(DEFAULT_CHECKPOINTS)
    for item in args.out:
        key, _, path = item.partition("=")
        if key not in names or not path:
            raise ValueError(f"--out {item!r} must look like NAME=DIR with NAME in {sorted(names)}")
        names[key] = path
    base = TrainConfig()
    cfg = TrainConfig(n_problems=_or(args.n_problems, base.n_problems), seed=_or(args.seed, base.seed),
                      lm=None if args.lm == "none" else args.lm, lm_problems=args.lm_problems,
                      lm_samples=args.lm_samples, epochs=_or(args.epochs, base.epochs), shots=args.shots,
                      held_lm_problems=args.held_lm_problems,
                      annotations=args.annotations, names=names, progress=True)
    report = train_verifiers(cfg, [w.strip() for w in args.only.split(",") if w.strip()])
    for name, r in report.items():
        lm_auc = f", AUC on held-out LM samples {r['held_out_lm_auc']:.3f}" if "held_out_lm_auc" in r else ""
        print(f"{name}: {r['path']} held-out accuracy {r.get('held_out_acc', float('nan')):.3f}, "
              f"AUC {r.get('held_out_auc', float('nan')):.3f}{lm_auc} ({r['n_examples']} examples, {r['seconds']:.0f}s)")
    return 0


def train_generator_command(args: argparse.Namespace) -> int:
    """Fine-tune the math generator (LoRA unless ``--lora-rank 0``); unset flags take that mode's defaults."""
    from tqdm import tqdm

    from ensemble.tasks.math.finetune import FinetuneConfig, finetune

    defaults = FinetuneConfig()
    mode = LORA_DEFAULTS if args.lora_rank else FULL_DEFAULTS
    cfg = FinetuneConfig(
        base=args.base, name=args.name or mode["name"], n_problems=_or(args.n_problems, mode["n_problems"]),
        seed=_or(args.seed, defaults.seed), epochs=_or(args.epochs, defaults.epochs),
        train_layers=_or(args.train_layers, defaults.train_layers), lr=_or(args.lr, mode["lr"]),
        shots=_or(args.shots, mode["shots"]), lora_rank=args.lora_rank, batch_size=args.lm_batch_size,
        annotations=args.annotations, threads=args.threads,
    )
    desc = f"LoRA r={cfg.lora_rank}" if cfg.lora_rank else "fine-tune"
    report = finetune(cfg, progress=lambda total: tqdm(total=total, desc=desc, unit="step"))
    print(f"{report['path']}: held-out loss {report['held_out_loss_before']} -> {report['held_out_loss_after']} "
          f"({report['method']}, {report['train_examples']} problems, {report['steps']} steps, "
          f"{report['seconds']:.0f}s; decode with --lm {cfg.name} --shots {cfg.shots})")
    return 0


def _add_development_arguments(p: argparse.ArgumentParser) -> None:
    """The ensemble's own flags plus the development problems a calibration command fits on."""
    from ensemble.tasks.math.cli import add_model_flags

    add_model_flags(p)
    p.add_argument("--n-problems", type=int, default=30, help="development problems (GSM-Symbolic training templates)")
    p.add_argument("--seed", type=int, default=200, help="seed of the development problems (training split)")


def _development_problems(args: argparse.Namespace, fitted_flag: str) -> tuple[Any, list[Any]]:
    """The evaluator and the development problems (training split) of a calibration command.

    ``fitted_flag`` names the scales flag the command fits, cleared so that no saved scales are applied.
    """
    from ensemble.tasks.math.cli import spec_from_args
    from ensemble.tasks.math.solver import MathEvaluator
    from ensemble.tasks.math.task import MathTask

    setattr(args, fitted_flag, "")
    spec = spec_from_args(args)
    return MathEvaluator(spec), MathTask(**spec.task).items(args.n_problems, args.seed, split="train")


def add_calibration_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train calibration``: the ensemble's own flags, plus the development problems."""
    from ensemble.tasks.math.calibrate import DEFAULT_NAME

    _add_development_arguments(p)
    p.add_argument("--max-positions", type=int, default=12, help="rated positions per problem at most")
    p.add_argument("--name", default=DEFAULT_NAME, help="checkpoint name or directory to save the scales to")


def train_calibration_command(args: argparse.Namespace) -> int:
    """Fit one calibration scale per verifier on development problems and save them."""
    from ensemble.tasks.math.calibrate import calibrate, save_calibration

    evaluator, items = _development_problems(args, "scales")
    report = calibrate(evaluator, items, max_positions=args.max_positions, progress=True)
    path = save_calibration(report, args.name)
    for name, r in report["scorers"].items():
        print(f"{name}: scale {r['scale']:.3f} on {r['positions']} positions (mean log-likelihood of the reference "
              f"token {r['ll_prior']:.3f} with the LM's prior alone, {r['ll_calibrated']:.3f} calibrated; "
              f"the scorer's favourite is the reference {100 * r['top1']:.0f} %)")
    print(f"saved to {path} ({report['seconds']:.0f}s); apply with --scales calibration")
    return 0


def add_pick_calibration_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train pick-calibration``: the ensemble's own flags, plus the development problems."""
    from ensemble.tasks.math.pick_calibrate import DEFAULT_NAME

    _add_development_arguments(p)
    p.add_argument("--k", type=int, default=8, help="solutions sampled per problem (the K of pick_…@K)")
    p.add_argument("--report-k", default="1,2,4,8,16,32",
                   help="also print the headroom at these smaller K (each problem's first k solutions of the same run)")
    p.add_argument("--name", default=DEFAULT_NAME,
                   help="checkpoint name or directory to save the scales to; its records.jsonl keeps every finished "
                        "problem, so a killed run resumes")


def train_pick_calibration_command(args: argparse.Namespace) -> int:
    """Fit the solution-level calibration scales on development problems, print the headroom, save them."""
    from ensemble.tasks.math.pick_calibrate import checkpoint_path, pick_calibrate, save_pick_calibration

    evaluator, items = _development_problems(args, "pick_scales")
    ks = [int(x) for x in str(args.report_k).split(",") if x.strip()]
    records = checkpoint_path(args.name) / "records.jsonl"
    report = pick_calibrate(evaluator, items, args.k, progress=True, records_path=records, ks=ks)
    path = save_pick_calibration(report, args.name)
    print(f"scales: {report['scales']}")
    columns = [*report["headroom_by_k"], str(args.k)]
    tables = {**report["headroom_by_k"], str(args.k): report["headroom"]}
    print("| development problems: picks (in-sample) | " + " | ".join(f"K={c}" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in report["headroom"]:
        cells = [str(tables[c][name]) if name == "problems" else f"{100 * tables[c][name]:.1f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"saved to {path} ({report['seconds']:.0f}s); apply with --pick-scales calibration")
    return 0


def _or(value, default):
    """``value`` unless the flag was left unset."""
    return default if value is None else value


TRAIN_TARGETS = {
    "verifiers": ("the math verifiers on references, perturbations and LM samples (~25 min)",
                  add_verifier_arguments, train_verifiers_command),
    "generator": ("fine-tune SmolLM2-135M on GSM-Symbolic training templates: LoRA by default (~13 CPU-min, one "
                  "thread), --lora-rank 0 for the full fine-tune (~40 min on 2 cores)",
                  add_generator_arguments, train_generator_command),
    "calibration": ("fit one calibration scale per verifier on development problems (training templates), "
                    "for --scales calibration", add_calibration_arguments, train_calibration_command),
    "pick-calibration": ("fit the solution-level (pick_…@K) calibration scales on development problems and print the "
                         "headroom (pass@1, pass@K, votes, picks)", add_pick_calibration_arguments,
                         train_pick_calibration_command),
}
"""``ensemble train`` targets of this task: name → (help, add_arguments, run)."""

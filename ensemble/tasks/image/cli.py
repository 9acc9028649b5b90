"""Command-line layer of the image task: flags of ``eval`` / ``serve``, ``ensemble run image`` and
``ensemble train image-models``.

``run`` samples a grid of images for one prompt and prints every scorer's energy at every denoising
step. ``ensemble eval image`` (the generic engine) compares, on the same seeded class labels and the
same initial noise: the diffusion model alone, + CLIP, + classifier, + classifier-free guidance, and
all three, with the independent classifier's accuracy and the FID-/KID-/IS-like set metrics.
``train`` trains the four small models on the ``easy-vqa`` shapes (minutes on a CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ensemble.eval.table import markdown_table
from ensemble.tasks.image.solver import DEFAULT_MODELS

EVALUATOR = "image/shapes-eval-classifier"


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unet", default=DEFAULT_MODELS["unet"], help="diffusion model name")
    parser.add_argument("--clip", default=DEFAULT_MODELS["clip"], help="CLIP scorer model")
    parser.add_argument("--classifier", default=DEFAULT_MODELS["classifier"], help="classifier scorer model")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (= consensus rounds)")
    parser.add_argument("--guidance-scale", type=float, default=0.3, help="s: multiplier of the summed scorer gradient")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="w of classifier-free guidance when it is on")
    parser.add_argument("--clip-weight", type=float, default=0.3, help="weight of the CLIP gradient when CLIP is on")
    parser.add_argument("--classifier-weight", type=float, default=1.0, help="weight of the classifier gradient")
    parser.add_argument("--clip-scale", type=float, default=16.0, help="CLIP score = scale · cosine")
    parser.add_argument("--guide", default="x0", choices=("x0", "xt"), help="gradient on x̂₀ or on x_t")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (1 = ancestral, 0 = deterministic)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def _settings(args: argparse.Namespace, n_samples: int = 1):
    from ensemble.tasks.image.task import SamplerSettings

    return SamplerSettings(steps=args.steps, guidance_scale=args.guidance_scale, cfg_scale=args.cfg_scale,
                           clip_scale=args.clip_scale, n_samples=n_samples, guide=args.guide,
                           eta=args.eta, clip_weight=args.clip_weight, classifier_weight=args.classifier_weight)


def _configs(spec: str | None) -> list[Any]:
    from ensemble.tasks.image.task import STANDARD_CONFIGS

    names = [n.strip() for n in spec.split(",")] if spec else list(STANDARD_CONFIGS)
    unknown = [n for n in names if n not in STANDARD_CONFIGS]
    if unknown:
        raise ValueError(f"unknown configs {unknown}; valid: {', '.join(STANDARD_CONFIGS)}")
    return [STANDARD_CONFIGS[n] for n in names]


def _load_shared(args: argparse.Namespace, settings: Any):
    from ensemble.models import load_diffusion
    from ensemble.tasks.image.task import build_scorers

    diffusion = load_diffusion(args.unet, device=args.device)
    return diffusion, build_scorers(args.clip, args.classifier, settings, device=args.device)


# ------------------------------------------------------------------------------------------------ run
RUN_HELP = "sample images for a prompt; prints each scorer's energy per denoising step"
"""Help line of ``ensemble run image``."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble run image``."""
    parser.add_argument("--prompt", default="a red circle", help='"a <colour> <shape>"')
    parser.add_argument("--config", default="all", help="alone | clip | cls | cfg | all")
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples.png", help="PNG grid of the samples")
    _add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Sample a grid for one prompt; print each scorer's energy per denoising step."""
    import torch

    from ensemble.config import ConsensusConfig
    from ensemble.consensus import run_consensus
    from ensemble.tasks.image.data import class_index
    from ensemble.tasks.image.task import build_system

    torch.set_num_threads(args.threads)
    label = class_index(args.prompt)
    settings = _settings(args, args.n_samples)
    config = _configs(args.config)[0]
    diffusion, scorers = _load_shared(args, settings)
    generator, ensemble = build_system(config, diffusion, scorers, settings, device=args.device)
    context = {"prompt": f"a {args.prompt.strip().removeprefix('a ').strip()}", "label": label}
    result = run_consensus(generator, ensemble, context, ConsensusConfig(seed=args.seed))
    rows = [[r.round, r.info.get("t"), *(r.scorer_mean_energy[n] for n in scorers), r.info.get("grad_rms"),
             r.info.get("cfg")] for r in result.rounds]
    print(f"prompt {context['prompt']!r} (class {label}), system {config.name}: energies (mean over "
          f"{args.n_samples} samples) of x̂₀ at each step\n")
    print(markdown_table(["step", "t", *(f"{n} energy" for n in scorers), "guidance RMS", "CFG RMS"], rows))
    path = save_grid(result.output, args.out)
    print(f"\n{args.n_samples} samples saved to {path} ({result.duration_s:.1f} s)")
    return 0


def save_grid(images: Any, path: str | Path, scale: int = 4, columns: int = 8) -> Path:
    """Save ``[N, 3, S, S]`` images in ``[-1, 1]`` as one PNG grid (nearest-neighbour upscaled)."""
    import numpy as np
    from PIL import Image

    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    n, s = arr.shape[0], arr.shape[1]
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = np.full((rows * (s + 1) + 1, cols * (s + 1) + 1, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[1 + r * (s + 1): 1 + r * (s + 1) + s, 1 + c * (s + 1): 1 + c * (s + 1) + s] = arr[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)
    return path


# ----------------------------------------------------------------------------------- the task-CLI contract
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval image`` / ``serve image`` beyond the generic ones."""
    parser.add_argument("--evaluator", default=EVALUATOR, help="independent evaluation classifier (never a scorer)")
    _add_model_arguments(parser)


def solver_spec(args: argparse.Namespace) -> Any:
    """The :class:`~ensemble.contracts.SolverSpec` of parsed flags."""
    from ensemble.contracts import SolverSpec

    settings = {"unet": args.unet, "clip": args.clip, "classifier": args.classifier, "device": args.device,
                "threads": args.threads, **_settings(args).to_dict()}
    return SolverSpec("image", {"evaluator": args.evaluator, "device": args.device}, settings)


# ---------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train image-models``."""
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--models", default="classifier,eval_classifier,clip,unet",
                        help="comma-separated: unet, classifier, eval_classifier, clip")
    parser.add_argument("--unet-steps", type=int, default=1500)
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument("--clip-steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=64)


def train(args: argparse.Namespace) -> int:
    """Train the image models and save them as project checkpoints."""
    import torch

    from ensemble.tasks.image.models import ImageTrainConfig, train_image_models

    torch.set_num_threads(getattr(args, "threads", 1))
    cfg = ImageTrainConfig(unet_steps=args.unet_steps, classifier_steps=args.classifier_steps,
                           clip_steps=args.clip_steps, batch_size=args.batch_size, seed=getattr(args, "seed", 0))
    report = train_image_models(cfg, [m.strip() for m in args.models.split(",") if m.strip()],
                                log=lambda msg: print(msg, flush=True))
    for role, r in report.items():
        quality = {k: v for k, v in r.items() if k in ("test_accuracy", "zero_shot_accuracy", "final_loss")}
        print(f"{role}: {r['path']} {quality} ({r['steps']} steps, {r['seconds']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ensemble.tasks.image.cli run|train …`` (same flags as the ``ensemble`` subcommands)."""
    parser = argparse.ArgumentParser(prog="image")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run"))
    add_train_arguments(sub.add_parser("train"))
    args = parser.parse_args(argv)
    return {"run": run, "train": train}[args.command](args)


TRAIN_TARGETS = {
    "image-models": ("small UNet, CLIP and classifiers on the easy-vqa shapes (~10 min on CPU)", add_train_arguments, train),
}
"""``ensemble train`` targets of this task: name → (help, add_arguments, run)."""


if __name__ == "__main__":
    raise SystemExit(main())

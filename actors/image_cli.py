"""Command-line layer of the image task: ``ensemble run image``, ``ensemble eval image``, ``ensemble train image-models``.

``run`` samples a grid of images for one prompt and prints every scorer's energy at every denoising
step. ``eval`` compares, on the same seeded class labels and the same initial noise: the diffusion
model alone, + CLIP, + classifier, + classifier-free guidance, and all three; each finished image is
appended to a resumable JSONL results file; it ends with a Markdown table of the independent
classifier's accuracy and the FID-/KID-/IS-like distribution metrics. ``train`` trains the four small
models on the ``easy-vqa`` shapes (minutes on a CPU).
"""

from __future__ import annotations

import argparse
import base64
import time
from pathlib import Path
from typing import Any

from actors.table import markdown_table

DEFAULT_MODELS = {
    "unet": "image/shapes-unet",
    "clip": "image/shapes-clip",
    "classifier": "image/shapes-classifier",
    "evaluator": "image/shapes-eval-classifier",
}


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
    from ensemble.tasks.image import SamplerSettings

    return SamplerSettings(steps=args.steps, guidance_scale=args.guidance_scale, cfg_scale=args.cfg_scale,
                           clip_scale=args.clip_scale, n_samples=n_samples, guide=args.guide,
                           eta=args.eta, clip_weight=args.clip_weight, classifier_weight=args.classifier_weight)


def _configs(spec: str | None) -> list[Any]:
    from ensemble.tasks.image import STANDARD_CONFIGS

    names = [n.strip() for n in spec.split(",")] if spec else list(STANDARD_CONFIGS)
    unknown = [n for n in names if n not in STANDARD_CONFIGS]
    if unknown:
        raise ValueError(f"unknown configs {unknown}; valid: {', '.join(STANDARD_CONFIGS)}")
    return [STANDARD_CONFIGS[n] for n in names]


def _load_shared(args: argparse.Namespace, settings: Any):
    from ensemble.models import load_diffusion
    from ensemble.tasks.image import build_scorers

    diffusion = load_diffusion(args.unet, device=args.device)
    return diffusion, build_scorers(args.clip, args.classifier, settings, device=args.device)


# ------------------------------------------------------------------------------------------------ run
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
    from ensemble.data.shapes import class_index
    from ensemble.tasks.image import build_system

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


# ----------------------------------------------------------------------------------------------- eval
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval image``."""
    parser.add_argument("--n", type=int, default=100, help="seeded class labels (one image each)")
    parser.add_argument("--seed", type=int, default=0, help="label order and initial noise")
    parser.add_argument("--split", default="test", choices=("test", "train"), help="label-sampling split (tune on train)")
    parser.add_argument("--configs", default=None, help="comma-separated rows (default: alone,clip,cls,cfg,all)")
    parser.add_argument("--evaluator", default=DEFAULT_MODELS["evaluator"], help="independent evaluation classifier")
    parser.add_argument("--results", default="results/image_eval.jsonl", help="resumable results file")
    parser.add_argument("--table", default=None, help="also write the Markdown table here")
    parser.add_argument("--no-progress", action="store_true")
    _add_model_arguments(parser)


def evaluate(args: argparse.Namespace) -> int:
    """Generate one image per (item, system) with paired seeds; append rows; print the table."""
    import torch
    from tqdm import tqdm

    from ensemble.config import ConsensusConfig
    from ensemble.consensus import run_consensus
    from ensemble.registry import TASKS
    from ensemble.results import ResultsFile, config_hash
    from ensemble.tasks.image import build_system

    torch.set_num_threads(args.threads)
    configs = _configs(args.configs)
    settings = _settings(args)
    task = TASKS.make("image", evaluator=args.evaluator, device=args.device)
    items = task.items(args.n, seed=args.seed, split=args.split)
    results = ResultsFile(args.results)
    models = {"unet": args.unet, "clip": args.clip, "classifier": args.classifier}
    shared = None
    hashes = {}
    for config in configs:
        chash = config_hash({"task": task.spec(), "config": config.__dict__, "settings": settings.to_dict(), **models})
        hashes[config.name] = chash
        todo = [(i, it) for i, it in enumerate(items)
                if results.key_of({"item_id": it.id, "config_hash": chash, "seed": args.seed}) not in results]
        if not todo:
            continue
        shared = shared or _load_shared(args, settings)
        generator, ensemble = build_system(config, *shared, settings, device=args.device)
        for index, item in tqdm(todo, desc=config.name, disable=args.no_progress):
            t0 = time.perf_counter()
            # Paired seeds: every system starts item i from the same noise.
            res = run_consensus(generator, ensemble, item.context, ConsensusConfig(seed=args.seed * 100_003 + index))
            image = task.answer(res.output, item)
            last = res.rounds[-1]
            results.append({
                "item_id": item.id, "config_hash": chash, "seed": args.seed, "config": config.name,
                "label": item.target, "accuracy": task.metric(image, item),
                "energy": dict(last.scorer_mean_energy), "image": encode_image(image[0]),
                "seconds": time.perf_counter() - t0, **settings.to_dict(), **models,
            })
    table = results_table(task, results.rows(), hashes, {i.id for i in items}, args.seed)
    title = (f"Shapes (easy-vqa) class-conditional generation, {len(items)} labels ({args.split}), seed {args.seed}, "
             f"{settings.steps} DDIM steps, s = {settings.guidance_scale}, w = {settings.cfg_scale}")
    print(f"\n{title}\n\n{table}")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(f"{title}\n\n{table}\n")
    return 0


def encode_image(image: Any) -> dict[str, Any]:
    """``[3, S, S]`` in ``[-1, 1]`` → ``{"shape", "uint8_b64"}`` (JSON-ready, lossless at 8 bits)."""
    data = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return {"shape": list(data.shape), "uint8_b64": base64.b64encode(data.numpy().tobytes()).decode()}


def decode_image(blob: dict[str, Any]) -> Any:
    """Inverse of :func:`encode_image`: a float tensor in ``[-1, 1]``."""
    import numpy as np
    import torch

    raw = np.frombuffer(base64.b64decode(blob["uint8_b64"]), dtype=np.uint8).reshape(blob["shape"])
    return torch.from_numpy(raw.copy()).float() / 127.5 - 1.0


def results_table(task: Any, rows: list[dict[str, Any]], hashes: dict[str, str], ids: set[str], seed: int) -> str:
    """One Markdown row per system (name → its config hash): accuracy, FID-/KID-/IS-like, energies, seconds."""
    import torch

    labels_names = {"alone": "diffusion alone", "clip": "+ CLIP", "cls": "+ classifier",
                    "cfg": "+ classifier-free guidance", "all": "+ CLIP + classifier + CFG"}
    out = []
    for name, chash in hashes.items():
        mine = [r for r in rows if r["config_hash"] == chash and r["item_id"] in ids and r["seed"] == seed]
        if len(mine) < 2:
            continue
        images = torch.stack([decode_image(r["image"]) for r in mine])
        m = task.set_metrics(images, [r["label"] for r in mine])
        n = len(mine)
        out.append([labels_names.get(name, name), n, f"{100 * m['accuracy']:.1f} %", m["fid"], m["kid"], m["is"],
                    sum(r["energy"].get("clip", float("nan")) for r in mine) / n,
                    sum(r["energy"].get("classifier", float("nan")) for r in mine) / n,
                    sum(r["seconds"] for r in mine) / n])
    return markdown_table(["system", "images", "eval-classifier accuracy ↑", "FID-like ↓", "KID-like ×100 ↓",
                           "IS-like ↑", "CLIP energy ↓", "classifier energy ↓", "s / image"], out)


# ---------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train image-models`` (``--seed`` and ``--threads`` come from the train command)."""
    parser.add_argument("--models", default="classifier,eval_classifier,clip,unet",
                        help="comma-separated: unet, classifier, eval_classifier, clip")
    parser.add_argument("--unet-steps", type=int, default=1500)
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument("--clip-steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=64)


def train(args: argparse.Namespace) -> int:
    """Train the image models and save them as project checkpoints."""
    import torch

    from ensemble.image_models import ImageTrainConfig, train_image_models

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
    """``python -m actors.image_cli run|eval|train …`` (same flags as the ``ensemble`` subcommands)."""
    parser = argparse.ArgumentParser(prog="image")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run"))
    add_eval_arguments(sub.add_parser("eval"))
    tp = sub.add_parser("train")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--threads", type=int, default=1)
    add_train_arguments(tp)
    args = parser.parse_args(argv)
    return {"run": run, "eval": evaluate, "train": train}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["add_eval_arguments", "add_run_arguments", "add_train_arguments", "evaluate", "run", "train"]

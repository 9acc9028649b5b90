"""Segmenters side by side on the same held-out renders: IoU per class (``ensemble bench robot-segmenter``).

Renders ``--heldout-scenes`` scenes of the held-out seeds (3,000,000+, disjoint from training and from
every evaluation seed) twice: with the plain scene generator (the renders every checkpoint's
``training.json`` reports on) and with the hard-scene options (same-colour pairs, rim releases that
topple objects; :data:`~ensemble.tasks.robot.segmenter_train.HARD_SCENES`). Every model in ``--models``
(a SegFormer checkpoint name or directory, or ``colour`` for the hue rules) labels the same images; the
table gives IoU per class with the argmax over all classes and over background + the scene's objects
(as the view scorers use a segmenter), and the mean over the object classes.

    ensemble bench robot-segmenter --models /path/to/old,robot/segformer-tabletop-hard
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ensemble.tasks.robot.segformer import CHECKPOINT

HELP = "segmenters' IoU per class on the same held-out renders (plain and hard scenes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble bench robot-segmenter``."""
    parser.add_argument("--models", default=CHECKPOINT,
                        help="comma-separated SegFormer checkpoint names or directories, or 'colour'")
    parser.add_argument("--heldout-scenes", type=int, default=150, help="held-out scenes per set (x4 cameras)")


def iou_from_labels(pred: np.ndarray, true: np.ndarray, classes: int) -> list[float]:
    """IoU of every class between two ``(N, H, W)`` label arrays (NaN where a class appears in neither)."""
    out = []
    for c in range(classes):
        p, t = pred == c, true == c
        union = (p | t).sum()
        out.append(float((p & t).sum() / union) if union else float("nan"))
    return out


def colour_labels(images: np.ndarray, names: list[list[str]]) -> np.ndarray:
    """``(N, H, W)`` class labels of the colour segmenter, each image restricted to its scene's objects."""
    from ensemble.tasks.robot.segformer import CLASSES
    from ensemble.tasks.robot.segmenters import ColourSegmenter
    from ensemble.tasks.robot.world_model import Outcome

    seg, views = ColourSegmenter(), len(images) // len(names)
    out = np.zeros(images.shape[:3], dtype=np.int64)
    for i, image in enumerate(images):
        masks = seg.segment(Outcome(views={"c": image}, object_names=names[i // views]), "c")
        for name, mask in masks.items():
            out[i][mask] = CLASSES.index(name)
    return out


def segformer_labels(model_name: str, images: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """``(N, H, W)`` class labels of a SegFormer checkpoint (argmax over ``allowed`` classes per image)."""
    import torch

    from ensemble.tasks.robot.segformer import SegformerSegmenter, to_pixels, upsampled_logits

    model = SegformerSegmenter(model_name).load()
    out = []
    with torch.no_grad():
        for s in range(0, len(images), 64):
            logits = upsampled_logits(model, to_pixels(images[s : s + 64]))
            if allowed is not None:
                logits = logits.masked_fill(~torch.from_numpy(allowed[s : s + 64])[:, :, None, None], float("-inf"))
            out.append(logits.argmax(1).numpy())
    return np.concatenate(out)


def run(args: argparse.Namespace) -> int:
    """Render both held-out sets, label them with every model, print one Markdown table per set."""
    import torch

    from ensemble.eval.table import markdown_table
    from ensemble.tasks.robot.segformer import CLASSES, preload
    from ensemble.tasks.robot.segmenter_train import HARD_SCENES, HELDOUT_SEED_BASE, scene_classes
    from ensemble.tasks.robot.training_scenes import PLAIN, render_scenes

    torch.set_num_threads(1)
    preload()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for label, options in (("plain scenes", PLAIN), ("hard scenes", HARD_SCENES)):
        images, labels, names, tilted = render_scenes(args.heldout_scenes, HELDOUT_SEED_BASE, options=options)
        allowed = scene_classes(names)
        rows: list[list[Any]] = []
        for model in models:
            variants = [("scene's objects", None)] if model == "colour" else [("all classes", None), ("scene's objects", allowed)]
            for argmax, mask in variants:
                pred = colour_labels(images, names) if model == "colour" else segformer_labels(model, images, mask)
                ious = iou_from_labels(pred, labels, len(CLASSES))
                rows.append([model, argmax, *(f"{v:.3f}" for v in ious), f"{np.nanmean(ious[1:]):.3f}"])
        pairs = sum(len({n.split()[0] for n in s}) < 4 for s in names)
        print(f"\n{label}: {len(images)} images of {len(names)} held-out scenes ({pairs} with a same-colour pair, "
              f"{sum(t > 0 for t in tilted)} with a toppled object)\n")
        print(markdown_table(["model", "argmax over", *CLASSES, "mIoU (objects)"], rows))
    return 0

"""Training the RGB segmenter on tabletop renders labelled by the simulator (``ensemble train robot-segmenter``).

1. Render a data set: random scenes of the environment (train-only scene seeds), 0–3 random
   pick-and-place moves each (half of them onto another object, so stacks and occlusions occur),
   random lighting (ambient, diffuse, sun direction), every camera; labels are the simulator's
   segmentation render mapped to object-name classes (:data:`~ensemble.tasks.robot.segformer.CLASSES`).
2. Train a SegFormer built from :func:`~ensemble.tasks.robot.segformer.segformer_config` with a
   class-weighted cross-entropy (background is most pixels).
3. Measure IoU per class on held-out renders (scenes of other seeds), save the model and its training
   record as the project checkpoint :data:`~ensemble.tasks.robot.segformer.CHECKPOINT`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble.tasks.robot.segformer import CHECKPOINT, CLASSES, segformer_config, to_pixels, upsampled_logits

TRAIN_SEED_BASE, HELDOUT_SEED_BASE = 2_000_000, 3_000_000
"""Scene seeds of the segmenter's training and held-out renders (disjoint from every evaluation seed)."""
ALL_CAMERAS = ("front", "left", "right", "top")


@dataclass
class SegmenterTrainConfig:
    """Settings of ``ensemble train robot-segmenter``.

    Attributes:
        scenes: training scenes rendered (each seen by every camera).
        heldout_scenes: held-out scenes for the IoU report.
        steps: optimiser steps.
        batch_size: images per step.
        lr: peak learning rate (linear warm-up, cosine decay).
        size: model size of :func:`~ensemble.tasks.robot.segformer.segformer_config`.
        background_weight: cross-entropy weight of the background class (objects weigh 1).
        resolution: render size in pixels (the view scorers' renders are 64 px).
        env_id: gymnasium id of the environment.
        seed: training seed.
        name: project checkpoint name to save as.
        overwrite: replace an existing checkpoint.
    """

    scenes: int = 1500
    heldout_scenes: int = 150
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    size: str = "small"
    background_weight: float = 0.3
    resolution: int = 64
    env_id: str = "envs:Tabletop-Relations-v0"
    seed: int = 0
    name: str = CHECKPOINT
    overwrite: bool = True

    def __post_init__(self) -> None:
        if min(self.scenes, self.heldout_scenes, self.steps, self.batch_size) < 1:
            raise ValueError("scenes, heldout_scenes, steps and batch_size must be at least 1")
        if self.resolution < 16:
            raise ValueError(f"resolution={self.resolution} must be at least 16 pixels")


def render_dataset(n_scenes: int, seed_base: int, env_id: str = "envs:Tabletop-Relations-v0",
                   resolution: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random scenes seen by every camera under random lighting.

    Returns:
        ``(images, labels)``: ``(n_scenes · 4, H, W, 3)`` uint8 renders and ``(n_scenes · 4, H, W)`` uint8
        class indices into :data:`CLASSES`.
    """
    from tqdm import tqdm

    from ensemble.tasks.robot.world_model import SimulatorWorldModel

    wm = SimulatorWorldModel(env_id, cameras=ALL_CAMERAS, width=resolution, height=resolution)
    images, labels = [], []
    try:
        for i in tqdm(range(n_scenes), desc="render scenes", disable=not progress):
            rng = np.random.default_rng(seed_base + i)
            info = wm.reset(seed_base + i)
            names = [n.lower() for n in info["object_names"]]
            for _ in range(int(rng.integers(0, 4))):
                obj = int(rng.integers(len(names)))
                if rng.random() < 0.5:  # onto another object (the labeller may read the simulator)
                    other = (obj + int(rng.integers(1, len(names)))) % len(names)
                    xy = np.asarray(wm.info()["centres"])[other, :2] + 0.01 * rng.standard_normal(2)
                else:
                    xy = rng.uniform((-0.3, -0.2), (0.3, 0.2))
                wm.step(np.array([obj, *xy], dtype=np.float32))
            wm.env.set_lighting(ambient=float(rng.uniform(0.4, 1.6)), diffuse=float(rng.uniform(0.4, 1.6)),
                                direction=(*rng.uniform(-0.6, 0.6, 2), -1.0))
            views, segs = wm.render_views(), wm.segment()
            lut = np.array([CLASSES.index(n) for n in names] + [0], dtype=np.uint8)  # index -1 → background
            for camera in ALL_CAMERAS:
                images.append(views[camera])
                labels.append(lut[segs[camera]])
        wm.env.set_lighting()
    finally:
        wm.close()
    return np.stack(images), np.stack(labels)


def iou_per_class(model: Any, images: np.ndarray, labels: np.ndarray, batch: int = 64) -> dict[str, float]:
    """Intersection over union per class over a data set (argmax over all classes); NaN for absent classes."""
    import torch

    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    model.eval()
    with torch.no_grad():
        for s in range(0, len(images), batch):
            pred = upsampled_logits(model, to_pixels(images[s : s + batch])).argmax(1).numpy()
            true = labels[s : s + batch]
            for c in range(len(CLASSES)):
                p, t = pred == c, true == c
                inter[c] += (p & t).sum()
                union[c] += (p | t).sum()
    return {c: float(inter[i] / union[i]) if union[i] else float("nan") for i, c in enumerate(CLASSES)}


def build_segformer(size: str = "small", seed: int = 0) -> Any:
    """A freshly initialised SegFormer of :func:`segformer_config`."""
    import torch
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(segformer_config(size))


def fit(model: Any, images: np.ndarray, labels: np.ndarray, cfg: SegmenterTrainConfig, progress: bool = True) -> list[float]:
    """Train ``model`` in place; returns the loss of every step."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.seed)
    weight = torch.ones(len(CLASSES))
    weight[0] = cfg.background_weight
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 10)  # linear warm-up, then cosine decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / cfg.steps))))
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc=f"train {cfg.name}", disable=not progress)
    for _ in bar:
        idx = rng.choice(len(images), size=min(cfg.batch_size, len(images)), replace=False)
        x, y = images[idx], labels[idx]
        if rng.random() < 0.5:  # mirror images: objects and their masks only change sides
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        logits = upsampled_logits(model, to_pixels(x))
        loss = F.cross_entropy(logits, torch.from_numpy(np.ascontiguousarray(y)).long(), weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def train_segmenter(cfg: SegmenterTrainConfig, log=print) -> dict[str, Any]:
    """Render, train, measure held-out IoU, save as the project checkpoint ``cfg.name``; returns the record."""
    from ensemble.models import save_project_checkpoint

    t0 = time.perf_counter()
    model = build_segformer(cfg.size, cfg.seed)  # before any renderer exists (see segformer.preload)
    # 1. Data: training scenes and held-out scenes of disjoint seeds.
    images, labels = render_dataset(cfg.scenes, TRAIN_SEED_BASE, cfg.env_id, cfg.resolution, progress=True)
    held_x, held_y = render_dataset(cfg.heldout_scenes, HELDOUT_SEED_BASE, cfg.env_id, cfg.resolution, progress=True)
    t_data = time.perf_counter() - t0
    log(f"rendered {len(images)} training and {len(held_x)} held-out images in {t_data:.0f} s")
    # 2. Train.
    losses = fit(model, images, labels, cfg)
    # 3. Held-out IoU per class, then save.
    ious = iou_per_class(model, held_x, held_y)
    objects = [v for c, v in ious.items() if c != "background" and not np.isnan(v)]
    record = {"config": asdict(cfg), "heldout_iou": ious, "heldout_miou_objects": float(np.mean(objects)),
              "heldout_miou_all": float(np.nanmean(list(ious.values()))), "final_loss": float(np.mean(losses[-50:])),
              "render_seconds": t_data, "seconds": time.perf_counter() - t0,
              "parameters": int(sum(p.numel() for p in model.parameters()))}

    def save(out: Path) -> None:
        model.save_pretrained(out)
        (out / "training.json").write_text(json.dumps(record, indent=2))

    record["path"] = str(save_project_checkpoint(cfg.name, save, overwrite=cfg.overwrite))
    return record

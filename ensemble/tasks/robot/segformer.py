"""A learned RGB segmenter: a small SegFormer trained here on tabletop renders (``ensemble train robot-segmenter``).

The model is a ``transformers`` :class:`~transformers.SegformerForSemanticSegmentation` built from a
config (:func:`segformer_config`), one class per object name (colour × kind) plus background, trained on
frames rendered by the tabletop environment with the simulator's segmentation as labels
(:mod:`ensemble.tasks.robot.segmenter_train`). It is saved as the project checkpoint
:data:`CHECKPOINT` and found by name like any other model; :class:`SegformerSegmenter` is the default
segmenter of the view scorers.

At inference the per-pixel argmax is taken over background and the scene's own objects only (the robot
knows which objects it was asked to arrange), and all candidates of a round are segmented in one batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ensemble.tasks.robot.segmenters import OBJECT_COLOURS, Segmenter
from ensemble.tasks.robot.world_model import Outcome

CHECKPOINT = "robot/segformer-tabletop-6k"
"""Project checkpoint name of the trained segmenter (6,000 steps; the earlier ``robot/segformer-tabletop`` had
2,000 and confused same-colour mugs and bowls: README, issue 15)."""

KIND_WORDS = ("bowl", "mug")
CLASSES: tuple[str, ...] = ("background", *(f"{c} {k}" for c in OBJECT_COLOURS for k in KIND_WORDS))
"""Class 0 is background; class ``i`` > 0 is an object name."""


def preload() -> None:
    """Import the SegFormer code now, before any MuJoCo renderer exists in this process.

    Mesa's software EGL (MuJoCo's headless renderer) and triton (imported by ``transformers``/``torch``
    on first use of the model code) each load LLVM; importing triton after an EGL context exists
    segfaults, importing it first is safe. The solver and the trainer call this before rendering.
    """
    from transformers import SegformerForSemanticSegmentation  # noqa: F401


def segformer_config(size: str = "small", num_labels: int = len(CLASSES)) -> Any:
    """A SegFormer config for 64-px renders: three stages at strides 2, 4, 8; logits at half resolution.

    Args:
        size: ``"small"`` (the trained default, ~72 k parameters) or ``"tiny"`` (tests).
        num_labels: classes, background included.
    """
    from transformers import SegformerConfig

    if size not in ("small", "tiny"):
        raise ValueError(f"size={size!r} is not one of small, tiny")
    hidden = [12, 24, 48] if size == "small" else [4, 8, 8]
    return SegformerConfig(
        num_channels=3, num_encoder_blocks=3, depths=[1, 1, 1], sr_ratios=[8, 4, 2], hidden_sizes=hidden,
        patch_sizes=[3, 3, 3], strides=[2, 2, 2], num_attention_heads=[1, 1, 2], mlp_ratios=[2, 2, 2],
        decoder_hidden_size=24 if size == "small" else 8, num_labels=num_labels,
        id2label=dict(enumerate(CLASSES[:num_labels])), label2id={c: i for i, c in enumerate(CLASSES[:num_labels])},
    )


def to_pixels(images: np.ndarray) -> Any:
    """``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` float tensor in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def upsampled_logits(model: Any, pixels: Any) -> Any:
    """``(B, C, H, W)`` class logits at the input resolution (SegFormer predicts at half of it)."""
    import torch.nn.functional as F

    logits = model(pixel_values=pixels).logits
    return F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


def find_segmenter_checkpoint(name_or_dir: str | Path) -> Path:
    """The directory of a trained segmenter: a local directory, else the project checkpoint of that name.

    Raises:
        FileNotFoundError: nothing found; the message says how to train it.
    """
    from ensemble.models import find_project_checkpoint, project_checkpoint_dir

    local = Path(name_or_dir).expanduser()
    if local.is_dir() and (local / "config.json").is_file():
        return local
    found = find_project_checkpoint(str(name_or_dir))
    if found is None:
        try:
            where = f"looked in {local} and {project_checkpoint_dir(str(name_or_dir))}"
        except ValueError:  # an absolute path: not a checkpoint name
            where = f"{local} holds no config.json"
        raise FileNotFoundError(
            f"no segmenter checkpoint {str(name_or_dir)!r} ({where}); "
            "train it with `ensemble train robot-segmenter` (about 40 minutes on one CPU thread) or pass "
            "a directory written by it"
        )
    return found


class SegformerSegmenter(Segmenter):
    """Object masks from RGB by the trained SegFormer.

    Args:
        model: project checkpoint name (default :data:`CHECKPOINT`), a checkpoint directory, or ``"tiny"``
            (an untrained tiny model built from its config, seed 0: tests).
        module: an already built model (tests, training); overrides ``model``.
    """

    def __init__(self, model: str | Path = CHECKPOINT, module: Any = None) -> None:
        self.model_name = str(model)
        self._model = module
        preload()

    def load(self) -> Any:
        """Load the model on first use (raises with how to train it when the checkpoint is missing)."""
        if self._model is None:
            import torch
            from transformers import SegformerForSemanticSegmentation

            if self.model_name == "tiny":
                torch.manual_seed(0)
                self._model = SegformerForSemanticSegmentation(segformer_config("tiny")).eval()
            else:
                path = find_segmenter_checkpoint(self.model_name)
                self._model = SegformerForSemanticSegmentation.from_pretrained(path).eval()
        return self._model

    def labels(self, images: np.ndarray, allowed: list[str] | None = None) -> np.ndarray:
        """``(B, H, W)`` int class per pixel of ``(B, H, W, 3)`` uint8 images; ``allowed``: object names
        that may be predicted (others never are)."""
        import torch

        model = self.load()
        with torch.no_grad():
            logits = upsampled_logits(model, to_pixels(images))
        if allowed is not None:
            keep = torch.zeros(logits.shape[1], dtype=torch.bool)
            keep[0] = True
            keep[[CLASSES.index(n) for n in allowed if n in CLASSES]] = True
            logits[:, ~keep] = -torch.inf
        return logits.argmax(1).numpy()

    def segment(self, outcome: Outcome, camera: str) -> dict[str, np.ndarray]:
        """Masks of the scene's objects in ``camera``'s RGB view."""
        return self.segment_many([outcome], camera)[0]

    def segment_many(self, outcomes: list[Outcome], camera: str) -> list[dict[str, np.ndarray]]:
        """One batched forward pass over every outcome's view of ``camera``."""
        if not outcomes:
            return []
        missing = [o for o in outcomes if camera not in o.views]
        if missing:
            raise ValueError(f"no RGB view for camera {camera!r} (have {sorted(missing[0].views)}); roll out with render='rgb'")
        if any(o.object_names != outcomes[0].object_names for o in outcomes):
            return [self.segment_many([o], camera)[0] for o in outcomes]
        names = [n.lower() for n in outcomes[0].object_names]
        labels = self.labels(np.stack([o.views[camera] for o in outcomes]), names)
        return [{n: lab == CLASSES.index(n) for n in names if n in CLASSES} for lab in labels]

"""Segmenters: find each named object's pixels in one camera image.

A :class:`Segmenter` maps one view of an :class:`~ensemble.tasks.robot.world_model.Outcome` to ``{object name:
(H, W) bool mask}``. Offline defaults:

* :class:`SimulatorSegmenter` reads the simulator's segmentation render (exact; only in simulation);
* :class:`ColourSegmenter` works from RGB alone: the object colours are known, pixels are classified
  by hue and saturation, and when a colour is shared by a mug and a bowl their connected components
  are told apart by shape (a bowl is wide and flat, a mug narrow and tall);
* :class:`PretrainedSegmenter` is the slot for real cameras: a Hugging Face universal-segmentation
  model (e.g. Mask2Former) found by name through :func:`ensemble.models.resolve`, whose instance masks
  are named by their mean colour. Offline, without the weights, it fails with the resolver's message.
"""

from __future__ import annotations

import colorsys
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ensemble.tasks.robot.world_model import Outcome

OBJECT_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.12, 0.65, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.8, 0.1),
}
"""Known RGB colours of the objects (the tabletop scene's palette)."""

SEGMENTERS = ("learned", "simulator", "colour")
"""Named segmenters: the trained SegFormer (RGB, the default), the simulator's render (upper bound), colour rules (RGB)."""
RGB_SEGMENTERS = ("learned", "colour")
"""Segmenters that read RGB views (rollouts must render ``"rgb"``)."""


class Segmenter(ABC):
    """Finds the named objects' pixels in one camera view."""

    @abstractmethod
    def segment(self, outcome: Outcome, camera: str) -> dict[str, np.ndarray]:
        """``{object name: (H, W) bool mask}`` for the objects visible in ``camera``'s view."""

    def segment_many(self, outcomes: list[Outcome], camera: str) -> list[dict[str, np.ndarray]]:
        """:meth:`segment` of every outcome (learned segmenters batch this)."""
        return [self.segment(o, camera) for o in outcomes]


class SimulatorSegmenter(Segmenter):
    """The simulator's own segmentation render (``Outcome.segmentation``)."""

    def segment(self, outcome: Outcome, camera: str) -> dict[str, np.ndarray]:
        """One mask per object index present in the view."""
        if camera not in outcome.segmentation:
            raise ValueError(
                f"no segmentation render for camera {camera!r} (have {sorted(outcome.segmentation)}); "
                "roll out with render='segmentation' or use the colour segmenter"
            )
        seg = outcome.segmentation[camera]
        return {name: seg == i for i, name in enumerate(outcome.object_names)}


def _hues() -> dict[str, float]:
    return {c: colorsys.rgb_to_hsv(*rgb)[0] for c, rgb in OBJECT_COLOURS.items()}


class ColourSegmenter(Segmenter):
    """RGB only: known object colours by hue, mugs vs bowls by component shape.

    Args:
        min_saturation: pixels less saturated than this are background (table, floor, sky).
        min_value: pixels darker than this are background (shadows, table legs).
        max_hue_distance: pixels whose hue is farther than this (in turns) from every object colour are
            background.
    """

    def __init__(self, min_saturation: float = 0.55, min_value: float = 0.25, max_hue_distance: float = 0.06) -> None:
        self.min_saturation, self.min_value, self.max_hue_distance = min_saturation, min_value, max_hue_distance
        self.hues = _hues()

    def colour_masks(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """``{colour: (H, W) bool}`` from an (H, W, 3) uint8 image."""
        x = rgb.astype(np.float32) / 255.0
        mx, mn = x.max(-1), x.min(-1)
        sat = (mx - mn) / np.maximum(mx, 1e-6)
        hue = _hue(x, mx, mn)
        fg = (sat >= self.min_saturation) & (mx >= self.min_value)
        names = list(self.hues)
        dist = np.stack([np.abs((hue - self.hues[c] + 0.5) % 1.0 - 0.5) for c in names])
        nearest = dist.argmin(0)
        ok = fg & (dist.min(0) <= self.max_hue_distance)
        return {c: ok & (nearest == k) for k, c in enumerate(names)}

    def segment(self, outcome: Outcome, camera: str) -> dict[str, np.ndarray]:
        """Masks of the scene's objects (``outcome.object_names``) in ``camera``'s RGB view."""
        if camera not in outcome.views:
            raise ValueError(f"no RGB view for camera {camera!r} (have {sorted(outcome.views)}); roll out with render='rgb'")
        by_colour = self.colour_masks(outcome.views[camera])
        out: dict[str, np.ndarray] = {}
        for colour, mask in by_colour.items():
            names = [n for n in outcome.object_names if n.split()[0] == colour]
            if len(names) == 1:
                out[names[0]] = mask
            elif len(names) == 2:
                out.update(_split_kinds(mask, names))
        return out


def _hue(x: np.ndarray, mx: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Hue in turns [0, 1) of an (H, W, 3) float image."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    d = np.maximum(mx - mn, 1e-6)
    h = np.where(mx == r, ((g - b) / d) % 6.0, np.where(mx == g, (b - r) / d + 2.0, (r - g) / d + 4.0))
    return (h / 6.0) % 1.0


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask (small images: a plain flood fill)."""
    label = np.zeros(mask.shape, dtype=np.int32)
    comps: list[np.ndarray] = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if label[y0, x0]:
            continue
        k = len(comps) + 1
        stack, label[y0, x0] = [(y0, x0)], k
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not label[ny, nx]:
                    label[ny, nx] = k
                    stack.append((ny, nx))
        comps.append(label == k)
    return comps


def _flatness(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1) * np.sqrt(xs.size)


def _split_kinds(mask: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Split one colour's mask between its bowl and its mug: the flattest, largest component is the bowl."""
    bowl = next(n for n in names if n.endswith("bowl"))
    mug = next(n for n in names if n.endswith("mug"))
    comps = [c for c in _components(mask) if c.sum() >= 2]
    if not comps:
        return {}
    if len(comps) == 1:  # touching or one hidden: give it to the kind its shape suggests
        ys, xs = np.nonzero(comps[0])
        flat = (xs.max() - xs.min() + 1) >= 1.3 * (ys.max() - ys.min() + 1)
        return {bowl if flat else mug: comps[0]}
    comps.sort(key=_flatness, reverse=True)
    rest = np.zeros_like(mask)
    for c in comps[1:]:
        rest |= c
    return {bowl: comps[0], mug: rest}


class PretrainedSegmenter(Segmenter):
    """A pre-trained universal-segmentation model (e.g. Mask2Former) for real camera images.

    The model is resolved by name through :func:`ensemble.models.resolve` (local directory, Hugging Face
    cache or hub) and loaded with ``transformers``; each predicted instance mask is named by the known
    object colour nearest its mean colour. Loading happens on first use, so building the segmenter is
    cheap; without the weights (offline) the first call raises the resolver's explanation.

    Args:
        model: e.g. ``"facebook/mask2former-swin-tiny-coco-instance"`` or a local directory.
        threshold: minimum instance confidence.
    """

    def __init__(self, model: str = "facebook/mask2former-swin-tiny-coco-instance", threshold: float = 0.5) -> None:
        self.model_name, self.threshold = model, threshold
        self._model: Any = None
        self._processor: Any = None
        self._colour = ColourSegmenter()

    def load(self) -> None:
        """Resolve and load the model (raises ``ModelNotFoundError`` offline without weights)."""
        if self._model is not None:
            return
        from ensemble.models import resolve

        path = resolve(self.model_name).path  # first: offline without weights, fail before heavy imports
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        self._processor = AutoImageProcessor.from_pretrained(path)
        self._model = AutoModelForUniversalSegmentation.from_pretrained(path).eval()

    def segment(self, outcome: Outcome, camera: str) -> dict[str, np.ndarray]:
        """Instance masks named by colour (and by shape when a colour is shared)."""
        import torch

        self.load()
        rgb = outcome.views[camera]
        inputs = self._processor(images=rgb, return_tensors="pt")
        with torch.no_grad():
            raw = self._model(**inputs)
        result = self._processor.post_process_instance_segmentation(
            raw, threshold=self.threshold, target_sizes=[rgb.shape[:2]]
        )[0]
        seg = result["segmentation"].cpu().numpy()
        colour_of = self._colour.colour_masks(rgb)
        out: dict[str, np.ndarray] = {}
        for info in result["segments_info"]:
            mask = seg == info["id"]
            votes = {c: int((m & mask).sum()) for c, m in colour_of.items()}
            colour = max(votes, key=votes.get)
            if votes[colour] == 0:
                continue
            names = [n for n in outcome.object_names if n.split()[0] == colour]
            if len(names) == 1:
                out[names[0]] = out.get(names[0], np.zeros_like(mask)) | mask
            elif len(names) == 2:
                for name, m in _split_kinds(mask, names).items():
                    out[name] = out.get(name, np.zeros_like(mask)) | m
        return out


def make_segmenter(name: str | Segmenter) -> Segmenter:
    """``"learned"`` (the trained SegFormer), ``"simulator"``, ``"colour"``, a :class:`Segmenter`, a
    SegFormer checkpoint (``"segformer:<name or directory>"``), or a pre-trained model name / directory."""
    if isinstance(name, Segmenter):
        return name
    if name == "learned" or name.startswith("segformer:"):
        from ensemble.tasks.robot.segformer import CHECKPOINT, SegformerSegmenter

        return SegformerSegmenter(name.removeprefix("segformer:") if name != "learned" else CHECKPOINT)
    if name == "simulator":
        return SimulatorSegmenter()
    if name in ("colour", "color"):
        return ColourSegmenter()
    return PretrainedSegmenter(name)

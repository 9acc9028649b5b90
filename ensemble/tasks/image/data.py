"""Coloured shapes from the ``easy-vqa`` package: images labelled (colour, shape), for image generation.

``easy-vqa`` (MIT) ships 64×64 PNGs of one coloured circle, rectangle or triangle each, with questions
and answers about them (train 4,000 images, test 1,000). Each image's label is read from its Q&A pairs:
"what color is the shape?" / "what is the blue shape?" / "is there a red shape?" (yes) / "does the image
contain a circle?" (yes) …; negated questions ("does the image not contain …") are skipped. An image whose colour or shape is not pinned down is left out.

Classes are ``colour × shape`` (8 × 3 = 24), named ``"red circle"``; prompts are ``"a red circle"``.
Images are returned as float tensors in ``[-1, 1]``, downsampled (area averaging) to ``size``.
"""

from __future__ import annotations

import functools
from typing import Any

COLOURS: tuple[str, ...] = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
"""The 24 class names, ``"<colour> <shape>"``; the class index is the position here."""

SPLITS = ("train", "test")


def class_index(name: str) -> int:
    """Index of ``"red circle"`` (also accepts ``"a red circle"``)."""
    key = name.strip().lower().removeprefix("a ").strip()
    if key not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; classes are '<colour> <shape>' with colour in "
                         f"{', '.join(COLOURS)} and shape in {', '.join(SHAPES)}")
    return CLASS_NAMES.index(key)


def prompt(label: int) -> str:
    """The text prompt of class ``label``: ``"a red circle"``."""
    return f"a {CLASS_NAMES[label]}"


def labels_from_qa(questions: list[str], answers: list[str]) -> tuple[str | None, str | None]:
    """``(colour, shape)`` of one image from its question/answer pairs (``None`` where not determined).

    Open questions give the answer and name the other attribute ("what is the blue shape?" →
    rectangle, so blue); yes/no questions count when they affirm ("is there a red shape?" yes, "is
    there not a red shape?" no).
    """
    colour = shape = None
    for q, a in zip(questions, answers, strict=True):
        words = f" {q.lower().rstrip('?')} "
        a = a.lower()
        named_colour = next((c for c in COLOURS if f" {c} " in words), None)
        named_shape = next((s for s in SHAPES if f" {s} " in words), None)
        if a in COLOURS:
            colour, shape = a, named_shape or shape
        elif a in SHAPES:
            shape, colour = a, named_colour or colour
        elif a in ("yes", "no"):
            negated = " not " in words or " no " in words
            if (a == "yes") != negated:
                colour, shape = named_colour or colour, named_shape or shape
    return colour, shape


@functools.lru_cache(maxsize=4)
def _labelled_paths(split: str) -> tuple[tuple[str, int], ...]:
    import easy_vqa

    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {', '.join(SPLITS)}")
    questions, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    paths = getattr(easy_vqa, f"get_{split}_image_paths")()
    per_image: dict[int, tuple[list[str], list[str]]] = {}
    for q, a, i in zip(questions, answers, image_ids, strict=True):
        qs, ans = per_image.setdefault(int(i), ([], []))
        qs.append(q)
        ans.append(a)
    out = []
    for image_id in sorted(per_image):
        colour, shape = labels_from_qa(*per_image[image_id])
        if colour is not None and shape is not None:
            out.append((paths[image_id], CLASS_NAMES.index(f"{colour} {shape}")))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def load_shapes(split: str = "train", size: int = 16) -> tuple[Any, Any]:
    """All labelled images of a split.

    Args:
        split: ``"train"`` (tune and train here only) or ``"test"``.
        size: side of the returned images (64 = original; smaller sizes average 64/size pixel blocks).

    Returns:
        ``(images, labels)``: ``Tensor[N, 3, size, size]`` in ``[-1, 1]`` and ``LongTensor[N]``.
        Cached per (split, size); treat them as read-only.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if 64 % size:
        raise ValueError(f"size={size} must divide 64 (e.g. 16, 32 or 64)")
    rows = _labelled_paths(split)
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p, _ in rows])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if size != 64:
        images = F.avg_pool2d(images, 64 // size)
    labels = torch.tensor([label for _, label in rows], dtype=torch.long)
    return images.contiguous(), labels

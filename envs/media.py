"""Images for people: tile camera views side by side, write frame strips and GIFs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def tile_views(views: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Put (H, W, 3) uint8 images side by side with a ``gap`` pixel white border between them.

    Images of different heights are padded at the bottom to the tallest.
    """
    if not views:
        raise ValueError("tile_views needs at least one image")
    height = max(v.shape[0] for v in views)
    parts = []
    for k, view in enumerate(views):
        if view.ndim != 3 or view.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) images, got shape {view.shape} at position {k}")
        padded = np.full((height, view.shape[1], 3), 255, dtype=np.uint8)
        padded[: view.shape[0]] = view
        parts.append(padded)
        if gap and k < len(views) - 1:
            parts.append(np.full((height, gap, 3), 255, dtype=np.uint8))
    return np.concatenate(parts, axis=1)


def save_strip(
    frames: Sequence[np.ndarray], path: str | Path, vertical: bool | None = None, frame_seconds: float = 0.6
) -> Path:
    """Write frames as a PNG strip or, if ``path`` ends in ``.gif``, as an animated GIF.

    Args:
        frames: (H, W, 3) uint8 images, e.g. successive ``env.render()`` grids.
        path: output file; parent directories are created.
        vertical: stack a PNG strip top to bottom instead of left to right. ``None`` chooses top to
            bottom when the frames are wider than tall (multi-view grids), else left to right.
        frame_seconds: display time of each GIF frame.

    Returns:
        The path written.
    """
    from PIL import Image  # optional dependency, only needed here

    if not frames:
        raise ValueError("save_strip needs at least one frame")
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"all frames must have one shape, got {sorted(shapes)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=int(frame_seconds * 1000), loop=0
        )
        return path
    if vertical is None:
        vertical = frames[0].shape[1] > frames[0].shape[0]
    if vertical:
        gap = np.full((2, frames[0].shape[1], 3), 255, dtype=np.uint8)
        strip = np.concatenate([p for f in frames for p in (f, gap)][:-1], axis=0)
    else:
        strip = tile_views(frames)
    Image.fromarray(strip).save(path)
    return path

"""Pictures for people: frame strips, GIFs, PNG and GIF bytes for JSON responses."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def gif_bytes(frames: Sequence[np.ndarray], frame_seconds: float = 0.6) -> bytes:
    """(H, W, 3) uint8 frames of one shape as an animated GIF."""
    from PIL import Image

    if not frames:
        raise ValueError("gif_bytes needs at least one frame")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(frame_seconds * 1000), loop=0)
    return buf.getvalue()


def png_base64(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as base64 PNG text."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def tile_frames(frames: Sequence[np.ndarray], vertical: bool = False) -> np.ndarray:
    """Same-height (or, ``vertical``, same-width) uint8 images side by side with 2 px white gaps."""
    axis = 0 if vertical else 1
    shape = (2, frames[0].shape[1], 3) if vertical else (frames[0].shape[0], 2, 3)
    gap = np.full(shape, 255, dtype=np.uint8)
    return np.concatenate([p for f in frames for p in (f, gap)][:-1], axis=axis)


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
        path.write_bytes(gif_bytes(frames, frame_seconds))
        return path
    if vertical is None:
        vertical = frames[0].shape[1] > frames[0].shape[0]
    Image.fromarray(tile_frames(frames, vertical)).save(path)
    return path

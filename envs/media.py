"""Images for people: tile camera views side by side, write frame strips and GIFs."""

from __future__ import annotations

from collections.abc import Sequence

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

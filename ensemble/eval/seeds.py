"""The one per-item seed rule of every task and every engine."""

from __future__ import annotations

import zlib

from ensemble.contracts import Item

SEED_STRIDE = 100_003
"""Seeds of different evaluation seeds never overlap for fewer items than this."""


def run_seed(seed: int, item: Item) -> int:
    """The seed an item's run uses under evaluation seed ``seed``.

    ``seed · 100003 + index``, where ``index`` is the item's position in its task's item list
    (``item.meta["index"]``, set by every task's ``items``), else a stable hash of its id. Paired
    comparisons follow: every system starts item ``i`` from the same seed (e.g. the same initial noise).
    """
    index = item.meta.get("index")
    if index is None:
        index = zlib.crc32(str(item.id).encode()) % SEED_STRIDE
    return int(seed) * SEED_STRIDE + int(index)

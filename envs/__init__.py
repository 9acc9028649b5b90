"""Gymnasium environments of this project: tabletop manipulation seen by several cameras.

Importing this package registers the environments (string entry points, so MuJoCo is imported only
when one is made)::

    import gymnasium as gym
    import envs

    env = gym.make("Tabletop-Relations-v0")            # cameras front, left, top
    env = gym.make("Tabletop-Relations-1view-v0")      # front camera only

The classes and helpers are importable from here too, loaded on first use: ``TabletopRelationsEnv``,
``tile_views``, ``parse_goal``, ``format_goal``, ``Relation``, ``oracle_plan``.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register, registry

_ENTRY_POINT = "envs.tabletop:TabletopRelationsEnv"

ENV_IDS: dict[str, dict[str, Any]] = {
    "Tabletop-Relations-v0": {"cameras": ("front", "left", "top")},
    "Tabletop-Relations-1view-v0": {"cameras": ("front",)},
    "Tabletop-Relations-4view-v0": {"cameras": ("front", "left", "right", "top")},
}
"""Registered id -> constructor keyword arguments."""

for _env_id, _kwargs in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_ENTRY_POINT, kwargs=dict(_kwargs))

_LAZY = {
    "TabletopRelationsEnv": "envs.tabletop",
    "ALL_OBJECT_NAMES": "envs.tabletop",
    "tile_views": "envs.media",
    "Relation": "envs.relations",
    "RELATION_TYPES": "envs.relations",
    "parse_goal": "envs.relations",
    "format_goal": "envs.relations",
    "oracle_plan": "envs.oracle",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}; lazy names: {sorted(_LAZY)}")


__all__ = ["ENV_IDS", *_LAZY]

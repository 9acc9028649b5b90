"""Composing ensembles of pre-trained models via iterative consensus — the core library.

The core never imports ray, the Ray layer (``actors``) or the environments (``envs``). Heavy names are
loaded lazily, so ``import ensemble`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from ensemble.config import ConsensusConfig, EnsembleConfig
from ensemble.contracts import Generator, Item, Proposal, ScoreOutput, Scorer, Task
from ensemble.registry import GENERATORS, SCORERS, TASKS, Registry, UnknownComponentError

__version__ = "0.1.0"

_LAZY = {
    "ScorerEnsemble": "ensemble.aggregate",
    "Feedback": "ensemble.aggregate",
    "run_consensus": "ensemble.consensus",
    "arun_consensus": "ensemble.consensus",
    "ConsensusResult": "ensemble.consensus",
    "RoundRecord": "ensemble.consensus",
}

__all__ = [
    "GENERATORS", "SCORERS", "TASKS", "ConsensusConfig", "EnsembleConfig", "Generator", "Item",
    "Proposal", "Registry", "ScoreOutput", "Scorer", "Task", "UnknownComponentError", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ensemble' has no attribute {name!r}")


def _register_all() -> None:
    """Import the registration modules (they only record entry-point strings)."""
    import ensemble.generators  # noqa: F401
    import ensemble.scorers  # noqa: F401
    import ensemble.tasks  # noqa: F401


_register_all()

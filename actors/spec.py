"""Small picklable specs that cross process boundaries; components are built where they run.

A :class:`ComponentSpec` names a registered component (or a ``"module:Attr"`` entry point) with its
keyword arguments and a seed. It is a few bytes to send to an actor, which then calls
:meth:`ComponentSpec.build` on its own node, so a model is never pickled into an actor. A
:class:`RunSpec` is everything one consensus run needs: the generator, the named scorers, the ensemble
and consensus configs (and, for evaluation, the task).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ensemble.config import ConsensusConfig, EnsembleConfig
from ensemble.registry import GENERATORS, SCORERS, TASKS, Registry
from ensemble.results import config_hash

KINDS: dict[str, Registry] = {"scorer": SCORERS, "generator": GENERATORS, "task": TASKS}


@dataclass(frozen=True)
class ComponentSpec:
    """What to build, not the built thing.

    Attributes:
        kind: "scorer", "generator" or "task" (which registry ``name`` is looked up in).
        name: a registry name (e.g. "quadratic"), or an entry point ``"package.module:Attr"`` for
            components outside the registries (test doubles, user plug-ins).
        kwargs: keyword arguments of the component's constructor (must be picklable).
        seed: seeds torch before the component is built, so randomly initialised (tiny) models are
            identical in every process. Worker ``i`` of a pool gets ``seed + i``.
    """

    kind: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ComponentSpec kind={self.kind!r} is not one of {', '.join(KINDS)}")
        if ":" not in self.name:
            KINDS[self.kind].entry(self.name)  # raises with the valid names on a miss

    def build(self) -> Any:
        """Import and construct the component here (in this process), after seeding torch."""
        import torch

        torch.manual_seed(self.seed)
        if ":" in self.name:
            module_name, attr = self.name.split(":", 1)
            return getattr(importlib.import_module(module_name), attr)(**self.kwargs)
        return KINDS[self.kind].make(self.name, **self.kwargs)

    def for_worker(self, index: int) -> ComponentSpec:
        """The spec of worker ``index`` of a pool: same component, seed = base seed + index."""
        if index < 0:
            raise ValueError(f"worker index {index} must be >= 0")
        return replace(self, seed=self.seed + index)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for config hashes and logs)."""
        return {"kind": self.kind, "name": self.name, "kwargs": dict(self.kwargs), "seed": self.seed}


def scorer(name: str, seed: int = 0, **kwargs: Any) -> ComponentSpec:
    """Shorthand for ``ComponentSpec("scorer", name, kwargs, seed)``."""
    return ComponentSpec("scorer", name, kwargs, seed)


def generator(name: str, seed: int = 0, **kwargs: Any) -> ComponentSpec:
    """Shorthand for ``ComponentSpec("generator", name, kwargs, seed)``."""
    return ComponentSpec("generator", name, kwargs, seed)


def task(name: str, **kwargs: Any) -> ComponentSpec:
    """Shorthand for ``ComponentSpec("task", name, kwargs)``."""
    return ComponentSpec("task", name, kwargs)


@dataclass
class RunSpec:
    """One consensus configuration: generator + named scorers + configs (+ task for evaluation).

    Attributes:
        generator: the generator's spec.
        scorers: scorer name → spec, in ensemble order. Scorer ``i`` in this order is built with
            ``spec.for_worker(i)`` both in-process and on Ray, so both paths build identical models.
        ensemble: weights, normalisation, per-call timeout, ``min_scorers``.
        consensus: budget and stopping rule; ``consensus.seed`` is the base seed of the run.
        task: the evaluation task, when the run evaluates a dataset.
    """

    generator: ComponentSpec
    scorers: dict[str, ComponentSpec]
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    task: ComponentSpec | None = None

    def __post_init__(self) -> None:
        if self.generator.kind != "generator":
            raise ValueError(f"RunSpec.generator has kind {self.generator.kind!r}; expected 'generator'")
        if not self.scorers:
            raise ValueError("RunSpec.scorers is empty; a consensus run needs at least one scorer")
        wrong = [n for n, s in self.scorers.items() if s.kind != "scorer"]
        if wrong:
            raise ValueError(f"RunSpec.scorers {wrong} are not scorer specs")
        if self.task is not None and self.task.kind != "task":
            raise ValueError(f"RunSpec.task has kind {self.task.kind!r}; expected 'task'")

    def scorer_specs(self) -> dict[str, ComponentSpec]:
        """Scorer name → the spec each worker builds (seed = base seed + index in ensemble order)."""
        return {name: spec.for_worker(i) for i, (name, spec) in enumerate(self.scorers.items())}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the whole configuration."""
        return {
            "generator": self.generator.to_dict(),
            "scorers": {n: s.to_dict() for n, s in self.scorers.items()},
            "ensemble": asdict(self.ensemble),
            "consensus": self.consensus.to_dict(),
            "task": self.task.to_dict() if self.task else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Inverse of :meth:`to_dict` (e.g. a run spec read from JSON)."""
        return cls(
            generator=ComponentSpec(**data["generator"]),
            scorers={n: ComponentSpec(**s) for n, s in data["scorers"].items()},
            ensemble=EnsembleConfig(**data.get("ensemble", {})),
            consensus=ConsensusConfig(**data.get("consensus", {})),
            task=ComponentSpec(**data["task"]) if data.get("task") else None,
        )

    def config_hash(self) -> str:
        """Stable short hash of the configuration without the seed (results are keyed by seed apart)."""
        blob = self.to_dict()
        blob["consensus"] = {k: v for k, v in blob["consensus"].items() if k != "seed"}
        blob["ensemble"] = {k: v for k, v in blob["ensemble"].items() if k != "timeout_s"}  # operational only
        return config_hash(blob)

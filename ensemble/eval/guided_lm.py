"""The solver shape shared by the text tasks: one causal LM guided token by token by named scorers.

A system is ``"<base>@<beam>"`` (:mod:`ensemble.eval.beams`): the LM alone, one scorer, or the ensemble of
all. :class:`GuidedLMSolver` loads the LM and the scorers once where it runs, keeps the config hashes, and
decodes one item with a system (:meth:`GuidedLMSolver.decode`); a task's solver adds its scorers, its
context and its row (math: verifiers over the problem; video QA: CLIPs over the frames).

The spec a subclass is built with provides ``lm``, ``device``, ``threads``, ``weights``,
``normalisation``, ``bases()``, ``systems()`` and ``hash(base, beam)``.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ensemble.contracts import Item, Solver
from ensemble.eval.beams import ENSEMBLE, LM_ALONE, split_system
from ensemble.eval.seeds import run_seed


@dataclasses.dataclass
class Decoded:
    """One decoding: the system's parts, the LM's text, the consensus result (``None`` for the LM alone),
    the run's seed and its start time (``time.perf_counter``)."""

    base: str
    beam: int
    output: str
    result: Any
    seed_run: int
    started: float

    def seconds(self) -> float:
        """Seconds since the decoding started."""
        return time.perf_counter() - self.started


class GuidedLMSolver(Solver):
    """Base of the text tasks' solvers.

    Args:
        spec: the task's picklable settings (see the module docstring).
        task: the task (prompt and generator hooks, answer, metric).
        lm: an already loaded ``(model, tokenizer)`` (tests, benchmarks); else ``spec.lm`` is loaded.
        scorers: already built scorers by name; else :meth:`build_scorers`.
    """

    def __init__(self, spec: Any, task: Any, lm: tuple[Any, Any] | None = None,
                 scorers: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.task = task
        self._given_lm, self._given_scorers = lm, scorers
        self._generator: Any = None
        self._scorers: dict[str, Any] | None = None
        self._hashes: dict[str, str] = {}

    # -- what a task adds -------------------------------------------------------------------------------
    @abstractmethod
    def token_settings(self) -> dict[str, Any]:
        """:class:`~ensemble.generators.causal_lm.TokenConfig` fields of the generator."""

    @abstractmethod
    def build_scorers(self) -> dict[str, Any]:
        """The scorers by name, built from the spec."""

    def generator_hooks(self, tokenizer: Any) -> dict[str, Any]:
        """The generator's hooks (``prompt_fn``, ``stop_fn`` …): the task's, unless the spec changes them."""
        return self.task.generator_hooks(tokenizer)

    # -- shared ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the LM (once; :meth:`decode` calls it; the scorers load on first use). Building the solver is cheap."""
        if self._generator is not None:
            return
        import torch

        from ensemble.generators.causal_lm import CausalLMGenerator

        spec = self.spec
        if spec.threads:
            torch.set_num_threads(spec.threads)
        if self._given_lm is not None:
            model, tokenizer = self._given_lm
        else:
            from ensemble.models import load_causal_lm

            model, tokenizer = load_causal_lm(spec.lm, device=spec.device)
        self._generator = CausalLMGenerator(model, tokenizer, device=spec.device,
                                            **self.generator_hooks(tokenizer), **self.token_settings())
        self.base_config = self._generator.config

    @property
    def generator(self) -> Any:
        """The guided LM (loaded on first use)."""
        self.setup()
        return self._generator

    @property
    def scorers(self) -> dict[str, Any]:
        """The scorers by name (loaded on first use: the LM alone needs none, so it runs without their
        checkpoints)."""
        self.setup()
        if self._scorers is None:
            self._scorers = dict(self._given_scorers) if self._given_scorers is not None else self.build_scorers()
        return self._scorers

    def systems(self) -> list[str]:
        """The default systems (every base at every beam size of the spec)."""
        return self.spec.systems()

    def check_systems(self, systems: Sequence[str]) -> None:
        """Raise a clear error for a system the spec cannot run (a base at any beam size is fine)."""
        for system in systems:
            split_system(system, self.spec.bases())

    def config_hash(self, system: str) -> str:
        """The spec's hash of ``system`` (cached: checkpoint fingerprints read files)."""
        if system not in self._hashes:
            self._hashes[system] = self.spec.hash(*split_system(system, self.spec.bases()))
        return self._hashes[system]

    def scorer_names(self, base: str) -> list[str]:
        """The scorers of a guided base: all for the ensemble, else the one it names."""
        return list(self.scorers) if base == ENSEMBLE else [base]

    def ensemble(self, base: str) -> Any:
        """The :class:`~ensemble.aggregate.ScorerEnsemble` of a guided base (the spec's weights and
        normalisation for the ensemble; one scorer at weight 1 otherwise; calibration scales, if the spec has
        any, for every scorer)."""
        from ensemble.aggregate import ScorerEnsemble
        from ensemble.config import EnsembleConfig

        if base == ENSEMBLE:
            config = self.ensemble_config()
        else:
            scales = getattr(self.spec, "scales", {})
            config = EnsembleConfig(normalisation=self.spec.normalisation,
                                    scales={base: scales[base]} if base in scales else {})
        return ScorerEnsemble({n: self.scorers[n] for n in self.scorer_names(base)}, config)

    def ensemble_config(self) -> Any:
        """The :class:`~ensemble.config.EnsembleConfig` of the ensemble base: the spec's weights,
        normalisation and calibration scales (a task may combine differently)."""
        from ensemble.config import EnsembleConfig

        return EnsembleConfig(weights=dict(self.spec.weights), normalisation=self.spec.normalisation,
                              scales=dict(getattr(self.spec, "scales", {})))

    def decode(self, item: Item, system: str, seed: int, guided_context: Callable[[], Any] | None = None,
               callback: Callable[[Any, Any], Any] | None = None) -> Decoded:
        """Decode ``item`` with ``system``: the LM alone (``generate_plain`` on the item's context) or the LM
        guided by the system's scorers (consensus rounds on ``guided_context()``, default the item's context),
        at the system's beam size, seeded by the per-item rule."""
        import torch

        from ensemble.config import ConsensusConfig
        from ensemble.consensus import run_consensus

        base, beam = split_system(system, self.spec.bases())
        self.setup()
        cfg = dataclasses.replace(self.base_config, beam_size=beam)
        self.generator.config = cfg
        seed_run = run_seed(seed, item)
        torch.manual_seed(seed_run)
        started = time.perf_counter()
        if base == LM_ALONE:
            return Decoded(base, beam, self.generator.generate_plain(item.context, seed=seed_run), None, seed_run,
                           started)
        context = guided_context() if guided_context is not None else item.context
        budget = cfg.max_new_tokens * cfg.steps_per_token * 4 + 8
        result = run_consensus(self.generator, self.ensemble(base), context,
                               ConsensusConfig(max_rounds=budget, seed=seed_run), callback=callback)
        return Decoded(base, beam, result.output, result, seed_run, started)

    def n_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the LM's tokenizer."""
        return len(self.generator.tokenizer(text, add_special_tokens=False)["input_ids"])


ROUND_HEADER = ["round", "token #", "LM top", "committed", "each scorer's favourite", "moved by", "candidates"]
"""Columns of :func:`round_rows`."""


def round_rows(records: Sequence[Any], all_rounds: bool = False) -> list[list[Any]]:
    """Table rows of a guided decoding's round records: the rounds where a scorer moved the committed token
    away from the LM's top token (``all_rounds``: every token round; final-selection rounds are left out)."""
    rows = []
    for r in records:
        info = r.info
        if info.get("final"):
            continue
        committed = (info.get("committed") or [""])[0]
        favourites = info.get("scorer_top", {})
        moved = [n for n, t in favourites.items() if t == committed and t != info.get("lm_top")]
        if all_rounds or moved:
            rows.append([r.round, info.get("n_tokens"), repr(info.get("lm_top")), repr(committed),
                         ", ".join(f"{n}:{t!r}" for n, t in favourites.items()), ", ".join(moved) or "–",
                         r.n_candidates])
    return rows

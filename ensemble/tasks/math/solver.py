"""The math solver: named systems over one LM and its verifiers, one item per call.

A *system* is ``"<base>@<beam>"``: the base is ``"lm"`` (the LM alone, same beam search and
calculator), a verifier scorer name (the LM guided token by token by that one verifier) or
``"ensemble"`` (by all verifiers); the beam size is part of the system (``"ensemble@5"``). The
solution-level systems ``"pick_<base>@<K>"`` (:mod:`ensemble.tasks.math.pick_system`) instead sample K whole
solutions and let the base pick one. An
:class:`EvalSpec` is the solver's small picklable settings; :class:`MathEvaluator` builds the models
from it where it runs (once) and solves one item per call into a row of the one format
(:func:`ensemble.contracts.make_row`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble.config import EnsembleConfig
from ensemble.contracts import Item, make_row
from ensemble.eval.beams import ENSEMBLE, LM_ALONE, beam_rows, split_system
from ensemble.eval.guided_lm import GuidedLMSolver
from ensemble.results import config_hash
from ensemble.tasks.math.task import DEFAULT_LM, DEFAULT_SHOTS

GUIDANCE_KNOBS = frozenset({"top_k", "min_p", "score_results", "steps_per_token", "step_size", "temperature",
                            "target_prior", "fluency_weight", "fusion", "keep_shift", "skip_confident",
                            "rerank_weight", "select_final", "select_weight", "token_scorers"})
"""TokenConfig fields that act only through the scorers (left out of the LM-alone config hash)."""
MULTI_BEAM_KNOBS = frozenset({"select_final", "select_weight"})
"""TokenConfig fields that act only with several beams (left out of beam-1 config hashes)."""


@dataclass
class EvalSpec:
    """What to evaluate; crosses process boundaries, models are built where it runs.

    Attributes:
        lm: causal LM name (project checkpoint, registry, hub or local); default the untuned SmolLM2.
        verifiers: verifier name → scorer constructor kwargs (e.g. ``{"checkpoint": …}``).
        token: :class:`~ensemble.generators.causal_lm.TokenConfig` overrides (beam size is per system).
        task: :class:`~ensemble.tasks.math.MathTask` kwargs (default: one worked example in the prompt,
            for the untuned instruct LM; use ``{"shots": 0}`` with the fine-tuned generator).
        weights: per-verifier weights of the ensemble system (a missing name weighs 1.0, the paper's
            unweighted sum); single-verifier systems always weigh their verifier 1.0.
        normalisation: per-scorer normalisation of the ensemble (``"none"``: raw log-probabilities, so a
            verifier that cannot tell candidates apart barely pulls; ``"zscore"`` suits log-probabilities
            of differently calibrated verifiers).
        scales: per-verifier calibration scales (:attr:`ensemble.config.EnsembleConfig.scales`; fitted on
            development problems by ``ensemble train calibration``), applied in every system that uses the
            verifier; a missing name: 1.0.
        beams: the beam sizes of the default systems.
        pick: :class:`~ensemble.tasks.math.pick_system.PickSpec` fields of the solution-level systems
            (``pick_<base>@K``: sampling temperature, how the combined rating picks, calibration scales).
        device: torch device.
        threads: torch intra-op threads (``None``: leave as is).
    """

    lm: str = DEFAULT_LM
    verifiers: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"numeric_verifier": {}, "minilm_verifier": {}}
    )
    token: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=lambda: {"shots": DEFAULT_SHOTS})
    weights: dict[str, float] = field(default_factory=dict)
    normalisation: str = "none"
    scales: dict[str, float] = field(default_factory=dict)
    beams: tuple[int, ...] = (1, 5)
    pick: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(self.verifiers))
        if unknown:
            raise ValueError(f"weights name {unknown}, which are not among the verifiers {sorted(self.verifiers)}")
        unknown = sorted(set(self.token.get("token_scorers", ())) - set(self.verifiers))
        if unknown:
            raise ValueError(f"token_scorers name {unknown}, which are not among the verifiers {sorted(self.verifiers)}")
        bad = {n: w for n, w in self.weights.items() if not float(w) >= 0.0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        unknown = sorted(set(self.scales) - set(self.verifiers))
        if unknown:
            raise ValueError(f"scales name {unknown}, which are not among the verifiers {sorted(self.verifiers)}")
        EnsembleConfig(scales={n: float(c) for n, c in self.scales.items()})  # finite and >= 0, or a clear error
        self.beams = tuple(int(b) for b in self.beams)
        if not self.beams or min(self.beams) < 1:
            raise ValueError(f"beams {self.beams}: beam sizes must be >= 1")
        from ensemble.tasks.math.pick_system import PickSpec

        PickSpec(**self.pick)  # a clear error for a bad solution-level setting

    def bases(self) -> list[str]:
        """The base systems: the LM alone, each verifier, the ensemble, and each of them picking among K
        sampled solutions (``pick_…``; :meth:`systems` lists only the token-level ones)."""
        from ensemble.tasks.math.pick_system import PICK_PREFIX

        token_level = [LM_ALONE, *self.verifiers, ENSEMBLE]
        return token_level + [PICK_PREFIX + b for b in token_level]

    def systems(self) -> list[str]:
        """The default systems: every token-level base at every beam size of :attr:`beams`."""
        return [f"{base}@{beam}" for beam in self.beams for base in [LM_ALONE, *self.verifiers, ENSEMBLE]]

    def check_systems(self, systems: Sequence[str]) -> None:
        """Raise a clear error for a system this spec cannot run (a base at any beam size is fine)."""
        for system in systems:
            split_system(system, self.bases())

    def hash(self, system: str, beam: int) -> str:
        """Config hash of one (system, beam) evaluation: names, settings and the content fingerprints of
        project checkpoints (device and threads excluded)."""
        from ensemble.models import checkpoint_fingerprint
        from ensemble.tasks.math.pick_system import is_pick
        from ensemble.tasks.math.verifiers.checkpoint import verifier_checkpoint

        if is_pick(system):
            return self.pick_hash(system, beam)
        used = self.verifiers if system == ENSEMBLE else {k: v for k, v in self.verifiers.items() if k == system}
        # Project checkpoints are identified by content too: retraining one under the same name must
        # not let its old results count for the new model.
        versions = {"lm": checkpoint_fingerprint(self.lm)}
        for name, kwargs in used.items():
            checkpoint = verifier_checkpoint(name, kwargs)
            versions[name] = checkpoint_fingerprint(str(checkpoint)) if checkpoint else None
        token = self.token
        if system == LM_ALONE:  # knobs of the scorers' influence cannot change the LM alone's output
            token = {k: v for k, v in token.items() if k not in GUIDANCE_KNOBS}
        if beam == 1:
            token = {k: v for k, v in token.items() if k not in MULTI_BEAM_KNOBS}
        if "token_scorers" in token:  # as the system sees it: which of *its* verifiers rate tokens
            asked = sorted(n for n in used if n in token["token_scorers"])
            token = {k: v for k, v in token.items() if k != "token_scorers"}
            if asked != sorted(used):
                token["token_scorers"] = asked
        extra = {"weights": dict(sorted(self.weights.items()))} if system == ENSEMBLE and self.weights else {}
        scales = {n: float(c) for n, c in sorted(self.scales.items()) if n in used}
        if scales:
            extra["scales"] = scales
        return config_hash({"lm": self.lm, "verifiers": used, "token": token, "task": self.task,
                            "versions": versions, **extra,
                            "normalisation": self.normalisation if system == ENSEMBLE else None,
                            "system": system, "beam": beam})

    def pick_hash(self, system: str, k: int) -> str:
        """Config hash of a solution-level system ``pick_<base>@k``: the LM, its sampling, the picking
        member's verifiers, weights and scales, and how it combines."""
        from ensemble.models import checkpoint_fingerprint
        from ensemble.tasks.math.pick_system import PickSpec, member
        from ensemble.tasks.math.verifiers.checkpoint import verifier_checkpoint

        name = member(system)
        used = {} if name == LM_ALONE else self.verifiers if name == ENSEMBLE else {name: self.verifiers[name]}
        versions = {"lm": checkpoint_fingerprint(self.lm)}
        for n, kwargs in used.items():
            checkpoint = verifier_checkpoint(n, kwargs)
            versions[n] = checkpoint_fingerprint(str(checkpoint)) if checkpoint else None
        pick = PickSpec(**self.pick)
        settings = {"temperature": pick.temperature, "top_p": pick.top_p,
                    "max_new_tokens": self.token.get("max_new_tokens", 256)}
        if used:
            settings.update(combine=pick.combine, per_char=sorted(n for n in pick.per_char if n in used),
                            scales=dict(sorted(pick.scales.get(name, {}).items())))
        if name == ENSEMBLE and self.weights:
            settings["weights"] = dict(sorted(self.weights.items()))
        return config_hash({"lm": self.lm, "verifiers": used, "task": self.task, "versions": versions,
                            "pick": settings, "system": system, "k": k})


class MathEvaluator(GuidedLMSolver):
    """Builds the LM, the verifiers and the task from an :class:`EvalSpec` and solves items.

    Args:
        spec: the evaluation spec.
        lm: an already loaded ``(model, tokenizer)`` (tests); else ``spec.lm`` is loaded.
        scorers: already built verifier scorers by name (tests); else built from ``spec.verifiers``.
    """

    def __init__(self, spec: EvalSpec, lm: tuple[Any, Any] | None = None, scorers: dict[str, Any] | None = None) -> None:
        from ensemble.tasks.math.task import MathTask

        super().__init__(spec, MathTask(**spec.task), lm, scorers)

    def token_settings(self) -> dict[str, Any]:
        """The task's stop strings and the spec's token-rule overrides."""
        return {"stop_strings": self.task.stop_strings, **self.spec.token}

    def build_scorers(self) -> dict[str, Any]:
        """The verifiers of the spec, from the scorer registry."""
        from ensemble.registry import SCORERS

        return {name: SCORERS.make(name, **kwargs) for name, kwargs in self.spec.verifiers.items()}

    def solve(self, item: Item, system: str, seed: int = 0, callback: Callable[[Any, Any], Any] | None = None) -> dict[str, Any]:
        """Solve ``item`` with ``system`` (``"<base>@<beam>"``); the result row.

        ``metric`` is exact match (1.0 / 0.0); ``scorers`` holds per verifier ``moved``: committed tokens
        where that verifier's favourite differed from the LM's top token and the committed token followed
        it, and ``abstained``: rounds where it had nothing to say. ``extras``: ``output``, ``target``, ``beam``, ``base``, ``tokens``, ``tokens_per_s``, and for
        guided systems ``rounds``, and with a final selection round ``final_changed`` (the verifiers
        picked another finished beam than the LM would have).
        """
        from ensemble.eval.beams import split_system
        from ensemble.tasks.math.pick_system import is_pick

        base, beam = split_system(system, self.spec.bases())
        if is_pick(base):
            return self.solve_pick(item, system, base, beam, seed)
        run = self.decode(item, system, seed, callback=callback)
        extras: dict[str, Any] = {"base": run.base, "beam": run.beam}
        scorers: dict[str, Any] = {}
        if run.result is not None:
            extras["rounds"] = len(run.result.rounds)
            abstained = abstentions(run.result.rounds)
            moved = moved_tokens(run.result.rounds)
            scorers = {name: {"moved": moved.get(name, 0), "abstained": abstained.get(name, 0)}
                       for name in self.scorer_names(run.base)}
            final = [r.info for r in run.result.rounds if r.info.get("final")]
            if final:  # the verifiers' pick among the finished beams vs the LM's own
                extras["final_changed"] = final[-1]["chosen"] != final[-1]["lm_choice"]
        answer = self.task.answer(run.output, item)
        seconds = run.seconds()
        n_tokens = self.n_tokens(run.output)
        extras.update(output=run.output, target=item.target, tokens=n_tokens,
                      tokens_per_s=round(n_tokens / max(seconds, 1e-9), 3))
        return make_row(item, system, self.config_hash(system), seed, answer, self.task.metric(answer, item),
                        seconds, scorers=scorers, extras=extras)


    def solve_pick(self, item: Item, system: str, base: str, k: int, seed: int) -> dict[str, Any]:
        """The row of a solution-level system ``pick_<member>@k`` (:mod:`ensemble.tasks.math.pick_system`)."""
        import time

        from ensemble.tasks.math.pick_system import PickRunner

        if getattr(self, "_pick", None) is None:
            self._pick = PickRunner(self)
        start = time.perf_counter()
        before = self._pick._last
        output, scorers, extras = self._pick.solve(item, base, k, seed)
        seconds = time.perf_counter() - start
        if self._pick._last is before:  # another system drew the samples: count their cost too
            seconds += extras["sample_s"]
        answer = self.task.answer(output, item)
        extras.update(base=base, beam=k, output=output, target=item.target, tokens=self.n_tokens(output))
        return make_row(item, system, self.config_hash(system), seed, answer, self.task.metric(answer, item),
                        seconds, scorers=scorers, extras=extras)


def moved_tokens(rounds: Sequence[Any]) -> dict[str, int]:
    """Per scorer: committed tokens that differ from the LM's top token and equal that scorer's favourite."""
    moved: dict[str, int] = {}
    for r in rounds:
        info = r.info
        committed = info.get("committed")
        if not committed or "scorer_top" not in info:
            continue
        for name, tok in info["scorer_top"].items():
            moved.setdefault(name, 0)
            if committed[0] == tok and tok != info.get("lm_top"):
                moved[name] += 1
    return moved


def abstentions(rounds: Sequence[Any]) -> dict[str, int]:
    """Per scorer: the rounds in which it abstained (had nothing to say)."""
    out: dict[str, int] = {}
    for r in rounds:
        for name in getattr(r, "abstained", ()):
            out[name] = out.get(name, 0) + 1
    return out


def math_table(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> str:
    """Markdown: per system, problems, accuracy ± 95 % interval, problems won / lost against the LM alone
    (the same beam; for a solution-level ``pick_…@K`` system the greedy LM alone, ``lm@1``), seconds per
    problem, tokens per second; then paired-bootstrap differences: at each beam every guided system against
    the LM alone and the ensemble against each single scorer; for ``pick_…@K`` systems each against ``lm@1``
    and against the LM's own vote ``pick_lm@K``, and ``pick_ensemble@K`` against each single scorer's pick."""
    from ensemble.eval.beams import beam_pairs, beam_table, same_beam_lm
    from ensemble.eval.table import paired_table
    from ensemble.tasks.math.pick_system import PICK_PREFIX, is_pick

    token = [s for s in systems if not is_pick(s)]
    picks = [s for s in systems if is_pick(s)]
    pairs = beam_pairs(token)
    for system in picks:
        base, _, k = system.partition("@")
        pairs.append((f"{LM_ALONE}@1", system))
        if base != PICK_PREFIX + LM_ALONE:
            pairs.append((f"{PICK_PREFIX}{LM_ALONE}@{k}", system))
        if base == PICK_PREFIX + ENSEMBLE:
            pairs += [(other, system) for other in picks if other.partition("@")[2] == k
                      and other.partition("@")[0] not in (PICK_PREFIX + LM_ALONE, PICK_PREFIX + ENSEMBLE)]

    def reference(system: str) -> str:
        return f"{LM_ALONE}@1" if is_pick(system) else same_beam_lm(system)

    paired = paired_table(rows, pairs) if pairs else ""
    return beam_table(rows, systems, "problems", True, reference) + ("\n\n" + paired if paired.count("\n") > 1 else "")


def summarise(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> list[list[Any]]:
    """:func:`~ensemble.eval.beams.beam_rows` with tokens per second."""
    return beam_rows(rows, systems, tokens=True)

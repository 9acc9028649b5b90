"""Per-item evaluation of math systems, reusable in-process and by the Ray layer.

A *system* is ``"lm"`` (the LM alone, same beam search and calculator), a verifier scorer name (the LM
guided token by token by that one verifier) or ``"ensemble"`` (by all verifiers). An
:class:`EvalSpec` is a small picklable description; :class:`MathEvaluator` builds the models from it
where it runs (once) and solves one item per call, returning a JSON-ready result row keyed by
``(item_id, config_hash, seed)``. :func:`evaluate_local` runs a list of items through a resumable
:class:`~ensemble.results.ResultsFile`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble.contracts import Item
from ensemble.results import ResultsFile, config_hash, result_key

LM_ALONE = "lm"
ENSEMBLE = "ensemble"
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
        lm: causal LM name (project checkpoint, registry, hub or local); default the fine-tuned generator.
        verifiers: verifier name → scorer constructor kwargs (e.g. ``{"checkpoint": …}``).
        token: :class:`~ensemble.generators.causal_lm.TokenConfig` overrides (beam size is per system).
        task: :class:`~ensemble.tasks.math.MathTask` kwargs (default: no worked example in the prompt,
            as the fine-tuned generator was trained).
        weights: per-verifier weights of the ensemble system (a missing name weighs 1.0, the paper's
            unweighted sum); single-verifier systems always weigh their verifier 1.0.
        normalisation: per-scorer normalisation of the ensemble (``"none"``: raw log-probabilities, so a
            verifier that cannot tell candidates apart barely pulls; ``"zscore"`` suits log-probabilities
            of differently calibrated verifiers).
        device: torch device.
        threads: torch intra-op threads (``None``: leave as is).
    """

    lm: str = "generators/smollm2-gsm"
    verifiers: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"numeric_verifier": {}, "minilm_verifier": {}}
    )
    token: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=lambda: {"shots": 0})
    weights: dict[str, float] = field(default_factory=dict)
    normalisation: str = "none"
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

    def systems(self) -> list[str]:
        """All systems this spec can run: the LM alone, each verifier, the ensemble."""
        return [LM_ALONE, *self.verifiers, ENSEMBLE]

    def check_systems(self, systems: Sequence[str]) -> None:
        """Raise a clear error for a system this spec cannot run."""
        bad = [s for s in systems if s not in self.systems()]
        if bad:
            raise ValueError(f"unknown system(s) {bad}; valid systems: {', '.join(self.systems())}")

    def hash(self, system: str, beam: int) -> str:
        """Config hash of one (system, beam) evaluation: names, settings and the content fingerprints of
        project checkpoints (device and threads excluded)."""
        from ensemble.models import checkpoint_fingerprint
        from ensemble.verifiers.checkpoint import verifier_checkpoint

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
        return config_hash({"lm": self.lm, "verifiers": used, "token": token, "task": self.task,
                            "versions": versions, **extra,
                            "normalisation": self.normalisation if system == ENSEMBLE else None,
                            "system": system, "beam": beam})


class MathEvaluator:
    """Builds the LM, the verifiers and the task from an :class:`EvalSpec` and solves items.

    Args:
        spec: the evaluation spec.
        lm: an already loaded ``(model, tokenizer)`` (tests); else ``spec.lm`` is loaded.
        scorers: already built verifier scorers by name (tests); else built from ``spec.verifiers``.
    """

    def __init__(self, spec: EvalSpec, lm: tuple[Any, Any] | None = None, scorers: dict[str, Any] | None = None) -> None:
        import torch

        from ensemble.generators.causal_lm import CausalLMGenerator
        from ensemble.registry import SCORERS
        from ensemble.tasks.math import MathTask

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.task = MathTask(**spec.task)
        model, tokenizer = lm if lm is not None else (spec.lm, None)
        if lm is None:
            from ensemble.models import load_causal_lm

            model, tokenizer = load_causal_lm(spec.lm, device=spec.device)
        token = {"stop_strings": self.task.stop_strings, **spec.token}
        self.generator = CausalLMGenerator(model, tokenizer, device=spec.device,
                                           **self.task.generator_hooks(tokenizer), **token)
        self.base_config = self.generator.config
        self.scorers = dict(scorers) if scorers is not None else {
            name: SCORERS.make(name, **kwargs) for name, kwargs in spec.verifiers.items()
        }

    def _ensemble(self, system: str) -> Any:
        from ensemble.aggregate import ScorerEnsemble
        from ensemble.config import EnsembleConfig

        names = list(self.scorers) if system == ENSEMBLE else [system]
        return ScorerEnsemble({n: self.scorers[n] for n in names}, EnsembleConfig(
            weights=dict(self.spec.weights) if system == ENSEMBLE else {}, normalisation=self.spec.normalisation))

    def solve(self, item: Item, system: str, beam: int, seed: int = 0,
              callback: Callable[[Any, Any], Any] | None = None) -> dict[str, Any]:
        """Solve ``item`` with ``system`` at beam size ``beam``; the result row (JSON-ready).

        The row has the key fields, ``correct``, ``answer``, ``target``, ``output``, ``tokens``,
        ``seconds``, and for guided systems ``rounds`` and ``moved`` (per scorer: committed tokens where
        that scorer's favourite differed from the LM's top token and the committed token followed the
        scorer); with a final selection round, ``final_changed`` (the verifiers picked another finished
        beam than the LM would have).
        """
        import torch

        from ensemble.config import ConsensusConfig
        from ensemble.consensus import run_consensus

        self.spec.check_systems([system])
        cfg = dataclasses.replace(self.base_config, beam_size=beam)
        self.generator.config = cfg
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"item_id": item.id, "config_hash": self.spec.hash(system, beam), "seed": seed,
                               "system": system, "beam": beam}
        if system == LM_ALONE:
            output = self.generator.generate_plain(item.context, seed=seed)
        else:
            budget = cfg.max_new_tokens * cfg.steps_per_token * 4 + 8
            res = run_consensus(self.generator, self._ensemble(system), item.context,
                                ConsensusConfig(max_rounds=budget, seed=seed), callback=callback)
            output = res.output
            row["rounds"] = len(res.rounds)
            row["moved"] = moved_tokens(res.rounds)
            final = [r.info for r in res.rounds if r.info.get("final")]
            if final:  # the verifiers' pick among the finished beams vs the LM's own
                row["final_changed"] = final[-1]["chosen"] != final[-1]["lm_choice"]
        answer = self.task.answer(output, item)
        seconds = time.perf_counter() - t0
        n_tokens = len(self.generator.tokenizer(output, add_special_tokens=False)["input_ids"])
        row.update(correct=self.task.metric(answer, item), answer=answer, target=item.target, output=output,
                   tokens=n_tokens, seconds=round(seconds, 3), tokens_per_s=round(n_tokens / max(seconds, 1e-9), 3))
        return row


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


def work_list(spec: EvalSpec, items: Sequence[Item], systems: Sequence[str], beams: Sequence[int],
              seed: int) -> list[tuple[Item, str, int]]:
    """Every (item, system, beam) to evaluate, item-major (so a partial run covers all systems evenly)."""
    spec.check_systems(systems)
    return [(item, s, b) for item in items for b in beams for s in systems]


def evaluate_local(spec: EvalSpec, items: Sequence[Item], systems: Sequence[str], beams: Sequence[int], seed: int,
                   results: ResultsFile, evaluator: MathEvaluator | None = None,
                   progress: Callable[[Iterable], Iterable] | None = None) -> list[dict[str, Any]]:
    """Evaluate everything not yet in ``results``, appending each row as soon as it is done.

    Returns:
        The rows of this evaluation (old and new) in work-list order.
    """
    todo = work_list(spec, items, systems, beams, seed)
    missing = [w for w in todo if result_key(w[0].id, spec.hash(w[1], w[2]), seed) not in results]
    if missing and evaluator is None:
        evaluator = MathEvaluator(spec)
    iterator = progress(missing) if progress else missing
    for item, system, beam in iterator:
        results.append(evaluator.solve(item, system, beam, seed))
    return select_rows(results.rows(), spec, items, systems, beams, seed)


def select_rows(rows: Iterable[dict[str, Any]], spec: EvalSpec, items: Sequence[Item], systems: Sequence[str],
                beams: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """The rows of ``rows`` that belong to this evaluation, in work-list order."""
    by_key = {ResultsFile.key_of(r): r for r in rows}
    keys = [result_key(i.id, spec.hash(s, b), seed) for i, s, b in work_list(spec, items, systems, beams, seed)]
    return [by_key[k] for k in keys if k in by_key]


def summarise(rows: Sequence[dict[str, Any]], systems: Sequence[str], beams: Sequence[int]) -> list[list[Any]]:
    """Table rows ``[system, beam, n, accuracy %, won / lost vs the LM alone, seconds/problem, tokens/s]``.

    "won / lost" counts the problems a guided system solved where the LM alone (same beam) failed, and
    failed where it solved, over the problems both ran ("–" for the LM itself or without LM rows).
    """
    table = []
    for beam in beams:
        lm = {r["item_id"]: r["correct"] for r in rows if r["system"] == LM_ALONE and r["beam"] == beam}
        for system in systems:
            sel = [r for r in rows if r["system"] == system and r["beam"] == beam]
            if not sel:
                continue
            n = len(sel)
            acc = 100.0 * sum(r["correct"] for r in sel) / n
            secs = sum(r["seconds"] for r in sel) / n
            tps = sum(r["tokens"] for r in sel) / max(sum(r["seconds"] for r in sel), 1e-9)
            both = [r for r in sel if r["item_id"] in lm]
            vs_lm = "–" if system == LM_ALONE or not both else (
                f"{sum(r['correct'] and not lm[r['item_id']] for r in both):g} / "
                f"{sum(lm[r['item_id']] and not r['correct'] for r in both):g}")
            table.append([system, beam, n, acc, vs_lm, secs, tps])
    return table

"""Calibration and headroom of the solution-level systems, on development problems (training templates).

For each development problem the LM proposes K solutions (as ``pick_…@K`` does: row 0 greedy, the rest
sampled) and every scorer rates each whole solution (:class:`~ensemble.tasks.math.pick.SolutionRater`;
abstentions are left out). From these records:

* :func:`fit_pick_scales` fits the calibration scales of every picking member — each scorer alone and all
  of them jointly (the ensemble) — by :func:`~ensemble.tasks.math.pick.fit_scale`;
* :func:`headroom` measures what picking can gain at all: the greedy LM (pass@1), one sample, any of the K
  right (pass@K, the ceiling of every pick), the LM's majority vote, and each member's pick (best-of-K and
  weighted vote) with those scales. Picks scored on the problems the scales were fitted on are in-sample.

The scales are saved as the project checkpoint ``calibration/math-pick`` and applied by
``--pick-scales calibration``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DEFAULT_NAME = "calibration/math-pick"
"""Project checkpoint of ``ensemble train pick-calibration``."""


def collect(evaluator: Any, items: Sequence[Any], k: int, seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """Per problem: the K solutions, their answers, right or wrong, and each speaking scorer's ratings."""
    from ensemble.tasks.math.pick import SolutionRater
    from ensemble.tasks.math.pick_system import PickRunner

    runner = PickRunner(evaluator)
    bar = items
    if progress:
        from tqdm import tqdm

        bar = tqdm(items, desc=f"pick-calibration (K={k})", unit="problem")
    records = []
    for item in bar:
        solutions, sample_s = runner.samples(item, k, seed)
        answers = [evaluator.task.answer(s, item) for s in solutions]
        ratings = {}
        for name, scorer in evaluator.scorers.items():
            out = SolutionRater(scorer, per_char=name in runner.spec.per_char).score(item.context, solutions)
            if not out.abstain:
                ratings[name] = [float(v) for v in out.scores]
        records.append({"id": item.id, "answers": answers, "sample_s": round(sample_s, 2), "ratings": ratings,
                        "right": [bool(evaluator.task.metric(a, item)) for a in answers]})
    return records


def _problems(records: Sequence[dict[str, Any]]) -> list[tuple[dict[str, torch.Tensor], list[bool]]]:
    return [({n: torch.tensor(v) for n, v in r["ratings"].items()}, r["right"]) for r in records]


def fit_pick_scales(records: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{"ensemble": {scorer: c, …}, "<scorer>": {scorer: c}}`` fitted on ``records``."""
    from ensemble.tasks.math.pick import fit_scale

    problems = _problems(records)
    scales = {name: fit_scale(problems, [name]) for name in names}
    scales["ensemble"] = fit_scale(problems, list(names))
    return scales


def _total(ratings: dict[str, torch.Tensor], scales: dict[str, float], k: int) -> torch.Tensor:
    """The ensemble's combined rating as :class:`~ensemble.aggregate.ScorerEnsemble` forms it (z-score, scale,
    weights 1 renormalised over the scorers that spoke)."""
    from ensemble.aggregate import normalise

    asked = [n for n in scales]
    spoke = [n for n in asked if n in ratings]
    total = torch.zeros(k)
    for n in spoke:
        total += len(asked) / len(spoke) * float(scales[n]) * normalise(ratings[n].float(), "zscore")[0]
    return total


def headroom(records: Sequence[dict[str, Any]], scales: dict[str, dict[str, float]]) -> dict[str, float]:
    """Accuracy (fraction of problems) of the greedy LM, one sample, pass@K, the LM's vote and every member's
    best-of-K and weighted-vote pick under ``scales``."""
    from ensemble.tasks.math.pick import pick

    n = len(records)
    out = {"problems": n, "greedy (pass@1)": sum(r["right"][0] for r in records) / n,
           "one sample": sum(sum(r["right"][1:]) / max(len(r["right"]) - 1, 1) for r in records) / n,
           "pass@K": sum(any(r["right"]) for r in records) / n,
           "LM majority vote": sum(r["right"][pick(r["answers"], torch.zeros(len(r["answers"])))] for r in records) / n}
    for member, member_scales in scales.items():
        for combine in ("best", "vote"):
            right = 0
            for ratings, r in zip(_problems(records), records, strict=True):
                right += r["right"][pick(r["answers"], _total(ratings[0], member_scales, len(r["answers"])), combine)]
            out[f"{member} {combine}"] = right / n
    return out


def save_pick_calibration(report: dict[str, Any], name: str = DEFAULT_NAME) -> Path:
    """Write ``report`` as ``config.json`` of the project checkpoint ``name`` (or into a directory path)."""
    from ensemble.models import project_checkpoint_dir

    path = Path(name) if Path(name).is_absolute() or name.startswith(".") else project_checkpoint_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"type": "pick-calibration", **report}, indent=2))
    return path


def load_pick_scales(name: str = DEFAULT_NAME) -> dict[str, dict[str, float]]:
    """The member scales of a saved pick calibration (``ensemble train pick-calibration``)."""
    from ensemble.models import find_project_checkpoint

    path = Path(name) if (Path(name) / "config.json").is_file() else find_project_checkpoint(name)
    if path is None:
        raise FileNotFoundError(f"no pick calibration {name!r}; fit one with `ensemble train pick-calibration` "
                                "(development problems of the training templates)")
    return json.loads((path / "config.json").read_text())["scales"]


def pick_calibrate(evaluator: Any, items: Sequence[Any], k: int, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Collect records on ``items``, fit the scales, measure the headroom; the report (records included)."""
    start = time.perf_counter()
    records = collect(evaluator, items, k, seed, progress)
    scales = fit_pick_scales(records, list(evaluator.scorers))
    return {"scales": scales, "headroom": headroom(records, scales), "k": k, "seed": seed, "lm": evaluator.spec.lm,
            "pick": dict(evaluator.spec.pick), "seconds": round(time.perf_counter() - start, 1), "records": records}

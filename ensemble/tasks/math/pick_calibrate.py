"""Calibration and headroom of the solution-level systems, on development problems (training templates).

For each development problem the LM proposes K solutions (as ``pick_…@K`` does: row 0 greedy, the rest
sampled) and every scorer rates each whole solution (:class:`~ensemble.tasks.math.pick.SolutionRater`;
abstentions are left out). From these records:

* :func:`fit_pick_scales` fits the calibration scales of every picking member — each scorer alone and all
  of them jointly (the ensemble) — by :func:`~ensemble.tasks.math.pick.fit_scale`;
* :func:`headroom` measures what picking can gain at all: the greedy LM (pass@1), one sample, any of the K
  right (pass@K, the ceiling of every pick), the LM's majority vote, and each member's pick (best-of-K and
  weighted vote) with those scales. Picks scored on the problems the scales were fitted on are in-sample.
  :func:`truncate` keeps the first k of each problem's K solutions (the greedy one and k − 1 samples), so one
  run at a large K also gives the headroom of every smaller K (:func:`headroom_by_k`).

Collecting is the long part (~2 min per problem at K = 64 on one CPU thread), so :func:`collect` can append
each problem's record to a JSON-lines file as it finishes and, run again, skips the problems already there.

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


def _run_header(evaluator: Any, k: int, seed: int) -> dict[str, Any]:
    """What a record file's rows depend on: a resumed run must match it."""
    return {"k": k, "seed": seed, "lm": evaluator.spec.lm, "scorers": sorted(evaluator.scorers),
            "pick": dict(evaluator.spec.pick)}


def _resume(path: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records already in ``path`` by problem id (the file is created with ``header`` when missing)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"header": header}) + "\n")
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    found = lines[0].get("header") if lines else None
    if found != header:
        raise ValueError(f"{path} holds records of another run ({found}), not of {header}: use another --name "
                         "or delete the file")
    return {r["id"]: r for r in lines[1:]}


def collect(evaluator: Any, items: Sequence[Any], k: int, seed: int = 0, progress: bool = False,
            records_path: str | Path | None = None) -> list[dict[str, Any]]:
    """Per problem: the K solutions, their answers, right or wrong, and each speaking scorer's ratings.

    With ``records_path`` each record is appended to that JSON-lines file as soon as its problem is done,
    and the problems already there (same LM, scorers, K, seed, pick settings) are not sampled again.
    """
    from ensemble.tasks.math.pick import SolutionRater
    from ensemble.tasks.math.pick_system import PickRunner

    path = Path(records_path) if records_path is not None else None
    done = _resume(path, _run_header(evaluator, k, seed)) if path is not None else {}
    runner = PickRunner(evaluator)
    bar = items
    if progress:
        from tqdm import tqdm

        bar = tqdm(items, desc=f"pick-calibration (K={k})", unit="problem")
        bar.set_postfix(resumed=sum(item.id in done for item in items))
    records = []
    for item in bar:
        if item.id in done:
            records.append(done[item.id])
            continue
        solutions, sample_s = runner.samples(item, k, seed)
        answers = [evaluator.task.answer(s, item) for s in solutions]
        ratings = {}
        for name, scorer in evaluator.scorers.items():
            out = SolutionRater(scorer, per_char=name in runner.spec.per_char).score(item.context, solutions)
            if not out.abstain:
                ratings[name] = [float(v) for v in out.scores]
        records.append({"id": item.id, "answers": answers, "sample_s": round(sample_s, 2), "ratings": ratings,
                        "right": [bool(evaluator.task.metric(a, item)) for a in answers]})
        if path is not None:
            with path.open("a") as f:
                f.write(json.dumps(records[-1]) + "\n")
    return records


def truncate(records: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The records as a run at K = ``k`` would have them: each problem's first ``k`` solutions (row 0 greedy)."""
    if k < 1 or any(len(r["answers"]) < k for r in records):
        raise ValueError(f"cannot keep {k} solutions of records with {min(len(r['answers']) for r in records)}")
    return [{**r, "answers": r["answers"][:k], "right": r["right"][:k],
             "ratings": {n: v[:k] for n, v in r["ratings"].items()}} for r in records]


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


def headroom_by_k(records: Sequence[dict[str, Any]], names: Sequence[str], ks: Sequence[int]) -> dict[int, dict[str, float]]:
    """:func:`headroom` at every K of ``ks`` (the records truncated to it), with scales fitted at that K."""
    out = {}
    for k in ks:
        sub = truncate(records, k)
        out[k] = headroom(sub, fit_pick_scales(sub, names))
    return out


def checkpoint_path(name: str = DEFAULT_NAME) -> Path:
    """The directory of the pick calibration ``name``: a project checkpoint name, or a directory path."""
    from ensemble.models import project_checkpoint_dir

    return Path(name) if Path(name).is_absolute() or name.startswith(".") else project_checkpoint_dir(name)


def save_pick_calibration(report: dict[str, Any], name: str = DEFAULT_NAME) -> Path:
    """Write ``report`` as ``config.json`` of the project checkpoint ``name`` (or into a directory path)."""
    path = checkpoint_path(name)
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


def pick_calibrate(evaluator: Any, items: Sequence[Any], k: int, seed: int = 0, progress: bool = False,
                   records_path: str | Path | None = None, ks: Sequence[int] = ()) -> dict[str, Any]:
    """Collect records on ``items`` (resumable through ``records_path``), fit the scales, measure the headroom
    at K and at every smaller K of ``ks``; the report (records included)."""
    start = time.perf_counter()
    records = collect(evaluator, items, k, seed, progress, records_path)
    names = list(evaluator.scorers)
    scales = fit_pick_scales(records, names)
    smaller = sorted({int(x) for x in ks if 1 <= int(x) < k})
    return {"scales": scales, "headroom": headroom(records, scales),
            "headroom_by_k": {str(x): h for x, h in headroom_by_k(records, names, smaller).items()},
            "k": k, "seed": seed, "lm": evaluator.spec.lm, "pick": dict(evaluator.spec.pick),
            "seconds": round(time.perf_counter() - start, 1), "records": records}

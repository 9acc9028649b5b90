"""Per-scorer calibration of the math ensemble on development problems (training templates only).

The generator reads each development problem's reference solution (teacher forcing, one forward pass). At
every position where the token rule would ask the scorers — the generator's candidates after its ``min_p``
and result-digit rules leave more than one, the reference token is among them, and the calculator does not
write the text itself — each scorer rates the candidates as it would in a round (same candidate texts, same
normalisation); abstentions are left out. :func:`ensemble.tasks.math.scales.fit_scales` then fits one scale per
scorer so its target distribution predicts the reference token best. The scales are saved as a project
checkpoint (``calibration/math``, a ``config.json``) and applied at run time with ``--scales calibration``
(:attr:`ensemble.config.EnsembleConfig.scales`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.tasks.math.scales import Position, fit_scales

DEFAULT_NAME = "calibration/math"
"""Project checkpoint of ``ensemble train calibration``."""


def forced_spans(generator: Any, ids: list[int]) -> set[int]:
    """Indices of the tokens of ``ids`` that the generator's ``force_fn`` (the calculator) would write."""
    if generator.force_fn is None:
        return set()
    full = generator.text(ids)
    forced: set[int] = set()
    until = -1
    for t in range(len(ids)):
        start = len(generator.text(ids[:t]))
        if start < until:
            forced.add(t)
            continue
        text = generator.text(ids[:t])
        extra = generator.force_fn(text)
        if extra and full[start:].startswith(extra):
            until = start + len(extra)
            forced.add(t)
    return forced


@torch.no_grad()
def item_positions(generator: Any, scorers: dict[str, Any], item: Any, normalisation: str,
                   max_positions: int = 12) -> dict[str, list[Position]]:
    """The calibration positions of one problem's reference solution, per scorer."""
    from ensemble.aggregate import normalise

    prompt = generator._ids(generator.prompt_fn(item.context))
    ref = generator._ids(item.meta["solution"])
    logits = generator.model(input_ids=torch.tensor([prompt + ref], device=generator.device)).logits[0].float()
    logp = F.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(ref)], -1).cpu()
    forced = forced_spans(generator, ref)
    out: dict[str, list[Position]] = {name: [] for name in scorers}
    taken = 0
    for t, tok in enumerate(ref):
        if t in forced or taken >= max_positions:
            continue
        text = generator.text(ref[:t]) if generator.config.score_results else ""
        cands = generator._candidates(logp[t], text)
        if len(cands) < 2 or tok not in cands:
            continue
        taken += 1
        texts = [generator.text(ref[:t] + [c]) for c in cands]
        prior = logp[t][cands] if generator.config.target_prior else torch.zeros(len(cands))
        prior = F.log_softmax(prior, -1)
        for name, scorer in scorers.items():
            answer = scorer.score(item.context, texts)
            if answer.abstain:
                continue
            z, _ = normalise(torch.as_tensor(answer.scores, dtype=torch.float32).flatten(), normalisation)
            out[name].append(Position(prior, z, cands.index(tok)))
    return out


def calibrate(evaluator: Any, items: list[Any], max_positions: int = 12, progress: bool = False) -> dict[str, Any]:
    """Fit each scorer's scale of ``evaluator`` (a :class:`~ensemble.tasks.math.solver.MathEvaluator`, beam 1)
    on ``items`` (development problems with reference solutions); the report per scorer (see
    :func:`ensemble.tasks.math.scales.fit_scales`) and its settings."""
    start = time.perf_counter()
    generator, scorers = evaluator.generator, evaluator.scorers
    positions: dict[str, list[Position]] = {name: [] for name in scorers}
    bar = items
    if progress:
        from tqdm import tqdm

        bar = tqdm(items, desc="calibration", unit="problem")
    for item in bar:
        for name, ps in item_positions(generator, scorers, item, evaluator.spec.normalisation, max_positions).items():
            positions[name].extend(ps)
    return {"scorers": fit_scales(positions), "problems": len(items), "normalisation": evaluator.spec.normalisation,
            "lm": evaluator.spec.lm, "token": dict(evaluator.spec.token), "seconds": round(time.perf_counter() - start, 1)}


def save_calibration(report: dict[str, Any], name: str = DEFAULT_NAME) -> Path:
    """Write ``report`` as ``config.json`` of the project checkpoint ``name`` (or into a directory path)."""
    from ensemble.models import project_checkpoint_dir

    path = Path(name) if Path(name).is_absolute() or name.startswith(".") else project_checkpoint_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"type": "calibration", **report}, indent=2))
    return path


def load_scales(name: str = DEFAULT_NAME) -> dict[str, float]:
    """The per-scorer scales of a saved calibration (``ensemble train calibration``)."""
    from ensemble.models import find_project_checkpoint

    path = Path(name) if (Path(name) / "config.json").is_file() else find_project_checkpoint(name)
    if path is None:
        raise FileNotFoundError(f"no calibration {name!r}; fit one with `ensemble train calibration` "
                                "(development problems of the training templates)")
    report = json.loads((path / "config.json").read_text())
    return {n: float(r["scale"]) for n, r in report["scorers"].items()}

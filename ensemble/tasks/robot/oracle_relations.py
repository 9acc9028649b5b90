"""Ground-truth relation "scorer": the simulator's own judgement of the goal relations (an upper bound).

It reads the privileged fields of an :class:`~ensemble.tasks.robot.world_model.Outcome` (which goal relations hold,
object centres), not the images; evaluations use it as the "ground-truth relations" baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.tasks.robot.spatial import LEFT_OF, ON_TOP_OF, parse_goal, relation_weights
from ensemble.tasks.robot.world_model import Outcome


class OracleRelationsScorer(Scorer):
    """Score = −(weighted unsatisfied relations + ``shaping`` × a metric distance to satisfying them).

    Args:
        shaping: weight of the continuous term (metres to go, from the true object centres), which
            lets CEM home in; 0 gives the bare count of unsatisfied relations.
        margin: left/right margin in metres used by the continuous term.
    """

    modality = "views"

    def __init__(self, shaping: float = 1.0, margin: float = 0.04) -> None:
        self.shaping, self.margin = shaping, margin

    def energy(self, context: Any, outcome: Outcome) -> float:
        """Unsatisfied relations plus the shaped distance."""
        relations = parse_goal(context)
        weights = relation_weights(relations) if len(relations) == len(outcome.relations) else [1.0] * len(outcome.relations)
        unsatisfied = float(sum(w for ok, w in zip(outcome.relations, weights, strict=True) if not ok))
        if not self.shaping or outcome.centres is None:
            return unsatisfied
        index = {n: i for i, n in enumerate(outcome.object_names)}
        c = np.asarray(outcome.centres)
        dist = 0.0
        for r, ok in zip(relations, outcome.relations, strict=False):
            if ok or r.subject not in index or r.reference not in index:
                continue
            a, b = c[index[r.subject]], c[index[r.reference]]
            if r.kind == ON_TOP_OF:
                dist += float(np.hypot(*(a[:2] - b[:2])))
            else:
                gap = (b[0] - a[0]) if r.kind == LEFT_OF else (a[0] - b[0])
                dist += max(0.0, self.margin - gap)
        return unsatisfied + self.shaping * dist

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """Scores ``[N]`` = −energy."""
        self.check_grad_request(need_grad)
        return ScoreOutput(torch.tensor([-self.energy(context, c) for c in candidates], dtype=torch.float32))

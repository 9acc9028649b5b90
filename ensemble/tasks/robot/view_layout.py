"""Goals as photos: one camera view scored by how closely its segmented layout matches a goal photo.

The paper's second goal form is an image of the desired arrangement. One instance judges one camera:
it segments the goal photo taken from that camera (once per photo) and each candidate view, and sums
over the objects the distance between their mask centroids in the two images (image widths, capped),
with a fixed penalty when an object is seen in one image and not the other. A camera without a goal
photo has no opinion (energy 0), so one photo from any camera gives one judging view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.tasks.robot.segmenters import Segmenter, make_segmenter
from ensemble.tasks.robot.spatial import MaskStats
from ensemble.tasks.robot.world_model import Outcome

MISSING = 0.5
"""Energy of an object seen in only one of the goal photo and the candidate view."""
CAP = 0.3
"""Centroid distances (image widths) are capped here: far is far."""


class ViewLayoutScorer(Scorer):
    """Energy = summed centroid distance between the goal photo's and the candidate's object masks.

    Args:
        camera: the camera this scorer looks through; the context's ``goal_views[camera]`` is its photo.
        segmenter: as for :class:`~ensemble.tasks.robot.view_relations.ViewRelationsScorer` (default the
            learned SegFormer); goal photo and candidates are segmented alike.
    """

    modality = "views"

    def __init__(self, camera: str = "front", segmenter: str | Segmenter = "learned") -> None:
        self.camera = camera
        self.segmenter = make_segmenter(segmenter)
        self._goal_key: Any = None
        self._goal: dict[str, MaskStats | None] = {}

    def goal_layout(self, photo: np.ndarray, names: list[str]) -> dict[str, MaskStats | None]:
        """Mask statistics of every named object in the goal photo (cached for the same photo)."""
        key = (id(photo), tuple(names))
        if key != self._goal_key:
            outcome = Outcome(views={self.camera: photo}, object_names=list(names))
            masks = self.segmenter.segment_many([outcome], self.camera)[0]
            self._goal = {n: MaskStats.of(masks[n]) if n in masks else None for n in names}
            self._goal_key = key
        return self._goal

    def energies(self, context: Any, outcomes: list[Outcome]) -> list[float]:
        """Layout distance of every outcome to the goal photo (0 for all when this camera has none)."""
        photo = (context or {}).get("goal_views", {}).get(self.camera) if isinstance(context, dict) else None
        if photo is None or not outcomes:
            return [0.0] * len(outcomes)
        names = [n.lower() for n in outcomes[0].object_names]
        goal = self.goal_layout(np.asarray(photo, dtype=np.uint8), names)
        out = []
        for masks in self.segmenter.segment_many(list(outcomes), self.camera):
            e = 0.0
            for name, g in goal.items():
                c = MaskStats.of(masks[name]) if name in masks else None
                if g is None and c is None:
                    continue
                if g is None or c is None:
                    e += MISSING
                    continue
                e += min(float(np.hypot(g.cx - c.cx, g.cy - c.cy)), CAP) / CAP
            out.append(e)
        return out

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """Scores ``[N]`` = −layout energy of each :class:`~ensemble.tasks.robot.world_model.Outcome`."""
        self.check_grad_request(need_grad)
        return ScoreOutput(torch.tensor([-e for e in self.energies(context, list(candidates))], dtype=torch.float32))

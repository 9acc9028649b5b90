"""Where the objects are, from what the cameras show: segmented views + camera calibration → table positions.

The planner's object-centric proposals ("put A where B is") need object positions. They are estimated
here from the current camera images only, never read from the simulator's state:

1. segment each camera's view (the system's segmenter: learned from RGB, colour rules, or the
   simulator's render as an upper bound);
2. cast a ray through each object's mask centroid (pinhole model from the camera calibration);
3. with two or more views, the point closest to all of an object's rays (least squares) is its
   position; with one view, the ray meets the plane at the objects' typical centre height.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ensemble.tasks.robot.segmenters import Segmenter, make_segmenter
from ensemble.tasks.robot.world_model import Outcome

CENTRE_HEIGHT = 0.03
"""Height (metres) at which a single view's ray is cut: about the centre of a mug or bowl on the table."""
MIN_PIXELS = 3
"""Masks smaller than this are not used (too noisy to locate from)."""


def pixel_rays(calib: dict[str, Any], uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays through image points.

    Args:
        calib: one camera's ``{"pos", "rot", "fovy", "width", "height"}`` (``rot`` columns: the camera's x
            = image right, y = image up, z = backwards, in the world frame).
        uv: ``(N, 2)`` pixel coordinates (column, row; row 0 at the top), pixel centres at ``+0.5``.

    Returns:
        ``(origin (3,), directions (N, 3))``, directions of unit length.
    """
    w, h = calib["width"], calib["height"]
    f = 0.5 * h / np.tan(np.deg2rad(calib["fovy"]) / 2)
    uv = np.atleast_2d(np.asarray(uv, dtype=np.float64))
    local = np.column_stack([(uv[:, 0] - w / 2) / f, -(uv[:, 1] - h / 2) / f, -np.ones(len(uv))])
    d = local @ np.asarray(calib["rot"]).T
    return np.asarray(calib["pos"], dtype=np.float64), d / np.linalg.norm(d, axis=1, keepdims=True)


def triangulate(origins: list[np.ndarray], directions: list[np.ndarray], height: float = CENTRE_HEIGHT) -> np.ndarray:
    """The 3-D point nearest a set of rays; one ray: where it meets the plane ``z = height``."""
    if len(origins) == 1:
        o, d = origins[0], directions[0]
        t = (height - o[2]) / d[2] if abs(d[2]) > 1e-9 else 0.0
        return o + t * d
    a, b = np.zeros((3, 3)), np.zeros(3)
    for o, d in zip(origins, directions, strict=True):
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ o
    return np.linalg.solve(a, b)


class ObjectLocator:
    """Estimates objects' table positions from segmented camera views.

    Args:
        segmenter: finds each object's pixels (name or :class:`~ensemble.tasks.robot.segmenters.Segmenter`).
        calibration: camera name -> calibration (``WorldModel.calibration()``).
    """

    def __init__(self, segmenter: str | Segmenter, calibration: dict[str, dict[str, Any]]) -> None:
        self.segmenter = make_segmenter(segmenter)
        self.calibration = calibration

    def locate(self, outcome: Outcome, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """``{name: (3,) position}`` of every object seen in at least one view (others are absent)."""
        rays: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for camera in outcome.cameras:
            if camera not in self.calibration:
                continue
            for name, mask in self.segmenter.segment(outcome, camera).items():
                ys, xs = np.nonzero(mask)
                if xs.size < MIN_PIXELS or (names is not None and name not in names):
                    continue
                origin, d = pixel_rays(self.calibration[camera], np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]))
                rays.setdefault(name, ([], []))
                rays[name][0].append(origin)
                rays[name][1].append(d[0])
        return {name: triangulate(o, d) for name, (o, d) in rays.items()}

"""Spatial relations judged in one camera image: goal text → relations → an energy from object masks.

A goal is text such as ``"red bowl on top of blue mug; green mug left of red bowl"`` (the environment's
goal format; parsed here again because this package never imports ``envs``). In one camera view, each
named object is a pixel mask; a relation's energy is 0 when the masks show it, grows smoothly with how
far they are from showing it, and is a fixed partial value when an object is not visible:

* ``A left of B``: A's mask centroid is at least ``margin`` (image widths) left of B's;
  ``A right of B`` mirrored.
* ``A on top of B``: A is horizontally aligned with B (centroid distance in units of B's half
  width), A's centroid is above B's in the image, and A's lowest visible row lies within B's
  vertical extent or just above it (contact). A view from straight above sees only the alignment.

Every view judges in its own image frame: a side camera's "left" is skewed against the table's and a
camera in front confuses "behind" with "on top of", which is why the ensemble sums several views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LEFT_OF, RIGHT_OF, ON_TOP_OF = "left of", "right of", "on top of"
RELATION_TYPES: tuple[str, ...] = (LEFT_OF, RIGHT_OF, ON_TOP_OF)
_SYNONYMS = {
    "to the left of": LEFT_OF,
    "left of": LEFT_OF,
    "to the right of": RIGHT_OF,
    "right of": RIGHT_OF,
    "on top of": ON_TOP_OF,
    "on": ON_TOP_OF,
}
_PHRASE = re.compile(
    r"^(?:the\s+)?(?P<a>.+?)\s+(?:is\s+)?(?P<rel>"
    + "|".join(sorted(_SYNONYMS, key=len, reverse=True))
    + r")\s+(?:the\s+)?(?P<b>.+?)$"
)
MISSING_ENERGY = 0.5
"""Energy of a relation one of whose objects is not visible in the view (uninformative, not zero)."""


@dataclass(frozen=True)
class NamedRelation:
    """``subject kind reference`` between two object names, e.g. ("on top of", "red bowl", "blue mug")."""

    kind: str
    subject: str
    reference: str


def parse_goal(goal: str | dict | list) -> list[NamedRelation]:
    """Relations of a goal given as text, as ``{"goal": text}``, or as (kind, subject, reference) tuples.

    Raises:
        ValueError: naming the phrase that does not parse and the accepted relation words.
    """
    if isinstance(goal, dict):
        goal = goal.get("goal", "")
    if isinstance(goal, list | tuple):
        return [r if isinstance(r, NamedRelation) else NamedRelation(*r) for r in goal]
    phrases = [p.strip().rstrip(".").strip() for p in re.split(r"[;\n]", str(goal))]
    relations = []
    for phrase in (p for p in phrases if p):
        match = _PHRASE.match(re.sub(r"\s+", " ", phrase.lower()))
        if match is None:
            raise ValueError(
                f"cannot parse goal phrase {phrase!r}: expected '<object> <relation> <object>' with a "
                f"relation from {', '.join(_SYNONYMS)}"
            )
        relations.append(NamedRelation(_SYNONYMS[match.group("rel")], match.group("a"), match.group("b")))
    if not relations:
        raise ValueError(f"empty goal {goal!r}: expected phrases like 'red bowl on top of blue mug'")
    return relations


@dataclass(frozen=True)
class MaskStats:
    """Where a mask lies in an image, in image-width units (x right, y down).

    Attributes:
        cx, cy: centroid.
        left, right, top, bottom: bounding box.
        pixels: number of pixels.
    """

    cx: float
    cy: float
    left: float
    right: float
    top: float
    bottom: float
    pixels: int

    @classmethod
    def of(cls, mask: np.ndarray, min_pixels: int = 2) -> MaskStats | None:
        """Statistics of a boolean (H, W) mask; ``None`` when fewer than ``min_pixels`` are set."""
        ys, xs = np.nonzero(mask)
        if xs.size < min_pixels:
            return None
        w = float(mask.shape[1])
        return cls(
            float(xs.mean() + 0.5) / w,
            float(ys.mean() + 0.5) / w,
            float(xs.min()) / w,
            float(xs.max() + 1) / w,
            float(ys.min()) / w,
            float(ys.max() + 1) / w,
            int(xs.size),
        )


def relation_energy(
    kind: str, a: MaskStats | None, b: MaskStats | None, margin: float = 0.04, top_down: bool = False
) -> float:
    """Energy of one relation in one view (0 = shown; about 1 = clearly not shown).

    Args:
        kind: one of :data:`RELATION_TYPES`.
        a: the subject's mask statistics (``None`` when not visible).
        b: the reference's mask statistics.
        margin: left/right margin in image widths.
        top_down: the camera looks straight down, so "on top of" is judged by alignment only.
    """
    if kind not in RELATION_TYPES:
        raise ValueError(f"unknown relation {kind!r}; valid relations: {', '.join(RELATION_TYPES)}")
    if a is None or b is None:
        # A hidden reference under a visible subject is what "on top of" looks like from above.
        if kind == ON_TOP_OF and a is not None and top_down:
            return 0.25 * MISSING_ENERGY
        return MISSING_ENERGY
    if kind in (LEFT_OF, RIGHT_OF):
        gap = (b.cx - a.cx) if kind == LEFT_OF else (a.cx - b.cx)
        return float(np.clip((margin - gap) / 0.2, 0.0, 1.5))
    half = max(0.5 * (b.right - b.left), 1e-3)
    align = min(abs(a.cx - b.cx) / half, 3.0) / 3.0
    if top_down:
        align_y = min(abs(a.cy - b.cy) / half, 3.0) / 3.0
        return float(0.5 * align + 0.5 * align_y)
    above = float(np.clip((a.cy - b.cy) / 0.05, 0.0, 1.0))  # subject's centroid must be higher
    contact_gap = b.top - 0.01 - a.bottom if a.bottom < b.top - 0.01 else max(0.0, a.bottom - b.cy)
    contact = float(np.clip(contact_gap / 0.05, 0.0, 1.0))
    return float(0.5 * align + 0.25 * above + 0.25 * contact)


def relation_weights(relations: list[NamedRelation]) -> list[float]:
    """Order-aware weights: an "on top of" relation weighs 1 + the number of goal relations stacked on it.

    Building a stack top-first is undone when its base is moved, so a one-step planner must prefer the
    base: with "A on top of B; B on top of C", "B on top of C" weighs 2 and "A on top of B" weighs 1.
    """
    support = {r.subject: r.reference for r in relations if r.kind == ON_TOP_OF}

    def above(name: str, seen: frozenset = frozenset()) -> int:
        on_it = [s for s, ref in support.items() if ref == name and s not in seen]
        return sum(1 + above(s, seen | {name}) for s in on_it)

    return [1.0 + above(r.subject) if r.kind == ON_TOP_OF else 1.0 for r in relations]

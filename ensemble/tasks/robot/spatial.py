"""Spatial relations judged in one camera image: goal text → relations → an energy from object masks.

A goal is a list of named relations ``(kind, subject, reference)``, e.g. ``("on top of", "red bowl",
"blue mug")``. Goal *text* has one grammar, the environment's (``envs.relations``): the environment
parses it at reset and reports the relations (``info["goal_relations"]`` with ``info["object_names"]``);
:func:`named_relations` turns that report into the relations judged here. In one camera view, each
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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LEFT_OF, RIGHT_OF, ON_TOP_OF = "left of", "right of", "on top of"
RELATION_TYPES: tuple[str, ...] = (LEFT_OF, RIGHT_OF, ON_TOP_OF)
MISSING_ENERGY = 0.5
"""Energy of a relation one of whose objects is not visible in the view (uninformative, not zero)."""


@dataclass(frozen=True)
class NamedRelation:
    """``subject kind reference`` between two object names, e.g. ("on top of", "red bowl", "blue mug")."""

    kind: str
    subject: str
    reference: str


def named_relations(info: dict) -> list[NamedRelation]:
    """The goal of an environment report (``goal_relations`` as (kind, subject index, reference index)
    and ``object_names``) as named relations."""
    names = [str(n).lower() for n in info["object_names"]]
    return [NamedRelation(str(k), names[int(a)], names[int(b)]) for k, a, b in info["goal_relations"]]


def parse_goal(goal: dict | list | tuple) -> list[NamedRelation]:
    """The relations of a goal context: ``{"relations": [(kind, subject, reference), …]}`` (as every robot
    item and solver context carries) or the list itself.

    Raises:
        ValueError: for goal text (the environment parses text, see :func:`named_relations`) or an
            unknown relation kind.
    """
    if isinstance(goal, dict):
        if "relations" not in goal:
            raise ValueError(f"a robot context needs 'relations' (named goal relations), got keys {sorted(goal)}; "
                             "goal text is parsed by the environment at reset (info['goal_relations'])")
        goal = goal["relations"]
    if isinstance(goal, str):
        raise ValueError(f"goal text {goal!r} must be parsed by the environment (reset(options={{'goal': text}})); "
                         "scorers take named relations")
    relations = [r if isinstance(r, NamedRelation) else NamedRelation(*r) for r in goal]
    bad = [r.kind for r in relations if r.kind not in RELATION_TYPES]
    if bad:
        raise ValueError(f"unknown relation(s) {bad}; valid relations: {', '.join(RELATION_TYPES)}")
    if not relations:
        raise ValueError("empty goal: expected at least one relation")
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
    def of(cls, mask: np.ndarray, min_pixels: int = 2, largest_component: bool = False) -> MaskStats | None:
        """Statistics of a boolean (H, W) mask; ``None`` when fewer than ``min_pixels`` are set.

        ``largest_component``: keep only the mask's largest 4-connected component, so stray pixels a
        learned segmenter gives an object elsewhere in the image (e.g. the blue mug's label on part of
        the blue bowl) do not drag its centroid and bounding box.
        """
        if largest_component:
            mask = largest_connected(mask)
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


def largest_connected(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean (H, W) mask (the mask itself when it has at most one)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return np.asarray(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


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


HIDDEN_RULES: tuple[str, ...] = ("always", "seen", "beneath", "off")
"""When a view takes an object it does not show to be the hidden base of a goal stack (:func:`fill_hidden`):
``always`` (whenever the goal stacks a shown object on it), ``seen`` (only when another view shows the
object), ``beneath`` (only when another side view shows it beneath that object: :func:`seen_beneath`),
``off`` (never)."""


def hidden_rule(value: bool | str) -> str:
    """A hidden-base rule of :data:`HIDDEN_RULES` (``True``: ``"always"``,
    ``False``: ``"off"``).

    Raises:
        ValueError: for any other value.
    """
    if isinstance(value, bool):
        return "always" if value else "off"
    if value not in HIDDEN_RULES:
        raise ValueError(f"hidden_under_stack={value!r} must be one of {', '.join(HIDDEN_RULES)} (or a bool)")
    return value


def hidden_bases(stats: dict[str, MaskStats | None], relations: list[NamedRelation]) -> dict[str, str]:
    """Objects a view does not show on which the goal stacks an object the view does show.

    Follows "on top of" chains upward: with "A on top of B; B on top of C" and only A shown, both B and
    C map to A (they would lie right beneath it).

    Args:
        stats: object name -> its mask statistics in this view (``None`` or absent: not seen).
        relations: the goal.

    Returns:
        hidden object name -> name of the nearest shown object stacked above it by the goal.
    """
    above = {r.reference: r.subject for r in relations if r.kind == ON_TOP_OF}
    out = {}
    for name in sorted({n for r in relations for n in (r.subject, r.reference)}):
        if stats.get(name) is not None:
            continue
        seen, cur = {name}, above.get(name)
        while cur is not None and cur not in seen and stats.get(cur) is None:
            seen.add(cur)
            cur = above.get(cur)
        if cur is not None and cur not in seen:
            out[name] = cur
    return out


def fill_hidden(
    stats: dict[str, MaskStats | None], relations: list[NamedRelation], confirmed: Callable[[str, str], bool] | None = None,
) -> dict[str, MaskStats | None]:
    """Stand in for objects the view does not show with the goal object stacked on them.

    A finished stack hides its lower objects from a camera above it (the top view of "A on top of B"
    shows only A). An object with no mask in this view whose goal puts another object on top of it
    (directly or through a chain of "on top of") is judged where the nearest visible object of that
    chain is (:func:`hidden_bases`): it would lie right beneath it. Objects with a mask, or with no
    visible object stacked on them by the goal, are left as they are.

    Args:
        stats: object name -> its mask statistics in this view (``None`` or absent: not seen).
        relations: the goal.
        confirmed: ``(hidden, upper) -> bool``, the evidence that ``hidden`` is really under ``upper``
            (e.g. another view shows it there); ``None``: always assumed. A segmentation miss and an
            occlusion look the same in one view, so without evidence a missed object of an unfinished
            stack is judged finished.

    Returns:
        A copy of ``stats`` with the hidden stacked objects filled in.
    """
    out = dict(stats)
    for name, upper in hidden_bases(stats, relations).items():
        if confirmed is None or confirmed(name, upper):
            out[name] = stats[upper]
    return out


def seen_beneath(upper: MaskStats | None, lower: MaskStats | None) -> bool:
    """Whether a side view shows ``lower`` beneath ``upper``: both seen, ``upper``'s centroid within
    ``lower``'s horizontal extent and higher in the image than ``lower``'s."""
    if upper is None or lower is None:
        return False
    return lower.left <= upper.cx <= lower.right and upper.cy < lower.cy


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

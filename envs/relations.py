"""Spatial relations between objects: evaluation, goal text, and satisfiable goal sampling.

Three relation types, judged in the world frame as seen from the ``front`` camera (``x`` to the
right, ``y`` away from the camera, ``z`` up):

* ``"A left of B"``: A's centre is more than ``margin`` metres to the left of B's (``x_A < x_B - margin``).
* ``"A right of B"``: ``x_A > x_B + margin``.
* ``"A on top of B"``: A rests directly on B: A's centre lies within the wider of the two footprints
  (horizontal distance < max(r_A, r_B)) and A's lowest point is within ``z_tol`` of B's highest point.

Goal text is a ``;``-separated list of phrases ``"<colour> <kind> <relation> <colour> <kind>"``, e.g.
``"red bowl on top of blue mug; green mug left of red bowl; yellow bowl right of green mug"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LEFT_OF, RIGHT_OF, ON_TOP_OF = "left of", "right of", "on top of"
RELATION_TYPES: tuple[str, ...] = (LEFT_OF, RIGHT_OF, ON_TOP_OF)
# Accepted spellings in goal text -> canonical relation type (longest first when matching).
_SYNONYMS: dict[str, str] = {
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
LEFT_RIGHT_MARGIN = 0.04
ON_TOP_Z_TOL = 0.012


@dataclass(frozen=True)
class Relation:
    """One spatial relation ``subject <kind> reference`` between two object indices.

    Attributes:
        kind: one of :data:`RELATION_TYPES`.
        subject: index of the object the relation is about (the "A" in "A left of B").
        reference: index of the other object.
    """

    kind: str
    subject: int
    reference: int

    def __post_init__(self) -> None:
        if self.kind not in RELATION_TYPES:
            raise ValueError(f"unknown relation {self.kind!r}; valid relations: {', '.join(RELATION_TYPES)}")
        if self.subject == self.reference:
            raise ValueError(f"a relation needs two different objects, got {self.subject} twice")

    def text(self, names: list[str] | tuple[str, ...]) -> str:
        """The relation as a goal phrase, e.g. ``"red bowl on top of blue mug"``."""
        return f"{names[self.subject]} {self.kind} {names[self.reference]}"

    def as_tuple(self) -> tuple[str, int, int]:
        """Plain ``(kind, subject, reference)``, for passing across package boundaries."""
        return (self.kind, int(self.subject), int(self.reference))


@dataclass(frozen=True)
class ObjectGeometry:
    """Where the objects are, as needed to judge relations.

    Attributes:
        centres: (N, 3) object centres in metres.
        bottoms: (N,) lowest z of each object.
        tops: (N,) highest z of each object.
        radii: (N,) footprint radius of each object.
    """

    centres: np.ndarray
    bottoms: np.ndarray
    tops: np.ndarray
    radii: np.ndarray

    @classmethod
    def upright(cls, centres: np.ndarray, radii: np.ndarray, half_heights: np.ndarray) -> ObjectGeometry:
        """Geometry of upright cylinders from their centres (N, 3), radii (N,) and half heights (N,)."""
        centres = np.asarray(centres, dtype=np.float64)
        half = np.asarray(half_heights, dtype=np.float64)
        return cls(centres, centres[:, 2] - half, centres[:, 2] + half, np.asarray(radii, dtype=np.float64))


def holds(
    rel: Relation, geom: ObjectGeometry, margin: float = LEFT_RIGHT_MARGIN, z_tol: float = ON_TOP_Z_TOL
) -> bool:
    """Whether ``rel`` holds for objects placed as in ``geom`` (see the module docstring)."""
    a, b = rel.subject, rel.reference
    dx = geom.centres[a, 0] - geom.centres[b, 0]
    if rel.kind == LEFT_OF:
        return bool(dx < -margin)
    if rel.kind == RIGHT_OF:
        return bool(dx > margin)
    horizontal = float(np.hypot(dx, geom.centres[a, 1] - geom.centres[b, 1]))
    resting = abs(geom.bottoms[a] - geom.tops[b]) < z_tol
    return bool(horizontal < max(geom.radii[a], geom.radii[b]) and resting)


def evaluate(
    relations: list[Relation], geom: ObjectGeometry, margin: float = LEFT_RIGHT_MARGIN
) -> list[bool]:
    """Which of ``relations`` hold, in order."""
    return [holds(r, geom, margin) for r in relations]


def format_goal(relations: list[Relation], names: list[str] | tuple[str, ...]) -> str:
    """Goal text: the relations' phrases joined by ``"; "``."""
    return "; ".join(r.text(names) for r in relations)


def parse_goal(text: str, names: list[str] | tuple[str, ...]) -> list[Relation]:
    """Parse goal text into relations among the objects called ``names``.

    Phrases are separated by ``;`` or new lines; case, a leading "the", "is" and a trailing full stop
    are ignored. Accepted relation words: "left of", "to the left of", "right of", "to the right of",
    "on top of", "on".

    Args:
        text: e.g. ``"red bowl on top of blue mug; green mug left of red bowl"``.
        names: the object names of the scene, index i naming object i.

    Raises:
        ValueError: naming the phrase that does not parse, and the valid object names and relations.
    """
    lookup = {n.lower(): i for i, n in enumerate(names)}
    phrases = [p.strip().rstrip(".").strip() for p in re.split(r"[;\n]", text)]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise ValueError(f"empty goal {text!r}; {_valid_words(names)}")
    relations = []
    for phrase in phrases:
        match = _PHRASE.match(re.sub(r"\s+", " ", phrase.lower()))
        if match is None:
            raise ValueError(
                f"cannot parse goal phrase {phrase!r}: expected '<object> <relation> <object>'; "
                f"{_valid_words(names)}"
            )
        ends = []
        for part in ("a", "b"):
            name = match.group(part).strip()
            if name not in lookup:
                raise ValueError(f"unknown object {name!r} in goal phrase {phrase!r}; {_valid_words(names)}")
            ends.append(lookup[name])
        if ends[0] == ends[1]:
            raise ValueError(f"goal phrase {phrase!r} relates an object to itself")
        relations.append(Relation(_SYNONYMS[match.group("rel")], ends[0], ends[1]))
    return relations


def _valid_words(names: list[str] | tuple[str, ...]) -> str:
    return f"valid objects: {', '.join(names)}; valid relations: {', '.join(RELATION_TYPES)}"


def arrangement_facts(columns: list[list[int]]) -> list[Relation]:
    """Every relation that holds in an arrangement of stacks, one per related pair of objects.

    Args:
        columns: stacks ordered left to right, each listed bottom to top.

    Returns:
        ``"on top of"`` for every directly stacked pair, then ``"left of"`` for every pair of objects
        in different stacks (the left one as subject).
    """
    facts = [Relation(ON_TOP_OF, col[k + 1], col[k]) for col in columns for k in range(len(col) - 1)]
    for i, left in enumerate(columns):
        for right in columns[i + 1 :]:
            facts.extend(Relation(LEFT_OF, a, b) for a in left for b in right)
    return facts


def sample_goal(
    rng: np.random.Generator,
    num_objects: int,
    num_relations: int = 3,
    stack_prob: float = 0.45,
    max_stack: int = 3,
    on_top_prob: float = 0.8,
) -> list[Relation]:
    """Sample a satisfiable goal of ``num_relations`` relations on distinct pairs of objects.

    A random target arrangement (stacks placed left to right) is drawn first and the goal is a subset
    of what holds in it, so the goal is satisfiable by construction. Each stacked pair enters the goal
    with probability ``on_top_prob``; the rest are left/right facts, each randomly phrased as "left of"
    or as the mirrored "right of".

    Raises:
        ValueError: if ``num_relations`` exceeds the number of object pairs.
    """
    pairs = num_objects * (num_objects - 1) // 2
    if not 1 <= num_relations <= pairs:
        raise ValueError(
            f"num_relations must be in [1, {pairs}] for {num_objects} objects, got {num_relations}"
        )
    for _ in range(1000):
        columns: list[list[int]] = []
        for obj in rng.permutation(num_objects).tolist():
            open_cols = [c for c in columns if len(c) < max_stack]
            if open_cols and rng.random() < stack_prob:
                open_cols[int(rng.integers(len(open_cols)))].append(obj)
            else:
                columns.append([obj])
        facts = arrangement_facts(columns)
        if len(facts) < num_relations:
            continue
        on_top = [f for f in facts if f.kind == ON_TOP_OF and rng.random() < on_top_prob]
        others = [f for f in facts if f.kind != ON_TOP_OF]
        order = rng.permutation(len(others)).tolist()
        chosen = (on_top + [others[i] for i in order])[:num_relations]
        if len(chosen) < num_relations:
            continue
        chosen = [chosen[i] for i in rng.permutation(len(chosen)).tolist()]
        return [
            Relation(RIGHT_OF, f.reference, f.subject) if f.kind == LEFT_OF and rng.random() < 0.5 else f
            for f in chosen
        ]
    raise RuntimeError("could not sample a goal; this is a bug")  # pragma: no cover

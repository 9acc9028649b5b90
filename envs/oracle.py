"""A scripted planner that builds a goal arrangement with pick-and-place moves.

It reads only the goal and where the objects are now, so it shows that sampled goals are reachable
with the environment's primitive, and serves as an upper-bound baseline for planners.
"""

from __future__ import annotations

import numpy as np

from envs.relations import LEFT_OF, ON_TOP_OF, ObjectGeometry, Relation
from envs.scene import WORK_X, WORK_Y

Move = tuple[int, float, float]


def goal_columns(relations: list[Relation], num_objects: int) -> list[list[int]]:
    """Stacks (bottom to top) implied by a goal's "on top of" relations, ordered to satisfy left/right.

    Objects the goal does not mention are left out.

    Raises:
        ValueError: if the relations cannot be arranged as stacks side by side (an object on two
            others, two objects on one, a cycle, or left/right between objects of one stack).
    """
    support: dict[int, int] = {}
    above: dict[int, int] = {}
    for r in relations:
        if r.kind != ON_TOP_OF:
            continue
        if r.subject in support or r.reference in above:
            raise ValueError(f"the oracle stacks one object on one other; goal has a conflict at {r}")
        support[r.subject], above[r.reference] = r.reference, r.subject
    mentioned = sorted({o for r in relations for o in (r.subject, r.reference)})
    columns = []
    for base in (o for o in mentioned if o not in support):
        column = [base]
        while column[-1] in above:
            column.append(above[column[-1]])
        columns.append(column)
    if sum(map(len, columns)) != len(mentioned):
        raise ValueError("the goal's 'on top of' relations form a cycle")
    col_of = {o: k for k, col in enumerate(columns) for o in col}
    before: set[tuple[int, int]] = set()
    for r in relations:
        if r.kind == ON_TOP_OF:
            continue
        left, right = (r.subject, r.reference) if r.kind == LEFT_OF else (r.reference, r.subject)
        if col_of[left] == col_of[right]:
            raise ValueError(f"{r} relates two objects of one stack left/right")
        before.add((col_of[left], col_of[right]))
    order = _toposort(len(columns), before)
    return [columns[k] for k in order]


def _toposort(n: int, before: set[tuple[int, int]]) -> list[int]:
    indegree = [sum(1 for _, b in before if b == k) for k in range(n)]
    ready, order = [k for k in range(n) if indegree[k] == 0], []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for a, b in before:
            if a == k:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    if len(order) != n:
        raise ValueError("the goal's left/right relations contradict each other")
    return order


def oracle_plan(relations: list[Relation], geom: ObjectGeometry, spacing: float = 0.15) -> list[Move]:
    """Pick-and-place moves ``(object, x, y)`` that build the goal from the current placement.

    Every object the goal mentions is moved once, bottom layers first; stacks stand side by side
    ``spacing`` apart in x, in the order the left/right relations ask. Each stack's y is chosen so that
    no object still standing there when the stack is started would be in the way.

    Args:
        relations: the goal.
        geom: where the objects are now (centres, radii).
        spacing: distance in x between neighbouring stacks, in metres.

    Raises:
        ValueError: if the goal cannot be arranged as stacks, or no free spots are found.
    """
    num_objects = len(geom.radii)
    columns = goal_columns(relations, num_objects)
    moves_order = [
        col[level] for level in range(max(map(len, columns))) for col in columns if level < len(col)
    ]
    moved_at = {obj: t for t, obj in enumerate(moves_order)}
    width = spacing * (len(columns) - 1)
    if width > 2 * WORK_X:
        raise ValueError(f"{len(columns)} stacks do not fit the workspace at spacing {spacing}")
    slack = WORK_X - width / 2
    for offset in sorted(np.linspace(-slack, slack, 7), key=abs):
        xs = offset + spacing * np.arange(len(columns)) - width / 2
        ys = [_free_y(col, float(x), geom, moved_at) for col, x in zip(columns, xs, strict=True)]
        if all(y is not None for y in ys):
            spot = {o: (float(x), float(y)) for col, x, y in zip(columns, xs, ys, strict=True) for o in col}
            return [(obj, *spot[obj]) for obj in moves_order]
    raise ValueError("no free spots for the goal's stacks; objects are in the way")


def _free_y(column: list[int], x: float, geom: ObjectGeometry, moved_at: dict[int, int]) -> float | None:
    """A y for a stack at ``x`` clear of every object still standing when the stack's base is placed."""
    start = moved_at[column[0]]
    blockers = [
        j for j in range(len(geom.radii)) if j != column[0] and moved_at.get(j, len(moved_at)) > start
    ]
    reach = max(geom.radii[o] for o in column) + 0.012
    for y in sorted(np.linspace(-WORK_Y, WORK_Y, 21), key=abs):
        if all(
            np.hypot(x - geom.centres[j, 0], y - geom.centres[j, 1]) > reach + geom.radii[j] for j in blockers
        ):
            return float(y)
    return None

"""Robot manipulation: arrange coloured mugs and bowls to satisfy three spatial relations.

Glue only. Items are seeded three-relation goals sampled by the tabletop environment (named by its
gymnasium id, never imported); the generator is MPC over the simulator (``"mpc"``); the scorers are one
segmentation-based relation scorer per camera view (``"view_relations"``), summed as in the paper; the
answer is whether the executed episode reached the goal; the metric is success.
"""

from __future__ import annotations

from typing import Any

from ensemble.contracts import Item, Task

SPLIT_OFFSETS = {"test": 0, "train": 1_000_000}
"""Scene seeds of a split start here (so tuning never sees test scenes)."""


class RobotTask(Task):
    """Seeded goals for the tabletop environment.

    Args:
        env_id: gymnasium id (``"module:Id"``) of the environment the goals are sampled in.
        env_kwargs: keyword arguments for the environment.
    """

    name = "robot"

    def __init__(self, env_id: str = "envs:Tabletop-Relations-v0", env_kwargs: dict[str, Any] | None = None) -> None:
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})

    def spec(self) -> dict[str, Any]:
        """The task's settings (part of an evaluation's config hash)."""
        return {"name": self.name, "env_id": self.env_id, "env_kwargs": self.env_kwargs}

    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        """``n`` goals; item ``i`` is the goal the environment samples from scene seed ``seed·10⁴ + i``.

        Each context is ``{"goal": text, "scene_seed": s, "objects": [names]}``; the target is ``True``
        (the goal should be reached).
        """
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split={split!r} is not one of {', '.join(SPLIT_OFFSETS)}")
        import gymnasium as gym

        env = gym.make(self.env_id, disable_env_checker=True, **self.env_kwargs).unwrapped
        try:
            items = []
            for i in range(n):
                scene_seed = SPLIT_OFFSETS[split] + seed * 10_000 + i
                env.reset(seed=scene_seed)
                context = {"goal": env.goal_text, "scene_seed": scene_seed, "objects": list(env.object_names)}
                items.append(Item(f"robot-{split}-{scene_seed}", context, True, {"split": split}))
            return items
        finally:
            env.close()

    def answer(self, output: Any, item: Item) -> bool:
        """Whether the executed episode reached the goal."""
        return bool(output.get("success")) if isinstance(output, dict) else False

    def metric(self, answer: Any, item: Item) -> float:
        """Success: 1.0 when the goal was reached."""
        return float(bool(answer))


def view_scorers(cameras: list[str] | tuple[str, ...], segmenter: str = "simulator") -> dict[str, Any]:
    """One ``view_relations`` scorer per camera, named ``view_<camera>`` (the paper's per-view ensemble)."""
    from ensemble.registry import SCORERS

    return {f"view_{c}": SCORERS.make("view_relations", camera=c, segmenter=segmenter) for c in cameras}

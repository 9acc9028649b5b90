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
    default_n = 50
    #: A 4 MiB goal photo as base64 (``goal_photo.MAX_PHOTO_BYTES``) and the JSON around it.
    max_request_bytes = 4 * (4 * 2**20 // 3 + 1) + 65536

    def __init__(self, env_id: str = "envs:Tabletop-Relations-v0", env_kwargs: dict[str, Any] | None = None) -> None:
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})

    def spec(self) -> dict[str, Any]:
        """The task's settings (part of an evaluation's config hash)."""
        return {"name": self.name, "env_id": self.env_id, "env_kwargs": self.env_kwargs}

    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        """``n`` goals; item ``i`` is the goal the environment samples from scene seed ``seed·10⁴ + i``.

        Each context is ``{"goal": text, "relations": [(kind, subject, reference)], "scene_seed": s,
        "objects": [names]}`` (relations as the environment parsed them); the target is ``True`` (the goal
        should be reached).
        """
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split={split!r} is not one of {', '.join(SPLIT_OFFSETS)}")
        import gymnasium as gym

        from ensemble.tasks.robot.segformer import preload

        preload()  # before this process's first renderer (see segformer.preload)
        env = gym.make(self.env_id, disable_env_checker=True, **self.env_kwargs).unwrapped
        try:
            items = []
            for i in range(n):
                scene_seed = SPLIT_OFFSETS[split] + seed * 10_000 + i
                env.reset(seed=scene_seed)
                names = list(env.object_names)
                relations = [[r.kind, names[r.subject].lower(), names[r.reference].lower()] for r in env.goal]
                context = {"goal": env.goal_text, "relations": relations, "scene_seed": scene_seed, "objects": names}
                items.append(Item(f"robot-{split}-{scene_seed}", context, True, {"split": split, "index": i}))
            return items
        finally:
            env.close()

    def answer(self, output: Any, item: Item) -> bool:
        """Whether the executed episode reached the goal."""
        return bool(output.get("success")) if isinstance(output, dict) else False

    def metric(self, answer: Any, item: Item) -> float:
        """Success: 1.0 when the goal was reached."""
        return float(bool(answer))

    # -- evaluation and Serve ---------------------------------------------------------------------
    def settings_for(self, tiny: bool = False) -> dict[str, Any]:
        """Default :class:`~ensemble.tasks.robot.solver.RobotSettings` fields; ``tiny``: 32 px renders, a
        handful of rollouts, one step, an untrained tiny SegFormer."""
        if not tiny:
            return {}
        return {"candidates": 4, "iterations": 1, "max_steps": 1, "env_kwargs": {"width": 32, "height": 32},
                "segmenter_model": "tiny"}

    def build_solver(self, settings: dict[str, Any] | None = None) -> Any:
        """A :class:`~ensemble.tasks.robot.solver.RobotSolver` (environments open on first use)."""
        from ensemble.tasks.robot.solver import RobotSettings, RobotSolver

        return RobotSolver(self, RobotSettings(**(settings or {})))

    def table(self, rows: list[dict[str, Any]], systems: list[str]) -> str:
        """Success ± 95 % interval per system, mean steps and rollouts, seconds per episode."""
        from ensemble.tasks.robot.solver import robot_table

        return robot_table(rows, systems)

    def request_model(self) -> Any:
        """``POST /v1/robot``: ``{"goal", "scene_seed", "system", "seed", "goal_image_base64", "goal_camera"}``."""
        from ensemble.tasks.robot.serve import RobotRequest

        return RobotRequest

    def request_item(self, request: Any) -> tuple[Item, str, int]:
        """The item of a served goal (text parsed by the environment at reset; sampled when empty), with
        the uploaded goal photo as ``goal_views`` when there is one (``ValueError`` for a bad upload)."""
        from ensemble.tasks.robot.serve import request_photo, request_system

        system = request_system(request)
        context: dict[str, Any] = {"scene_seed": request.scene_seed, **({"goal": request.goal} if request.goal else {})}
        photo = request_photo(request)
        if photo is not None:
            context["goal_views"] = {request.goal_camera: photo}
        return Item(f"request-{request.scene_seed}", context, True, {}), system, request.seed

    def response(self, row: dict[str, Any]) -> dict[str, Any]:
        """The executed plan, success, relations, and the camera views of every step as a GIF."""
        from ensemble.tasks.robot.serve import robot_response

        return robot_response(row)


def view_scorers(
    cameras: list[str] | tuple[str, ...], segmenter: Any = "learned", margin: float | None = None,
    hidden_under_stack: bool | str = "beneath",
) -> dict[str, Any]:
    """One ``view_relations`` scorer per camera, named ``view_<camera>`` (the paper's per-view ensemble);
    ``margin``: their left/right margin in image widths (default: the scorer's); ``hidden_under_stack``:
    see :class:`~ensemble.tasks.robot.view_relations.ViewRelationsScorer`."""
    from ensemble.registry import SCORERS

    extra: dict[str, Any] = {"hidden_under_stack": hidden_under_stack}
    if margin is not None:
        extra["margin"] = margin
    return {f"view_{c}": SCORERS.make("view_relations", camera=c, segmenter=segmenter, **extra) for c in cameras}

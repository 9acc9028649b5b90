"""World models for model-predictive control: predict what the cameras will see after an action.

A :class:`WorldModel` can snapshot and restore its state, apply an action, and render every camera
view (RGB and/or a per-object segmentation). The default, :class:`SimulatorWorldModel`, is the
simulator itself: a gymnasium environment made *by id* (``"envs:Tabletop-Relations-v0"``; the
``module:id`` form imports the registering module, so this package never imports ``envs``) whose
``get_state`` / ``set_state`` clone the full physics state in microseconds. A learned model would
implement the same five methods.

Candidate rollouts go through a :class:`RolloutExecutor`: "restore this planning state, apply each
action sequence, render" — in-process by default (:class:`LocalExecutor`), sharded over Ray
environment actors by ``actors.env_runners``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RENDER_MODES = ("rgb", "segmentation", "both")


@dataclass
class Outcome:
    """What the world model predicts after one candidate action sequence: the camera views.

    Attributes:
        views: camera name -> (H, W, 3) uint8 RGB image (empty unless RGB was rendered).
        segmentation: camera name -> (H, W) int32 object index per pixel, -1 for background
            (empty unless segmentation was rendered).
        object_names: goal-text name of every object, index i naming object i ("red bowl", ...).
        relations: ground truth: which goal relations hold (privileged; only the oracle scorer and the
            metrics read it).
        centres: ground truth (N, 3) object centres in metres (privileged, as above).
        actions: the (H, 3) action sequence that led here.
    """

    views: dict[str, np.ndarray] = field(default_factory=dict)
    segmentation: dict[str, np.ndarray] = field(default_factory=dict)
    object_names: list[str] = field(default_factory=list)
    relations: list[bool] = field(default_factory=list)
    centres: np.ndarray | None = None
    actions: np.ndarray | None = None

    @property
    def cameras(self) -> list[str]:
        """Cameras this outcome has images for."""
        return list(self.views or self.segmentation)


class WorldModel(ABC):
    """Predicts the views after actions; snapshots make planning from one state repeatable."""

    #: Camera names, in order.
    cameras: tuple[str, ...] = ()

    @abstractmethod
    def reset(self, seed: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a scene from ``seed`` (``options`` as for the environment); returns its info."""

    @abstractmethod
    def snapshot(self) -> np.ndarray:
        """The full current state as a flat float64 vector (picklable, exact)."""

    @abstractmethod
    def restore(self, state: np.ndarray) -> None:
        """Return to a state from :meth:`snapshot`."""

    @abstractmethod
    def step(self, action: np.ndarray) -> dict[str, Any]:
        """Apply one action; returns the environment's info (relations, success, ...)."""

    @abstractmethod
    def render_views(self) -> dict[str, np.ndarray]:
        """Camera name -> (H, W, 3) uint8 image of the current state."""

    @abstractmethod
    def segment(self) -> dict[str, np.ndarray]:
        """Camera name -> (H, W) int object index per pixel (-1 background) of the current state."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Facts about the current state: "relations", "success", "object_names", "goal", ..."""

    def goal_photo(self) -> dict[str, np.ndarray]:
        """Camera name -> RGB image of the current scene arranged as the goal asks (goals given as photos)."""
        raise NotImplementedError(f"{type(self).__name__} cannot photograph goal arrangements")

    def step_frames(self, action: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Apply one action and return the views to show it (default: the views after it)."""
        self.step(action)
        return [self.render_views()]

    def calibration(self) -> dict[str, dict[str, Any]]:
        """Camera name -> ``{"pos", "rot", "fovy", "width", "height"}`` (see
        :func:`ensemble.tasks.robot.perception.pixel_rays`); needed to locate objects from the views."""
        raise NotImplementedError(f"{type(self).__name__} has no camera calibration")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (renderers)."""

    def outcome(self, render: str = "segmentation", actions: np.ndarray | None = None) -> Outcome:
        """The :class:`Outcome` of the current state, rendering ``render`` ("rgb", "segmentation", "both")."""
        if render not in RENDER_MODES:
            raise ValueError(f"render={render!r} is not one of {', '.join(RENDER_MODES)}")
        info = self.info()
        return Outcome(
            views=self.render_views() if render in ("rgb", "both") else {},
            segmentation=self.segment() if render in ("segmentation", "both") else {},
            object_names=list(info["object_names"]),
            relations=[bool(r) for r in info["relations"]],
            centres=info.get("centres"),
            actions=actions,
        )

    def rollout(self, state: np.ndarray, actions: np.ndarray, render: str = "segmentation") -> Outcome:
        """Restore ``state``, apply the ``(H, 3)`` action sequence, and render the outcome; an action whose
        object is NaN is no action (it pads a shorter plan)."""
        self.restore(state)
        actions = np.asarray(actions, dtype=np.float32).reshape(-1, 3)
        for action in actions:
            if np.isfinite(action[0]):
                self.step(action)
        return self.outcome(render, actions)


class SimulatorWorldModel(WorldModel):
    """The simulator as the world model: a gymnasium env made by id, cloned with get/set_state.

    Args:
        env_id: gymnasium id; the ``"module:Id"`` form imports the module that registers it.
        env_kwargs: extra keyword arguments for ``gymnasium.make`` (e.g. ``cameras``, ``width``).
    """

    def __init__(self, env_id: str = "envs:Tabletop-Relations-v0", **env_kwargs: Any) -> None:
        import gymnasium as gym

        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.env = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
        self.cameras = tuple(self.env.cameras)
        self._info: dict[str, Any] = {}

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Reset the environment with ``seed``; returns :meth:`info`."""
        self.env.reset(seed=int(seed), options=options)
        return self.info()

    def snapshot(self) -> np.ndarray:
        """``env.get_state()``."""
        return self.env.get_state()

    def restore(self, state: np.ndarray) -> None:
        """``env.set_state(state)``."""
        self.env.set_state(state)

    def step(self, action: np.ndarray) -> dict[str, Any]:
        """One pick-and-place step (physics only; no observation is rendered)."""
        env = self.env
        obj, x, y = env._decode(np.asarray(action, dtype=np.float32))
        env._pick_and_place(obj, x, y)
        env.elapsed_steps += 1
        return self.info()

    def render_views(self) -> dict[str, np.ndarray]:
        """RGB image per camera."""
        return self.env.render_views()

    def segment(self) -> dict[str, np.ndarray]:
        """Object-index segmentation per camera."""
        return {c: np.asarray(s, dtype=np.int32) for c, s in self.env.render_views(segmentation=True).items()}

    def goal_photo(self) -> dict[str, np.ndarray]:
        """The environment's photo of the goal arrangement (its scripted planner's), state unchanged."""
        views, _ = self.env.goal_photo()
        return views

    def step_frames(self, action: np.ndarray) -> list[dict[str, np.ndarray]]:
        """The views as the robot's gripper picks, places and parks (the environment's own frames)."""
        return self.env.pick_and_place_frames(np.asarray(action, dtype=np.float32))

    def calibration(self) -> dict[str, dict[str, Any]]:
        """The environment's camera intrinsics and extrinsics."""
        return self.env.camera_calibration()

    def info(self) -> dict[str, Any]:
        """Relations of the goal, success, object names, goal text, centres, steps taken."""
        env = self.env
        status = env.relation_status()
        return {
            "goal": env.goal_text,
            "relations": status,
            "success": bool(status) and all(status),
            "goal_relations": [r.as_tuple() for r in env.goal],
            "object_names": env.object_names,
            "elapsed_steps": env.elapsed_steps,
            "centres": np.asarray(env.object_geometry().centres, dtype=np.float64),
        }

    def close(self) -> None:
        """Close the environment (its renderers)."""
        self.env.close()


class RolloutExecutor(ABC):
    """Runs candidate rollouts from one planning state; implementations may shard them."""

    @abstractmethod
    def rollouts(self, state: np.ndarray, plans: Sequence[np.ndarray], render: str) -> list[Outcome]:
        """One :class:`Outcome` per ``(H, 3)`` plan, each rolled out from ``state``, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class LocalExecutor(RolloutExecutor):
    """Rollouts in this process on one world model (the default, and the debugging path).

    Args:
        world_model: the model to roll out on (its current state is clobbered).
    """

    def __init__(self, world_model: WorldModel) -> None:
        self.world_model = world_model

    def rollouts(self, state: np.ndarray, plans: Sequence[np.ndarray], render: str) -> list[Outcome]:
        """Roll every plan out sequentially."""
        return [self.world_model.rollout(state, plan, render) for plan in plans]

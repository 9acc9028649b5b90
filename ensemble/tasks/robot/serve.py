"""Serve request and response of the robot task (plain pydantic: validated without Ray).

A goal is text (or sampled from the scene seed), or a photo of the desired arrangement uploaded as
base64 (``goal_image_base64``, at most :data:`~ensemble.tasks.robot.goal_photo.MAX_PHOTO_BYTES`) with
the camera it was taken from; the photo is decoded and checked before any model runs, so a bad upload
is a 400 with the reason.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ensemble.tasks.robot.goal_photo import MAX_PHOTO_BYTES
from ensemble.tasks.robot.solver import DEFAULT_PLANNER

DEFAULT_SYSTEM = f"3views-{DEFAULT_PLANNER}"
"""The system of a request that names none (text goal)."""
DEFAULT_PHOTO_SYSTEM = f"3views-photo-{DEFAULT_PLANNER}"
"""The system of a photo-goal request that names none."""


class RobotRequest(BaseModel):
    """``POST /v1/robot``: reach a goal in a seeded scene; the goal as text or as a photo."""

    model_config = ConfigDict(extra="forbid")

    goal: StrictStr | None = Field(None, max_length=1000, description='e.g. "red bowl on top of blue mug; green mug '
                                   'left of red bowl" (parsed by the environment); empty: sampled from scene_seed')
    scene_seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="seed of the scene (objects and their places)")
    system: StrictStr | None = Field(None, max_length=64, description="a robot system, e.g. 3views-cem, 3views-random, "
                                     f"1view-cem, oracle-cem, 3views-photo-cem; default {DEFAULT_SYSTEM} "
                                     f"({DEFAULT_PHOTO_SYSTEM} with a goal photo)")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed (planner sampling)")
    goal_image_base64: StrictStr | None = Field(
        None, min_length=4, max_length=4 * (MAX_PHOTO_BYTES // 3 + 1),
        description="the goal as a photo of the desired arrangement (PNG/JPEG/…, base64, at most "
        f"{MAX_PHOTO_BYTES} bytes); needs a photo system. Success is still judged by the scene's goal relations")
    goal_camera: StrictStr = Field("front", min_length=1, max_length=32,
                                   description="the camera the goal photo was taken from (front, left, top, …)")


def request_photo(request: RobotRequest) -> Any:
    """The uploaded goal photo as an (H, W, 3) uint8 array, or ``None``; ``ValueError`` with the reason."""
    from ensemble.tasks.robot.goal_photo import read_photo

    if request.goal_image_base64 is None:
        return None
    try:
        data = base64.b64decode(request.goal_image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("goal_image_base64 is not valid base64") from None
    return read_photo(data)


def request_system(request: RobotRequest) -> str:
    """The system a request runs: its own, else the default for its goal form (the solver refuses a goal
    photo sent to a system that takes goal text)."""
    return request.system or (DEFAULT_PHOTO_SYSTEM if request.goal_image_base64 is not None else DEFAULT_SYSTEM)


def robot_response(row: dict[str, Any]) -> dict[str, Any]:
    """The executed plan (object, x, y per step), success, relations, the views as a base64 GIF."""
    extras = row["extras"]
    names = extras.get("object_names", [])
    plan = [{"object": names[int(round(a[0]))] if names else int(round(a[0])), "x": a[1], "y": a[2]}
            for a in extras["actions"]]
    return {"system": row["system"], "goal": extras["goal"], "success": bool(row["answer"]), "plan": plan,
            "relations": extras["relations"], "steps": extras["steps"], "rollouts": extras["rollouts"],
            "scorers": row["scorers"], "views_gif_b64": extras.get("frames_gif_b64"),
            "seconds": row["timings"]["seconds"], "config_hash": row["config_hash"]}

"""Serve request and response of the robot task (plain pydantic: validated without Ray)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class RobotRequest(BaseModel):
    """``POST /v1/robot``: reach a goal in a seeded scene."""

    model_config = ConfigDict(extra="forbid")

    goal: StrictStr | None = Field(None, max_length=1000, description='e.g. "red bowl on top of blue mug; green mug '
                                   'left of red bowl" (parsed by the environment); empty: sampled from scene_seed')
    scene_seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="seed of the scene (objects and their places)")
    system: StrictStr = Field("3views-cem", description="a robot system, e.g. 3views-cem, 1view-cem, oracle-cem")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed (planner sampling)")


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

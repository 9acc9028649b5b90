"""Serve request and response of the math task (plain pydantic: validated without Ray)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class MathRequest(BaseModel):
    """``POST /v1/math``: one word problem."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(min_length=1, max_length=4000, description="the word problem")
    system: StrictStr = Field("ensemble@1", description="<base>@<beam>: lm, a verifier name or ensemble; beam size")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed")


def math_response(row: dict[str, Any]) -> dict[str, Any]:
    """The response: solution text, the extracted answer, rounds, per-verifier moved tokens, seconds."""
    extras = row["extras"]
    return {"system": row["system"], "answer": row["answer"], "solution": extras["output"],
            "rounds": extras.get("rounds", 0), "moved": {n: s.get("moved", 0) for n, s in row["scorers"].items()},
            "tokens": extras.get("tokens"), "seconds": row["timings"]["seconds"], "config_hash": row["config_hash"]}

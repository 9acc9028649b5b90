"""Serve request and response of the video QA task (plain pydantic: validated without Ray).

The video is uploaded inside the JSON request as base64 text, capped at :data:`MAX_UPLOAD_BYTES`; the
upload is decoded and checked (readable, not empty, within the frame and resolution caps) before any
model runs, so a bad video is a 400 with the reason.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_UPLOAD_BYTES = 16 * 2**20
"""Largest video upload (decoded bytes)."""
MAX_UPLOAD_FRAMES = 3_000
"""Most frames an uploaded video may have (100 s at 30 fps)."""
MAX_UPLOAD_SIDE = 1920
"""Largest width or height of an uploaded video."""


class VideoQARequest(BaseModel):
    """``POST /v1/video_qa``: one question about one uploaded video (mp4/webm/GIF/image, base64)."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(min_length=1, max_length=500, description="the question about the video")
    video_base64: StrictStr = Field(min_length=4, max_length=4 * (MAX_UPLOAD_BYTES // 3 + 1),
                                    description=f"the video file, base64 (at most {MAX_UPLOAD_BYTES} bytes)")
    system: StrictStr = Field("ensemble@1", description="<base>@<beam>: lm, a CLIP name or ensemble; beam size")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed")


def upload_limits() -> Any:
    """The caps of an uploaded video."""
    from ensemble.tasks.video_qa.video import VideoLimits

    return VideoLimits(max_frames=MAX_UPLOAD_FRAMES, max_side=MAX_UPLOAD_SIDE, max_bytes=MAX_UPLOAD_BYTES)


def request_video(request: VideoQARequest) -> bytes:
    """The uploaded video's bytes, checked readable and within the caps (``ValueError`` otherwise)."""
    from ensemble.tasks.video_qa.video import read_video

    try:
        data = base64.b64decode(request.video_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("video_base64 is not valid base64") from None
    read_video(data, k=1, limits=upload_limits())  # raises VideoError (a ValueError) with the reason
    return data


def video_qa_response(row: dict[str, Any]) -> dict[str, Any]:
    """The response: answer, raw output, rounds, the rounds where CLIPs moved a token, per-CLIP counts."""
    extras = row["extras"]
    return {"system": row["system"], "answer": row["answer"], "output": extras["output"],
            "rounds": extras.get("rounds", 0), "moved_rounds": extras.get("moved_rounds", []),
            "moved": {n: s.get("moved", 0) for n, s in row["scorers"].items()}, "frames": extras.get("frames"),
            "seconds": row["timings"]["seconds"], "config_hash": row["config_hash"]}

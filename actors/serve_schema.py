"""Request schema and limits of the HTTP endpoint (plain pydantic: validated without Ray)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator


@dataclass
class ServeLimits:
    """Limits of the HTTP endpoint; a request beyond them gets a 4xx that says which limit."""

    max_context_chars: int = 8000
    """Largest accepted context, measured as its JSON text."""
    max_body_bytes: int | None = None
    """Largest accepted request body, enforced while reading it (before parsing): 413 beyond. ``None``:
    the task's own limit (:attr:`ensemble.contracts.Task.max_request_bytes`; 64 KiB for the demo app)."""
    max_ongoing_requests: int = 16
    """Requests one ingress replica works on at once (consensus loops run concurrently)."""
    max_queued_requests: int = 64
    """Requests waiting beyond that; more are refused with 503."""
    request_timeout_s: float = 600.0
    """A loop running longer is cancelled (with its scorer calls) and answered with 504."""
    ingress_cpus: float = 0.1
    """CPUs reserved by the HTTP ingress replica (it only forwards requests: a fraction is enough)."""
    degrade: bool = False
    """When a scorer is gone for good: ``False`` refuses requests (503 with the reason); ``True``
    answers without it, and every answer names the missing scorers."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"ServeLimits.{name}={value} must be positive")


DEFAULT_BODY_BYTES = 65536
"""The body limit of apps whose requests carry no uploads."""


class ConsensusRequest(BaseModel):
    """``POST /v1/consensus``: one consensus run on ``context``."""

    model_config = ConfigDict(extra="forbid")

    context: StrictStr | dict[StrictStr, Any] = Field(
        description="the task's conditioning: a question, a prompt, a goal … (a string or a JSON object)")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="seed of the run")
    stream: StrictBool = Field(False, description="stream one JSON line per round, then the result")

    @field_validator("context")
    @classmethod
    def _not_empty(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str) and not value.strip():
            raise ValueError("context is empty")
        return value


def check_size(request: ConsensusRequest, limits: ServeLimits) -> str | None:
    """The reason ``request`` is too large, or ``None``."""
    size = len(json.dumps(request.context, default=str))
    if size > limits.max_context_chars:
        return f"context is {size} characters as JSON; the limit is {limits.max_context_chars}"
    return None

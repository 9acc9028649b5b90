"""OpenAI-compatible endpoints of the text tasks: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

A chat's last user message (or a completion's prompt) becomes the task's request through
:meth:`~ensemble.contracts.Task.text_request`; ``model`` names the task's system (e.g. ``ensemble@1``;
any name that is not a system, such as ``"default"``, means the default system). The answer is the
task's response text; the consensus rounds and the per-scorer attribution travel in the extension
field ``consensus``. With ``"stream": true`` the answer streams as server-sent events: one chunk per
consensus round as it ends (empty delta, the round in ``consensus.round``), then the text, then
``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator


class _OpenAIRequest(BaseModel):
    """Fields both endpoints share. Unknown OpenAI fields are accepted and ignored (clients send them)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field("default", max_length=100, description="a system of the task (e.g. ensemble@1), "
                             "or any other name for the default system")
    stream: StrictBool = Field(False, description="server-sent events: one chunk per consensus round")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed")
    n: StrictInt = Field(1, ge=1, le=1, description="only 1 choice")


class ChatMessage(BaseModel):
    """One chat message; ``content`` is text."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr = Field(max_length=4000)


class ChatRequest(_OpenAIRequest):
    """``POST /v1/chat/completions``: the last user message is the task's prompt."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=64)

    @field_validator("messages")
    @classmethod
    def _has_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.content.strip() for m in value):
            raise ValueError("messages need a non-empty user message")
        return value

    def prompt(self) -> str:
        return next(m.content for m in reversed(self.messages) if m.role == "user" and m.content.strip())


class CompletionRequest(_OpenAIRequest):
    """``POST /v1/completions``: the prompt is the task's prompt."""

    prompt: StrictStr = Field(min_length=1, max_length=4000)


def pick_system(model: str, systems: list[str]) -> str | None:
    """The task system named by ``model``, or ``None`` (the task's default)."""
    return model if model in systems else None


def consensus_extension(response: dict[str, Any]) -> dict[str, Any]:
    """The ``consensus`` field: the task response without its text (rounds, per-scorer numbers, answer …)."""
    return {k: v for k, v in response.items() if k not in ("solution", "text")}


def completion_body(chat: bool, rid: str, model: str, text: str, response: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` / ``text_completion`` object with the ``consensus`` extension."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    tokens = int(response.get("tokens") or 0)
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{rid}", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
            "consensus": consensus_extension(response)}


def chunk(chat: bool, rid: str, model: str, delta: dict[str, Any] | str | None, finish: str | None,
          consensus: dict[str, Any] | None = None) -> str:
    """One server-sent event of a streamed completion."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["delta"] = delta if isinstance(delta, dict) else ({"content": delta} if delta else {})
    else:
        choice["text"] = delta if isinstance(delta, str) else ""
    body: dict[str, Any] = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{rid}",
                            "object": "chat.completion.chunk" if chat else "text_completion",
                            "created": int(time.time()), "model": model, "choices": [choice]}
    if consensus is not None:
        body["consensus"] = consensus
    return f"data: {json.dumps(body)}\n\n"


async def sse(chat: bool, rid: str, model: str, events: AsyncIterator[dict[str, Any]], task: Any) -> AsyncIterator[str]:
    """Server-sent events of ``events`` (``{"round": …}`` items, then ``{"response": …}`` or ``{"error": …}``)."""
    if chat:
        yield chunk(chat, rid, model, {"role": "assistant", "content": ""}, None)
    async for event in events:
        if "round" in event:
            yield chunk(chat, rid, model, None, None, {"round": event["round"]})
        elif "response" in event:
            response = event["response"]
            yield chunk(chat, rid, model, task.response_text(response), None)
            yield chunk(chat, rid, model, None, "stop", consensus_extension(response))
        else:
            yield f"data: {json.dumps({'error': event['error']})}\n\n"
    yield "data: [DONE]\n\n"


def new_id() -> str:
    return uuid.uuid4().hex[:24]

"""OpenAI-compatible endpoints of the text tasks: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

A chat's last user message (or a completion's prompt) becomes the task's request through
:meth:`~ensemble.contracts.Task.text_request`: its text is the prompt, its ``image_url`` / ``video_url``
content parts (base64 ``data:`` URLs only; nothing is fetched) the attached media (video QA's video); ``model`` names the task's system (e.g. ``ensemble@1``;
any name that is not a system, such as ``"default"``, means the default system). The answer is the
task's response text; the consensus rounds and the per-scorer attribution travel in the extension
field ``consensus``. With ``"stream": true`` the answer streams as server-sent events: one chunk per
consensus round as it ends (empty delta, the round in ``consensus.round``), then the text, then
``data: [DONE]``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator


class _OpenAIRequest(BaseModel):
    """Fields both endpoints share. Unknown OpenAI fields are accepted and ignored (clients send them)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field("default", max_length=100, description="a system of the task (e.g. ensemble@1), "
                             "or any other name for the default system")
    stream: StrictBool = Field(False, description="server-sent events: one chunk per consensus round")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="evaluation seed")
    n: StrictInt = Field(1, ge=1, le=1, description="only 1 choice")


class TextPart(BaseModel):
    """A text content part."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr = Field(max_length=4000)


class MediaURL(BaseModel):
    """A media reference: a ``data:`` URL (base64); the server fetches nothing."""

    model_config = ConfigDict(extra="ignore")

    url: StrictStr = Field(min_length=5)


class ImagePart(BaseModel):
    """An image content part (OpenAI's ``image_url``); a GIF or a one-frame image is a video."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["image_url"]
    image_url: MediaURL


class VideoPart(BaseModel):
    """A video content part (``video_url``, as OpenAI-compatible video servers name it)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["video_url"]
    video_url: MediaURL


ContentPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


def data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 ``data:`` URL; ``ValueError`` with the reason for anything else."""
    if not url.startswith("data:"):
        raise ValueError("media must be a base64 data: URL (data:<type>;base64,…); this server fetches no URLs")
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ValueError("media data: URL must be base64 (data:<type>;base64,…)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("media data: URL holds invalid base64") from None


class ChatMessage(BaseModel):
    """One chat message; ``content`` is text, or a list of text, image and video parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr | list[ContentPart] = Field(max_length=4000)

    def text(self) -> str:
        """The message's text (text parts joined by spaces)."""
        if isinstance(self.content, str):
            return self.content
        return " ".join(p.text.strip() for p in self.content if isinstance(p, TextPart) and p.text.strip())

    def media(self) -> tuple[bytes, ...]:
        """The decoded image and video parts, in order (``ValueError`` for a part that is not a data: URL)."""
        if isinstance(self.content, str):
            return ()
        return tuple(data_url_bytes((p.image_url if isinstance(p, ImagePart) else p.video_url).url)
                     for p in self.content if not isinstance(p, TextPart))


class ChatRequest(_OpenAIRequest):
    """``POST /v1/chat/completions``: the last user message is the task's prompt."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=64)

    @field_validator("messages")
    @classmethod
    def _has_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in value):
            raise ValueError("messages need a user message with text")
        return value

    def _last_user(self) -> ChatMessage:
        return next(m for m in reversed(self.messages) if m.role == "user" and m.text().strip())

    def prompt(self) -> str:
        """The text of the last user message with text."""
        return self._last_user().text()

    def media(self) -> tuple[bytes, ...]:
        """The images and videos attached to that message."""
        return self._last_user().media()


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

"""The HTTP edge shared by every Serve app: bounded strict JSON bodies, one-line errors, request ids.

Every endpoint reads its body through :func:`read_body` (size capped while reading, before any
parsing; NaN/Infinity and over-deep nesting refused), validates it with the task's pydantic model
(:func:`parse_request`), and runs inside :func:`guarded`: a :class:`RequestFault` (the request's own
fault) becomes a 4xx with a one-line reason; anything else is a server fault, logged with the
request id and answered with a 500 that carries that id (body and ``x-request-id`` header) and no
traceback.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

logger = logging.getLogger("ray.serve")

MAX_DEPTH = 32
"""Deepest JSON nesting accepted in a request body."""


class RequestFault(Exception):
    """A failure caused by the request: answered with ``status`` and the one-line ``reason``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """The first line of an error (the cause of a Ray-wrapped one), without ANSI colour codes."""
    if isinstance(err, BaseException):
        err = getattr(err, "cause", None) or err
        text = str(err).strip() or type(err).__name__
    else:
        text = err
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else "error"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def request_id(request: Request) -> str:
    """Serve's id of this request (its proxy sets ``x-request-id``), or a fresh one."""
    return request.headers.get("x-request-id") or uuid.uuid4().hex


def error_body(status: int, reason: str, rid: str) -> dict[str, Any]:
    """``{"detail", "request_id", "error"}``: FastAPI's shape plus OpenAI's ``error`` object (clients show it)."""
    kind = "server_error" if status >= 500 else "authentication_error" if status == 401 else "invalid_request_error"
    return {"detail": reason, "request_id": rid, "error": {"message": reason, "type": kind, "code": status}}


def error_response(status: int, reason: str, rid: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """:func:`error_body` as a response; Serve's proxy puts the same id in the ``x-request-id`` header."""
    return JSONResponse(error_body(status, reason, rid), status_code=status, headers=headers)


def _reject_constant(name: str) -> Any:
    raise RequestFault(400, f"request body has {name}; JSON numbers must be finite")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


async def read_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, read with a size cap (413 past ``max_bytes``, checked before parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestFault(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestFault(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise RequestFault(400, "request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestFault(400, f"request body is nested too deep; the limit is {MAX_DEPTH}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestFault(400, f"request body is not valid JSON: {one_line(err)}") from None
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise RequestFault(400, f"request body is nested {depth} deep; the limit is {MAX_DEPTH}")
    return data


def parse_request(model: type[BaseModel], data: Any) -> Any:
    """``model`` validated from ``data``; 422 with every problem on one line."""
    if not isinstance(data, dict):
        raise RequestFault(422, f"request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False, include_input=False):
            where = ".".join(str(x) for x in e.get("loc", ())) or "body"
            problems.append(f"{where}: {one_line(e.get('msg', 'invalid'), 120)}")
        raise RequestFault(422, "; ".join(problems[:5])) from None


async def guarded(request: Request, handler: Callable[[str], Awaitable[Any]]) -> Any:
    """Run ``handler(request_id)``: request faults → 4xx, anything else → logged 500 with the request id."""
    rid = request_id(request)
    try:
        return await handler(rid)
    except RequestFault as fault:
        return error_response(fault.status, fault.reason, rid, fault.headers)
    except Exception as err:  # noqa: BLE001 - a server fault: log it, answer without a traceback
        logger.exception("request %s failed: %s", rid, one_line(err))
        return error_response(500, f"internal error (request id {rid}); the server log has the details", rid)


ADMISSION_HEADROOM = 512
"""Requests a replica takes beyond its own limits only to refuse them (Serve's queue-full 503 has no
``Retry-After``, so Serve's limits are set wide and :class:`Admission` refuses)."""


class Admission:
    """Admission control of one ingress replica: ``max_ongoing`` runs at once, ``max_queued`` waiting; more
    are refused at once with 503 and ``Retry-After`` (Serve's own queue-full 503 carries no such header).

    ``slot = await admission.enter()`` waits for a run slot (or raises the 503); ``slot()`` gives it back.
    """

    def __init__(self, max_ongoing: int, max_queued: int, retry_after_s: int = 1) -> None:
        self.max_ongoing, self.max_queued, self.retry_after_s = max_ongoing, max_queued, retry_after_s
        self.admitted = 0
        self._running: Any = None

    async def enter(self) -> Callable[[], None]:
        import asyncio

        if self._running is None:
            self._running = asyncio.Semaphore(self.max_ongoing)
        if self.admitted >= self.max_ongoing + self.max_queued:
            raise RequestFault(503, f"busy: {self.max_ongoing} runs going and {self.max_queued} waiting; retry "
                                    f"after {self.retry_after_s} s", {"Retry-After": str(self.retry_after_s)})
        self.admitted += 1
        try:
            await self._running.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.admitted -= 1
                self._running.release()

        return release


async def holding(release: Callable[[], None], stream: Any) -> Any:
    """``stream``'s items; ``release()`` once it ends, fails or its client goes away."""
    try:
        async for item in stream:
            yield item
    finally:
        release()


async def admitted(admission: Admission, handler: Callable[[], Awaitable[Any]]) -> Any:
    """``await handler()`` inside an admission slot; a streaming response keeps the slot until it ends."""
    from fastapi.responses import StreamingResponse

    release = await admission.enter()
    try:
        result = await handler()
    except BaseException:
        release()
        raise
    if isinstance(result, StreamingResponse):
        result.body_iterator = holding(release, result.body_iterator)
    else:
        release()
    return result


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of ``model`` (endpoints read the raw body themselves)."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The documented error answers of an endpoint."""
    text = {400: "malformed body or unusable input", 401: "missing or wrong bearer token",
            413: "body too large", 422: "invalid field", 500: "server fault (carries the request id)",
            503: "overloaded or a scorer is gone", 504: "the run timed out"}
    return {code: {"description": why} for code, why in text.items()}


def page() -> Any:
    """The static web page (``actors/static/index.html``): pick an endpoint, send a request, watch the rounds."""
    from pathlib import Path

    from fastapi.responses import HTMLResponse

    return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text())


def example_request(model: type[BaseModel]) -> dict[str, Any]:
    """A request of ``model`` to start from: defaults, and ``""`` for required text fields."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            out[name] = field.default
        elif field.annotation is str:
            out[name] = ""
    return out

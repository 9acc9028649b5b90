"""Bearer-token authentication of the Serve apps (every route but ``/healthz`` and the static page at ``/``,
which holds no data and asks for the token itself).

The token comes from ``--token``, ``--token-file`` or the ``ENSEMBLE_SERVE_TOKEN`` environment variable.
Only its SHA-256 digest travels to the replicas; each request's token is hashed and compared in
constant time (``hmac.compare_digest``). Binding beyond loopback without a token is refused at start.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path
from typing import Any

TOKEN_ENV = "ENSEMBLE_SERVE_TOKEN"
OPEN_PATHS = ("/healthz",)
"""Path endings served without a token (liveness probes)."""


def digest(token: str) -> str:
    """SHA-256 hex digest of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The token from the flag, else the file, else ``$ENSEMBLE_SERVE_TOKEN``; ``None`` when none is set."""
    if token and token_file:
        raise ValueError("give --token or --token-file, not both")
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise ValueError(f"--token-file {path}: no such file")
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"--token-file {path} is empty")
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise ValueError("the serve token must be at least 16 characters (e.g. `openssl rand -hex 16`)")
    return token


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to bind beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise ValueError(
            f"--host {host} exposes the endpoint beyond this machine: set a bearer token with --token, "
            f"--token-file or ${TOKEN_ENV} (clients send `Authorization: Bearer <token>`)")


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <token>`` matches ``token_sha256``."""

    def __init__(self, app: Any, token_sha256: str) -> None:
        self.app, self.token_sha256 = app, token_sha256

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan, websockets
            await self.app(scope, receive, send)
            return
        path, root = scope["path"].rstrip("/"), scope.get("root_path", "").rstrip("/")
        if path.endswith(OPEN_PATHS) or path in ("", root):  # liveness probes; the static page
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                header = value.decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(digest(given.strip()), self.token_sha256):
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        from actors.serve_http import error_body

        rid = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        reason = "missing bearer token" if not header else "wrong bearer token"
        response = JSONResponse(error_body(401, f"{reason}: send `Authorization: Bearer <token>`", rid),
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

"""Instant offline detection, so the resolver never waits on a hub that cannot answer.

A hub request from a machine without access fails only after ~30 s of retries. Instead we decide once
per process: the standard environment switches (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) win;
otherwise the hub's host name must resolve and accept a TCP connection within a short timeout.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

OFFLINE_ENV_VARS: tuple[str, ...] = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""Environment variables that force offline mode when set to a true value."""

PROBE_TIMEOUT_S = 1.5
"""Seconds allowed for each of the DNS lookup and the TCP connection."""

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_probe_result: bool | None = None
_probe_lock = threading.Lock()


def offline_reason() -> str | None:
    """Why the hub is unreachable, or ``None`` if it is reachable.

    The environment is read on every call (it is cheap and tests change it); the network probe runs at
    most once per process and is cached.
    """
    for var in OFFLINE_ENV_VARS:
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]}"
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe(hub_host())
    return (
        None if _probe_result else f"{hub_host()} is unreachable (checked with a {PROBE_TIMEOUT_S} s timeout)"
    )


def is_offline() -> bool:
    """``True`` when the model hub must not be contacted (see :func:`offline_reason`)."""
    return offline_reason() is not None


def reset_offline_cache() -> None:
    """Forget the cached network probe (for tests, or after the network changed)."""
    global _probe_result
    with _probe_lock:
        _probe_result = None


def hub_host() -> str:
    """Host name of the Hugging Face endpoint (``HF_ENDPOINT`` if set)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(endpoint).hostname or "huggingface.co"


def _probe(host: str, port: int = 443) -> bool:
    """Resolve ``host`` and open a TCP connection, each bounded by :data:`PROBE_TIMEOUT_S`."""
    found: list[tuple] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError:
            pass

    # getaddrinfo has no timeout of its own: run it in a daemon thread and stop waiting after the timeout.
    worker = threading.Thread(target=lookup, name="hub-dns-probe", daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    if not found:
        return False
    family, socktype, proto, _, address = found[0]
    try:
        with socket.socket(family, socktype, proto) as sock:
            sock.settimeout(PROBE_TIMEOUT_S)
            sock.connect(address)
    except OSError:
        return False
    return True

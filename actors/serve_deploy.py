"""Putting a Serve app on a cluster that may already serve others: resources, names, routes, HTTP options.

Serve's HTTP proxy is cluster-wide (one host and port per cluster), so several ``ensemble serve``
apps share it: each gets its own app name and route prefix, and stopping one deletes only that app.
Before any actor is created, :func:`check_fits` compares what the served actors ask for with what the
cluster has free and, when it cannot place them, says which component needs what and which flag
changes it — in seconds, instead of an actor pending until a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Demand:
    """What one served actor asks for, and the flag that sets it."""

    label: str
    """e.g. ``"coordinator"``, ``"scorer a"``, ``"ingress"``."""
    cpus: float
    gpus: float = 0.0
    flag: str = ""
    """The command-line flag that changes it (named in the error)."""


class ServeStartError(ValueError):
    """The app cannot start as asked; the message says why and what to change (printed without traceback)."""


def check_fits(demands: list[Demand]) -> None:
    """Raise :class:`ServeStartError` when the cluster cannot place ``demands`` now.

    Checks the total against the free CPUs/GPUs of the cluster and every single actor against the
    largest node, so a request that would leave an actor pending forever fails at once.
    """
    free = ray.available_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    for key, attr in (("CPU", "cpus"), ("GPU", "gpus")):
        want = sum(getattr(d, attr) for d in demands)
        if want <= 0:
            continue
        biggest = max((n.get(key, 0.0) for n in nodes), default=0.0)
        too_big = [d for d in demands if getattr(d, attr) > biggest + 1e-9]
        have = free.get(key, 0.0)
        if not too_big and want <= have + 1e-9:
            continue
        parts = ", ".join(f"{d.label} {getattr(d, attr):g}" + (f" ({d.flag})" if d.flag else "")
                          for d in demands if getattr(d, attr) > 0)
        flags = sorted({d.flag for d in demands if d.flag and getattr(d, attr) > 0})
        where = (f"no node has more than {biggest:g} {key}" if too_big
                 else f"the cluster has {have:g} of {total.get(key, 0.0):g} {key} free")
        raise ServeStartError(
            f"the served actors need {want:g} {key} in all ({parts}) but {where}; "
            f"lower {' / '.join(flags) or 'their resources'} or connect to a bigger cluster (--address)")


def serve_details() -> dict[str, Any]:
    """The running Serve instance's details (apps, routes, HTTP options), or ``{}`` when Serve is not running."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return {} if client is None else dict(client.get_serve_details())


def plan_route(name: str, route_prefix: str | None, host: str, port: int | None) -> tuple[str, int, str]:
    """``(host, port, route_prefix)`` for app ``name`` on this cluster, or a :class:`ServeStartError`.

    * HTTP options are cluster-wide: if Serve already listens, ``port``/``host`` must match it (or be
      ``None`` for the port: use it); a different one is refused, never silently ignored.
    * App names are unique: a running app of the same name is refused (pass another ``--name``).
    * ``route_prefix`` ``None``: ``/`` when free, else ``/<name>``; an explicit prefix in use is refused.
    """
    details = serve_details()
    apps = details.get("applications") or {}
    http = details.get("http_options") or {}
    if http:
        live_host, live_port = http.get("host", host), int(http.get("port", DEFAULT_PORT))
        if (port is not None and port != live_port) or host != live_host:
            raise ServeStartError(
                f"Serve on this cluster already listens on {live_host}:{live_port} (Serve's HTTP options are "
                f"cluster-wide); serve this app there (omit --port, --host {live_host}) or use another cluster")
        host, port = live_host, live_port
    port = DEFAULT_PORT if port is None else port
    if name in apps:
        raise ServeStartError(f"an app named {name!r} already runs on this cluster; pass another --name")
    used = {a.get("route_prefix"): n for n, a in apps.items() if a.get("route_prefix")}
    if route_prefix is None:
        route_prefix = "/" if "/" not in used else f"/{name}"
    if route_prefix in used:
        raise ServeStartError(f"route prefix {route_prefix!r} is used by app {used[route_prefix]!r}; "
                              f"pass another --route-prefix")
    return host, port, route_prefix


def deploy(app: Any, name: str, host: str = "127.0.0.1", port: int | None = None,
           route_prefix: str | None = None) -> str:
    """Start Serve's proxy if needed and deploy ``app`` as ``name``; returns the app's base URL."""
    from ray import serve

    host, port, route_prefix = plan_route(name, route_prefix, host, port)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=name, route_prefix=route_prefix)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}{route_prefix.rstrip('/')}"


def undeploy(name: str, timeout_s: float = 20.0) -> None:
    """Delete app ``name`` only (other apps and the proxy keep running); waits at most ``timeout_s``."""
    import time

    from ray import serve

    try:
        if name not in (serve_details().get("applications") or {}):
            return
        serve.delete(name, _blocking=False)
        deadline = time.monotonic() + timeout_s
        while name in (serve_details().get("applications") or {}) and time.monotonic() < deadline:
            time.sleep(0.5)
    except Exception:  # noqa: BLE001 - Serve or the cluster already gone
        pass

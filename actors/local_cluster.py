"""A private local Ray cluster on 127.0.0.1 with token authentication — for tests and laptops.

``ray start --head --block`` runs in a child process that owns the cluster: terminating that one
process (by its pid) takes the whole cluster down, so nothing here ever runs ``ray stop`` (which would
stop every cluster on the machine). Every port is chosen free and explicit, the temp dir is private,
and every address is loopback.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            if s.getsockname()[1] not in ports:
                ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalCluster:
    """A head-only Ray cluster bound to 127.0.0.1, with a dashboard (jobs API) and token auth.

    Attributes:
        num_cpus: logical CPUs of the head node.
        dashboard: start the dashboard (needed by ``ray job submit``).
        token: the auth token (random when empty); ``RAY_AUTH_MODE=token`` is set for the cluster.
        extra_env: more environment for the cluster's processes (e.g. ``PYTHONPATH``).
    """

    num_cpus: int = 4
    dashboard: bool = True
    token: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    temp_dir: str = ""
    port: int = 0
    dashboard_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The GCS address to ``ray.init(address=...)``."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The jobs API address for ``ray job submit --address``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """The environment that clients (drivers, ``ray job`` CLI) need to reach this cluster."""
        return {
            **os.environ,
            **self.extra_env,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def use_in_this_process(self) -> None:
        """Point this process's Ray client at the cluster's token (before ``ray.init(address=...)``).

        Ray caches its config (auth mode) at import and the token it loaded first (e.g.
        ``~/.ray/auth_token``), so both are refreshed, as ``ray.init`` itself does for local clusters.
        """
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        """Start the head node and wait until its GCS (and dashboard) accept connections."""
        self.token = self.token or secrets.token_hex(16)
        self.temp_dir = self.temp_dir or tempfile.mkdtemp(prefix="ic-ray-", dir="/tmp")
        ports = free_ports(10)
        self.port, self.dashboard_port = ports[0], ports[1]
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_bin, "start", "--head", "--block", "--disable-usage-stats",
            f"--port={ports[0]}", "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir}", f"--include-dashboard={str(self.dashboard).lower()}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
            f"--node-manager-port={ports[4]}", f"--object-manager-port={ports[5]}",
            f"--runtime-env-agent-port={ports[6]}", f"--metrics-export-port={ports[7]}",
            f"--ray-client-server-port={ports[8]}",
        ]
        log = open(Path(self.temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 - lives with the cluster
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        wanted = [self.port] + ([self.dashboard_port] if self.dashboard else [])
        while not all(_port_open(p) for p in wanted):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"local Ray cluster did not come up:\n{tail}")
            time.sleep(0.2)
        if self.dashboard:
            self._wait_jobs_api(deadline)
        return self

    def _wait_jobs_api(self, deadline: float) -> None:
        import urllib.request

        req = urllib.request.Request(f"{self.dashboard_url}/api/version",
                                     headers={"Authorization": f"Bearer {self.token}"})
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(req, timeout=2):
                    return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        raise RuntimeError(f"the jobs API at {self.dashboard_url} did not answer in time")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Terminate the owning ``ray start --block`` process (and with it this cluster only)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: this cluster's processes
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        """:meth:`stop` and remove the temp dir."""
        self.stop()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the owning process dies (Linux), so a killed test
    session or driver never leaves its private cluster behind (``ray start --block`` stops on SIGTERM)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: cleanup() remains the way to stop it
        pass

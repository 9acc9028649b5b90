"""Serve liveness on a live app (ray tier): ``/healthz`` reports every scorer; a scorer gone for good
makes the app refuse (503 with the reason) unless it was started to degrade, and degraded answers name
the missing scorer; a hung scorer is dropped after the per-call timeout instead of blocking the loop."""

from __future__ import annotations

import socket
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scorer_calls_time_out_by_default():
    """Reproduction 7: ``EnsembleConfig.timeout_s`` defaulted to ``None`` (a hung scorer blocked forever)."""
    from ensemble.config import EnsembleConfig

    assert EnsembleConfig().timeout_s is not None and EnsembleConfig().timeout_s > 0


def _runtime(scorers: dict, timeout_s: float = 120.0):
    from actors import spec as S
    from actors.placement import PlacementConfig, Resources
    from actors.runtime import RayRuntime
    from ensemble.config import EnsembleConfig

    run = S.RunSpec(generator=S.generator("sampling", dim=2, n_candidates=16, rounds=3), scorers=scorers,
                    ensemble=EnsembleConfig(timeout_s=timeout_s))
    light = PlacementConfig(generator=Resources(0.1), scorer=Resources(0.1), max_restarts=0)
    return RayRuntime(run, placement=light).start()


@pytest.mark.ray
def test_a_scorer_gone_for_good_is_refused_unless_degrading(ray_cluster):
    """Reproduction 6: ``/healthz`` said ready after a scorer died for good, and answers silently came from
    the remaining scorer."""
    import ray
    import requests
    from ray import serve

    from actors import spec as S
    from actors.serve import start
    from actors.serve_schema import ServeLimits

    runtime = _runtime({"a": S.scorer("quadratic", target=[2.0, 0.0]), "b": S.scorer("quadratic", target=[0.0, 2.0])})
    port = _free_port()
    try:
        strict = start(runtime.coordinators, "127.0.0.1", port, name="live-strict", route_prefix="/")
        lenient = start(runtime.coordinators, "127.0.0.1", port, ServeLimits(degrade=True), name="live-degrade",
                        route_prefix="/degrade")
        health = requests.get(f"{strict}/healthz", timeout=60)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert {n: s["state"] for n, s in health.json()["coordinators"][0]["scorers"].items()} == {"a": "ok", "b": "ok"}
        ok = requests.post(f"{strict}/v1/consensus", json={"context": "x"}, timeout=60).json()
        assert ok["degraded"] is False and ok["missing_scorers"] == []

        ray.kill(runtime.scorers["b"], no_restart=True)
        time.sleep(1.5)  # past the ingress's one-second liveness cache
        health = requests.get(f"{strict}/healthz", timeout=60)
        assert health.status_code == 503 and health.json()["status"] == "refusing"
        assert health.json()["gone_scorers"] == ["b"]
        assert health.json()["coordinators"][0]["scorers"]["b"]["state"] == "dead"
        refused = requests.post(f"{strict}/v1/consensus", json={"context": "x"}, timeout=60)
        assert refused.status_code == 503 and "scorer(s) b are gone for good" in refused.json()["detail"]
        assert "--degrade" in refused.json()["detail"]

        health = requests.get(f"{lenient}/healthz", timeout=60)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        answer = requests.post(f"{lenient}/v1/consensus", json={"context": "x"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["degraded"] is True and answer.json()["missing_scorers"] == ["b"]
        assert "b" in answer.json()["rounds"][0]["missing"]
    finally:
        serve.shutdown()  # the next test module starts its own proxy on its own port
        runtime.shutdown()


@pytest.mark.ray
@pytest.mark.stress
def test_a_hung_scorer_is_dropped_after_the_per_call_timeout(ray_cluster):
    """Reproduction 7: a hung scorer blocked every loop (only Serve's 600 s limit ended it)."""
    import requests
    from ray import serve

    from actors import spec as S
    from actors.serve import start

    runtime = _runtime({"a": S.scorer("quadratic", target=[1.0, 1.0]), "h": S.scorer("ray_toy:HangingScorer")},
                       timeout_s=1.0)
    try:
        url = start(runtime.coordinators, "127.0.0.1", _free_port(), name="live-hung")
        t0 = time.monotonic()
        resp = requests.post(f"{url}/v1/consensus", json={"context": {"hang": True}}, timeout=120)
        took = time.monotonic() - t0
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["missing_scorers"] == ["h"] and all("timeout" in r["errors"]["h"] for r in body["rounds"])
        assert took < 3 * 1.0 + 10  # three rounds of one 1 s timeout each, not forever
        health = requests.get(f"{url}/healthz", timeout=60).json()
        assert health["coordinators"][0]["scorers"]["h"]["state"] == "unresponsive"
        assert health["status"] == "ok"  # hung may recover: not refused, but every answer names it
    finally:
        serve.shutdown()
        runtime.shutdown()


@pytest.mark.ray
def test_a_cancelled_solver_call_frees_the_worker_after_its_current_round(ray_cluster):
    """A timed-out or dropped request cancels its worker call: the run stops (it used to go on to its
    last round, holding the worker). Plain and streamed calls of a 30 s run."""
    import time

    import ray
    from ray_toy import SlowSpec

    from actors.placement import Resources, spawn
    from actors.workers import SolverWorker
    from ensemble.contracts import Item

    worker = spawn(SolverWorker, SlowSpec(rounds=300, seconds=0.1), resources=Resources(num_cpus=0.1))
    try:
        ray.get(worker.setup.remote(), timeout=120)
        item = Item("x", {}, None, {"index": 0})
        gen = worker.solve_stream.options(num_returns="streaming").remote(item, "slow", 0)
        first = ray.get(next(gen), timeout=60)
        assert first == {"round": {"round": 0}}
        ray.cancel(gen)
        t0 = time.monotonic()
        assert ray.get(worker.health.remote(), timeout=60)["calls"] == 1
        streamed_stop = time.monotonic() - t0

        ref = worker.solve.remote(item, "slow", 0)
        time.sleep(1.0)
        ray.cancel(ref)
        t0 = time.monotonic()
        assert ray.get(worker.health.remote(), timeout=60)["calls"] == 2
        plain_stop = time.monotonic() - t0
        with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError)):
            ray.get(ref, timeout=60)
        assert streamed_stop < 10 and plain_stop < 10, (streamed_stop, plain_stop)  # the whole run is 30 s
    finally:
        ray.kill(worker, no_restart=True)

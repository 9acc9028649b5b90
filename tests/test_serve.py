"""The HTTP endpoint: request validation (unit tier) and a served consensus run (ray tier)."""

from __future__ import annotations

import json
import socket

import pytest
from pydantic import ValidationError

from actors.serve_schema import ConsensusRequest, ServeLimits, check_size


def test_request_validation_names_the_problem():
    assert ConsensusRequest(context="What is 2+2?").seed == 0
    with pytest.raises(ValidationError, match="context is empty"):
        ConsensusRequest(context="  ")
    with pytest.raises(ValidationError, match="seed"):
        ConsensusRequest(context="x", seed=-1)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ConsensusRequest(context="x", temperature=3)
    big = ConsensusRequest(context="x" * 100)
    assert "limit is 50" in check_size(big, ServeLimits(max_context_chars=50))
    with pytest.raises(ValueError, match="must be positive"):
        ServeLimits(max_queued_requests=0)


def test_default_served_actors_fit_a_two_core_machine():
    """Reproduction 1: the demo's coordinator + two scorers + ingress asked for 1 CPU each (never placed on 2 cores)."""
    from actors.cli import build_parser
    from actors.commands.serve import _limits, _placement, preset

    args = build_parser().parse_args(["serve", "--preset", "demo"])
    placement = _placement(args, list(preset("demo").scorers))
    total = placement.generator.num_cpus + sum(placement.for_scorer(n).num_cpus for n in "ab") + _limits(args).ingress_cpus
    assert total <= 1.0
    args = build_parser().parse_args(["serve", "--preset", "demo", "--scorer-cpus", "0.5", "--scorer-cpus", "a=1",
                                      "--coordinator-cpus", "0.1"])
    placement = _placement(args, ["a", "b"])
    assert (placement.for_scorer("a").num_cpus, placement.for_scorer("b").num_cpus, placement.generator.num_cpus) \
        == (1.0, 0.5, 0.1)
    with pytest.raises(ValueError, match="NAME=CPUS"):
        _placement(build_parser().parse_args(["serve", "--scorer-cpus", "a=lots"]), ["a"])
    with pytest.raises(ValueError, match="unknown scorers"):
        _placement(build_parser().parse_args(["serve", "--scorer-cpus", "zz=1"]), ["a"])
    math = build_parser().parse_args(["serve", "math", "--tiny"])
    assert math.worker_cpus + math.ingress_cpus <= 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_served_consensus_run_streams_rounds_and_rejects_bad_requests(ray_cluster):
    import requests
    from ray import serve

    from actors.commands.serve import preset
    from actors.runtime import RayRuntime
    from actors.serve import start
    from actors.serve_schema import ServeLimits

    runtime = RayRuntime(preset("demo")).start()
    try:
        url = start(runtime.coordinators, "127.0.0.1", _free_port(), ServeLimits(max_context_chars=200),
                    info={"preset": "demo"}, name="test-consensus")
        assert url.startswith("http://127.0.0.1:")
        health = requests.get(f"{url}/healthz", timeout=60).json()
        assert health["coordinators"][0]["ready"] is True
        resp = requests.post(f"{url}/v1/consensus", json={"context": {"note": "x"}, "seed": 3}, timeout=120)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["rounds"]) == 6 and body["stop_reason"] == "generator_done"
        assert set(body["rounds"][0]["scorer_energy"]) == {"a", "b"}
        x, y = body["output"]
        assert abs(x - 1.0) < 0.6 and abs(y - 1.0) < 0.6  # the consensus of targets (2,0) and (0,2)
        # Streaming: one line per round as it ends, then the result; same run as above.
        with requests.post(f"{url}/v1/consensus", json={"context": {"note": "x"}, "seed": 3, "stream": True},
                           stream=True, timeout=120) as resp:
            lines = [json.loads(line) for line in resp.iter_lines() if line]
        assert [ln["round"]["round"] for ln in lines[:-1]] == list(range(6))
        assert lines[-1]["result"]["output"] == body["output"]
        # Malformed requests: 4xx with the reason.
        bad = requests.post(f"{url}/v1/consensus", json={"seed": 1}, timeout=30)
        assert bad.status_code == 422 and "context" in bad.text
        bad = requests.post(f"{url}/v1/consensus", json={"context": "q", "seed": "many"}, timeout=30)
        assert bad.status_code == 422 and "seed" in bad.text
        big = requests.post(f"{url}/v1/consensus", json={"context": "x" * 500}, timeout=30)
        assert big.status_code == 413 and "limit is 200" in big.json()["detail"]
    finally:
        serve.shutdown()
        runtime.shutdown()


@pytest.mark.ray
def test_unplaceable_actors_fail_at_once_naming_the_flag(ray_cluster):
    import time

    from actors.serve_deploy import Demand, ServeStartError, check_fits

    t0 = time.monotonic()
    with pytest.raises(ServeStartError, match=r"coordinator 64 \(--coordinator-cpus\).*lower --coordinator-cpus"):
        check_fits([Demand("coordinator", 64, flag="--coordinator-cpus"), Demand("ingress", 0.1, flag="--ingress-cpus")])
    with pytest.raises(ServeStartError, match="GPU"):
        check_fits([Demand("solver worker 0", 1, 1, flag="--worker-cpus")])
    check_fits([Demand("coordinator", 0.25), Demand("ingress", 0.1)])
    assert time.monotonic() - t0 < 10


@pytest.mark.ray
def test_several_apps_share_a_cluster_and_stop_alone(ray_cluster):
    """Reproduction 5: a second app replaced the first, printed a dead URL for its own port, and stopping it
    stopped both."""
    import requests
    from ray import serve

    from actors.commands.serve import preset
    from actors.runtime import RayRuntime
    from actors.serve import start
    from actors.serve_deploy import ServeStartError, undeploy

    port = _free_port()
    body = {"context": {"note": "x"}, "seed": 1}
    with RayRuntime(preset("demo")) as first, RayRuntime(preset("demo")) as second:
        try:
            url1 = start(first.coordinators, "127.0.0.1", port, name="app-one")
            with pytest.raises(ServeStartError, match=f"already listens on 127.0.0.1:{port}.*cluster-wide"):
                start(second.coordinators, "127.0.0.1", _free_port(), name="app-two")
            with pytest.raises(ServeStartError, match="already runs"):
                start(second.coordinators, "127.0.0.1", None, name="app-one")
            url2 = start(second.coordinators, "127.0.0.1", None, name="app-two")
            assert url1 == f"http://127.0.0.1:{port}" and url2 == f"http://127.0.0.1:{port}/app-two"
            for url in (url1, url2):
                assert requests.post(f"{url}/v1/consensus", json=body, timeout=120).status_code == 200
            undeploy("app-one")
            assert requests.post(f"{url2}/v1/consensus", json=body, timeout=120).status_code == 200
            assert requests.post(f"{url1}/v1/consensus", json=body, timeout=30).status_code == 404
        finally:
            serve.shutdown()


def test_token_sources_and_open_binds_refused(tmp_path, monkeypatch, capsys):
    from actors.cli import main
    from actors.serve_auth import TOKEN_ENV, check_binding, is_loopback, resolve_token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert resolve_token() is None
    assert resolve_token("a-token-of-16-chars") == "a-token-of-16-chars"
    (tmp_path / "t").write_text("from-a-file-0123456789\n")
    assert resolve_token(token_file=tmp_path / "t") == "from-a-file-0123456789"
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-42")
    assert resolve_token() == "from-the-environment-42"
    with pytest.raises(ValueError, match="at least 16"):
        resolve_token("short")
    with pytest.raises(ValueError, match="not both"):
        resolve_token("a-token-of-16-chars", tmp_path / "t")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    check_binding("0.0.0.0", "a-token-of-16-chars")
    monkeypatch.delenv(TOKEN_ENV)
    # refused before any actor (or Ray) starts: this tier's ray.init raises
    assert main(["serve", "--preset", "demo", "--host", "0.0.0.0"]) == 2
    assert "needs" not in (err := capsys.readouterr().err) and "--host 0.0.0.0 exposes the endpoint" in err
    assert main(["serve", "math", "--tiny", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_degrade_is_refused_for_task_apps_where_workers_hold_the_whole_ensemble(capsys):
    from actors.cli import main

    assert main(["serve", "--degrade", "math"]) == 2  # refused before Ray starts
    assert "--degrade applies to --preset/--spec apps" in capsys.readouterr().err

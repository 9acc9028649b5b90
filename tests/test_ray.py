"""Ray tier: the actor runtime on the session's private loopback cluster (fixture ``ray_cluster``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors import spec as S
from actors.batching import BatchConfig
from actors.coordinator import comparable
from actors.placement import PlacementConfig, Resources
from actors.runtime import RayRuntime, local_coordinator
from ensemble.config import ConsensusConfig, EnsembleConfig
from ensemble.registry import GENERATORS, SCORERS

pytestmark = pytest.mark.ray

SMALL = PlacementConfig(generator=Resources(num_cpus=0.5), scorer=Resources(num_cpus=0.5))


def _quadratic_run(generator: S.ComponentSpec, delay: float = 0.0, timeout: float | None = None) -> S.RunSpec:
    return S.RunSpec(
        generator=generator,
        scorers={"a": S.scorer("quadratic", target=[1.0, 0.0]),
                 "b": S.scorer("quadratic", target=[0.0, 1.0], delay_s=delay)},
        ensemble=EnsembleConfig(timeout_s=timeout),
        consensus=ConsensusConfig(seed=3, max_rounds=50),
    )


def _local_then_ray(run: S.RunSpec, context):
    local = asyncio.run(local_coordinator(run).run(context))
    with RayRuntime(run, placement=SMALL) as rt:
        remote = rt.coordinators[0].run.remote(context)
        import ray

        return local, ray.get(remote)


def test_cluster_is_loopback_with_token_auth(ray_cluster):
    import ray

    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    env = {**ray_cluster.env(), "RAY_AUTH_TOKEN": "not-the-token"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    refused = subprocess.run([ray_bin, "job", "list", "--address", ray_cluster.dashboard_url],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0


@pytest.fixture(scope="module")
def sampling_runtime(ray_cluster):
    """One runtime shared by the sampling-generator tests (actor start-up dominates their cost)."""
    run = _quadratic_run(S.generator("sampling", dim=2, n_candidates=16, rounds=3), delay=0.05)
    with RayRuntime(run, placement=SMALL, batch=BatchConfig(max_batch=16, max_wait_s=0.01)) as rt:
        yield rt


def test_seeded_run_is_identical_locally_and_on_ray(sampling_runtime):
    import ray

    local = asyncio.run(local_coordinator(sampling_runtime.run).run(None))
    remote = ray.get(sampling_runtime.coordinators[0].run.remote(None))
    assert remote.stop_reason == local.stop_reason
    assert remote.output.tolist() == local.output.tolist()
    assert [comparable(r) for r in remote.rounds] == [comparable(r) for r in local.rounds]


def test_round_records_stream(sampling_runtime):
    import ray

    coord = sampling_runtime.coordinators[0]
    *records, result = [ray.get(ref) for ref in coord.stream.options(num_returns="streaming").remote(None, seed=7)]
    assert [r.round for r in records] == [0, 1, 2]
    assert [comparable(r) for r in records] == [comparable(r) for r in result.rounds]


def test_cross_loop_batching_merges_calls(sampling_runtime):
    import ray

    coord = sampling_runtime.coordinators[0]
    before = ray.get(coord.health.remote())["batching"]["b"]
    results = ray.get([coord.run.remote(None, seed=s) for s in range(8)])
    after = ray.get(coord.health.remote())["batching"]["b"]
    calls, batches = after["calls"] - before["calls"], after["batches"] - before["batches"]
    assert calls == 8 * 3 and batches <= calls / 2
    local = local_coordinator(sampling_runtime.run)
    for s, res in enumerate(results):
        assert res.output.tolist() == asyncio.run(local.run(None, seed=s)).output.tolist()


def test_tiny_causal_lm_is_identical_locally_and_on_ray(ray_cluster):
    pytest.importorskip("ensemble.models.tiny")
    gen = GENERATORS.entry("causal_lm").tiny
    seq = SCORERS.entry("sequence_classifier").tiny
    if gen is None or seq is None:
        pytest.skip("tiny causal LM / verifier are not registered yet")
    run = S.RunSpec(
        generator=S.generator("causal_lm", **{**gen, "max_new_tokens": 2}),
        scorers={"verifier": S.scorer("sequence_classifier", **seq)},
        ensemble=EnsembleConfig(normalisation="zscore"),
        consensus=ConsensusConfig(seed=1, max_rounds=20),
    )
    local, remote = _local_then_ray(run, "What is 2 + 3?")
    assert remote.output == local.output
    assert [comparable(r) for r in remote.rounds] == [comparable(r) for r in local.rounds]


def test_gradient_run_identical_cancel_and_killed_scorer(ray_cluster):
    """Same records locally and on Ray; a cancelled loop stops; a killed scorer is dropped and comes back."""
    import ray

    run = _quadratic_run(S.generator("gradient", shape=(1, 2), steps=6, step_size=0.2), delay=0.3, timeout=20.0)
    local = asyncio.run(local_coordinator(run).run(None))
    with RayRuntime(run, placement=SMALL) as rt:
        coord, victim = rt.coordinators[0], rt.scorers["b"]
        remote = ray.get(coord.run.remote(None))
        assert remote.output.tolist() == local.output.tolist()
        assert [comparable(r) for r in remote.rounds] == [comparable(r) for r in local.rounds]
        # Cancel a running loop: its call ends cancelled and nothing keeps running.
        doomed = coord.run.remote(None, loop_id="doomed")
        time.sleep(0.8)
        assert ray.get(coord.cancel.remote("doomed"))
        with pytest.raises(Exception):  # noqa: B017 - the loop's call ends cancelled
            ray.get(doomed, timeout=30)
        assert ray.get(coord.running.remote()) == []
        # Kill scorer b in the middle of round 0.
        pid = ray.get(victim.health.remote())["pid"]
        ref = coord.run.remote(None)
        time.sleep(0.15)
        ray.kill(victim, no_restart=False)
        result = ray.get(ref, timeout=60)
        assert result.stop_reason == "generator_done" and len(result.rounds) == 6
        first = result.rounds[0]
        assert first.missing == ["b"] and first.weights == {"a": 2.0} and "b" in first.errors
        # While Ray restarts b its calls fail fast (ActorUnavailableError): dropped, not waited for.
        assert all(r.missing in ([], ["b"]) for r in result.rounds) and result.rounds[-1].missing == []
        assert ray.get(victim.health.remote())["pid"] != pid


def test_colocated_scorer_is_packed_with_the_generator(ray_cluster):
    import ray

    run = _quadratic_run(S.generator("gradient", shape=(1, 2), steps=2))
    placement = PlacementConfig(generator=Resources(num_cpus=0.5), scorer=Resources(num_cpus=0.5), colocated=("a",))
    with RayRuntime(run, placement=placement) as rt:
        assert len(rt.groups) == 1 and set(rt.scorers) == {"b"} and set(rt.colocated[0]) == {"a"}
        table = ray.util.placement_group_table(rt.groups[0])
        assert table["strategy"] == "STRICT_PACK" and table["state"] == "CREATED"
        assert ray.get(rt.coordinators[0].run.remote(None)).stop_reason == "generator_done"


@pytest.mark.ray
def test_private_cluster_dies_with_its_owner(tmp_path):
    """A driver killed without cleanup leaves no Ray process behind."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import os\n"
        "from actors.local_cluster import LocalCluster\n"
        "c = LocalCluster(num_cpus=1, dashboard=False).start()\n"
        "print(c.proc.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    pid = int(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 180  # Ray's shutdown on SIGTERM takes over a minute on 2 busy cores
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists(), "the cluster outlived its owner"

"""Unit tier (no Ray): specs, workers in-process, the cross-loop batcher, the in-process coordinator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from actors import spec as S
from actors.batching import BatchConfig, Batcher
from actors.coordinator import comparable
from actors.placement import PlacementConfig, Resources
from actors.runtime import local_coordinator
from actors.workers import ScorerWorker, concat_candidates, group_calls, split_output
from ensemble.config import ConsensusConfig
from ensemble.consensus import run_consensus
from ensemble.contracts import ScoreOutput
from ensemble.registry import UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]


def _run() -> S.RunSpec:
    return S.RunSpec(
        generator=S.generator("sampling", dim=2, n_candidates=8, rounds=3),
        scorers={
            "a": S.scorer("quadratic", target=[1.0, 0.0]),
            "b": S.scorer("quadratic", target=[0.0, 1.0]),
        },
        consensus=ConsensusConfig(seed=2),
    )


def test_specs_are_small_validated_and_seeded():
    run = _run()
    assert [s.seed for s in run.scorer_specs().values()] == [0, 1]  # worker seed = base + index
    assert S.RunSpec.from_dict(run.to_dict()).to_dict() == run.to_dict()
    reseeded = S.RunSpec.from_dict({**run.to_dict(), "consensus": {**run.consensus.to_dict(), "seed": 9}})
    assert run.config_hash() == reseeded.config_hash()  # rows are keyed by seed separately
    with pytest.raises(UnknownComponentError, match="Valid scorers"):
        S.scorer("quadratc")
    with pytest.raises(ValueError, match="kind"):
        S.ComponentSpec("model", "x")
    with pytest.raises(ValueError, match="unknown scorers"):
        PlacementConfig(colocated=("zzz",)).check_names(["a"])
    with pytest.raises(ValueError, match="whole number"):
        Resources(num_gpus=1.5)
    assert Resources(num_cpus=0, num_gpus=0.25).bundle() == {"GPU": 0.25}


def test_worker_builds_lazily_and_reports_health():
    worker = ScorerWorker(S.scorer("quadratic", target=[0.0, 0.0]))
    assert not worker.health()["ready"]
    out = worker.score(None, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert out.scores.tolist() == [-1.0, -4.0] and worker.health()["ready"]
    state = worker.get_state()
    other = ScorerWorker(S.scorer("quadratic"))
    other.set_state(state)
    assert other.spec == worker.spec and other.calls == 1
    worker.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        worker.score(None, torch.zeros(1, 2))


def test_score_many_merges_calls_of_the_same_shape_and_splits_back():
    worker = ScorerWorker(S.scorer("quadratic", target=[0.0, 0.0]))
    x1, x2, x3 = torch.randn(3, 2), torch.randn(5, 2), torch.randn(2, 2)
    calls = [(None, x1, False), ({"target": [1.0, 1.0]}, x2, True), (None, x3, False)]
    assert group_calls(calls) == [[0, 2], [1]]
    outs = worker.score_many(calls)
    for (ctx, x, grad), out in zip(calls, outs, strict=True):
        ref = worker.component.score(ctx, x, need_grad=grad)
        assert torch.allclose(out.scores, ref.scores)
        assert (out.grad is None) == (ref.grad is None)
    merged, sizes = concat_candidates([["a", "b"], ["c"]])
    assert merged == ["a", "b", "c"] and sizes == [2, 1]
    parts = split_output(ScoreOutput(scores=torch.arange(3.0)), [2, 1])
    assert [p.scores.tolist() for p in parts] == [[0.0, 1.0], [2.0]]
    assert not any(p.abstain for p in parts)
    # an abstention of a merged call reaches every call it answers
    assert all(p.abstain for p in split_output(ScoreOutput(scores=torch.arange(3.0), abstain=True), [2, 1]))


def test_batcher_merges_concurrent_calls_and_withdraws_cancelled_ones():
    sent: list[int] = []

    async def send(calls):
        sent.append(len(calls))
        await asyncio.sleep(0.01)
        return [ScoreOutput(scores=torch.as_tensor(c[1], dtype=torch.float32)) for c in calls]

    async def main():
        batcher = Batcher(send, BatchConfig(max_batch=4, max_wait_s=0.02))
        results = await asyncio.gather(*(batcher.submit(None, [float(i)]) for i in range(6)))
        assert [r.scores.tolist() for r in results] == [[float(i)] for i in range(6)]
        assert sent == [4, 2]
        doomed = asyncio.ensure_future(batcher.submit(None, [9.0]))
        keep = asyncio.ensure_future(batcher.submit(None, [8.0]))
        await asyncio.sleep(0)
        doomed.cancel()
        assert (await keep).scores.tolist() == [8.0]
        assert sent[-1] == 1  # the cancelled call never left

    asyncio.run(main())


def test_batcher_reports_per_call_failures():
    async def send(calls):
        return [ValueError("bad") if c[0] == "bad" else ScoreOutput(scores=torch.zeros(1)) for c in calls]

    async def main():
        batcher = Batcher(send, BatchConfig(max_batch=8, max_wait_s=0.005))
        good, bad = await asyncio.gather(
            batcher.submit("ok", [0]), batcher.submit("bad", [0]), return_exceptions=True
        )
        assert isinstance(good, ScoreOutput) and isinstance(bad, ValueError)

    asyncio.run(main())


def test_in_process_coordinator_equals_run_consensus_and_streams():
    run = _run()
    coord = local_coordinator(run)
    result = asyncio.run(coord.run(None))
    gen = run.generator.build()
    from ensemble.aggregate import ScorerEnsemble

    ens = ScorerEnsemble({n: s.build() for n, s in run.scorer_specs().items()})
    ref = run_consensus(gen, ens, None, run.consensus)
    assert result.output.tolist() == ref.output.tolist()
    assert [comparable(r) for r in result.rounds] == [comparable(r) for r in ref.rounds]

    async def collect():
        return [x async for x in coord.stream(None)]

    *records, final = asyncio.run(collect())
    assert [comparable(r) for r in records] == [comparable(r) for r in final.rounds]


def test_cluster_yaml_passes_rays_own_validation():
    yaml = pytest.importorskip("yaml")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)  # raises on a schema violation; no cloud calls
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and config["head_node_type"] == "head"
    assert any("pip install -e" in c for c in config["setup_commands"])


def test_workers_keep_software_rendering_on_their_reserved_cpus(monkeypatch):
    import os
    import subprocess
    import sys

    from actors.workers import pin_render_threads

    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    assert pin_render_threads() == 1  # outside a Ray worker: one CPU
    # asking Ray for the assignment must not start a default Ray instance (in /tmp/ray, with a
    # dashboard) when nothing is connected: a fresh process, as `ensemble bench robot` builds one
    code = "import ray; from actors.workers import pin_render_threads; pin_render_threads(); print(ray.is_initialized())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert os.environ["LP_NUM_THREADS"] == "1"
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # a user's setting wins
    pin_render_threads()
    assert os.environ["LP_NUM_THREADS"] == "3"

"""Robot manipulation on Ray (``ray`` tier): sharded rollouts over environment actors."""

from __future__ import annotations

import numpy as np
import pytest

from actors.env_runners import EnvSpec, RayRolloutExecutor, shard
from ensemble.aggregate import ScorerEnsemble
from ensemble.config import ConsensusConfig
from ensemble.consensus import run_consensus
from ensemble.tasks.robot.mpc import MPCGenerator
from ensemble.tasks.robot.view_relations import ViewRelationsScorer
from ensemble.tasks.robot.world_model import LocalExecutor, SimulatorWorldModel

pytestmark = pytest.mark.ray

ENV_ID = "envs:Tabletop-Relations-v0"
KWARGS = {"cameras": ("front", "top"), "width": 32, "height": 32}
GOAL = {"goal": "blue mug on top of red bowl; green mug left of yellow bowl; red bowl right of yellow bowl",
        "objects": ["red bowl", "blue mug", "green mug", "yellow bowl"]}


def test_shard_covers_everything():
    assert shard(7, 2) == [slice(0, 4), slice(4, 7)] or shard(7, 2) == [slice(0, 3), slice(3, 7)]
    assert shard(1, 3) == [slice(0, 1)]


def _episode(executor=None):
    gen = MPCGenerator(ENV_ID, KWARGS, n_candidates=8, iterations=2, max_steps=2, executor=executor)
    ensemble = ScorerEnsemble({c: ViewRelationsScorer(c, "simulator") for c in KWARGS["cameras"]})
    try:
        state0 = gen.init_state(GOAL, 4)
        return run_consensus(gen, ensemble, gen.scorer_context(state0), ConsensusConfig(seed=4), state=state0)
    finally:
        gen.close()


def test_same_seed_same_episode_locally_and_on_ray(ray_cluster):
    local = _episode()
    executor = RayRolloutExecutor(EnvSpec(ENV_ID, KWARGS), num_runners=2, num_cpus=0.5)
    remote = _episode(executor)
    assert remote.output == local.output
    assert [r.best for r in remote.rounds] == [r.best for r in local.rounds]


def test_killed_env_actor_is_rebuilt_and_its_rollouts_retried(ray_cluster):
    wm = SimulatorWorldModel(ENV_ID, **KWARGS)
    wm.reset(2)
    state = wm.snapshot()
    plans = [np.array([[i % 4, 0.05 * i - 0.2, 0.0]], dtype=np.float32) for i in range(6)]
    expected = LocalExecutor(wm).rollouts(state, plans, "segmentation")
    executor = RayRolloutExecutor(EnvSpec(ENV_ID, KWARGS), num_runners=2, num_cpus=0.5)
    try:
        victim = executor.runners[1]
        victim.crash.remote()
        got = executor.rollouts(state, plans, "segmentation")
        assert executor.rebuilt >= 1 and executor.retried >= 1
        for a, b in zip(got, expected, strict=True):
            assert np.array_equal(a.segmentation["top"], b.segmentation["top"]) and a.relations == b.relations
        assert all(h["copies"] == 1 for h in executor.health())
    finally:
        executor.close()
        wm.close()

"""One contract test over every registered scorer, generator and task, built on tiny real models.

A new component is tested here as soon as it is registered (with ``tiny=`` arguments).
"""

from __future__ import annotations

import asyncio
import pickle

import pytest
import torch

from ensemble import GENERATORS, SCORERS, TASKS, ConsensusConfig, Generator, Proposal, ScoreOutput, Scorer
from ensemble.aggregate import ScorerEnsemble
from ensemble.consensus import run_consensus
from ensemble.contracts import UPDATE_RULES, Item, Task


def _views_example() -> list:
    """Two predicted outcomes of a one-camera scene: the red bowl left of the blue mug, then right of it."""
    import numpy as np

    from ensemble.tasks.robot.world_model import Outcome

    outcomes = []
    for bowl_x, mug_x in ((4, 20), (20, 4)):
        seg = np.full((32, 32), -1, dtype=np.int32)
        rgb = np.full((32, 32, 3), 180, dtype=np.uint8)
        seg[20:24, bowl_x : bowl_x + 8], rgb[20:24, bowl_x : bowl_x + 8] = 0, (217, 31, 31)
        seg[14:24, mug_x : mug_x + 4], rgb[14:24, mug_x : mug_x + 4] = 1, (38, 77, 230)
        centres = np.array([[bowl_x / 100, 0.0, 0.02], [mug_x / 100, 0.0, 0.045]])
        outcomes.append(Outcome({"front": rgb}, {"front": seg}, ["red bowl", "blue mug"], [bowl_x < mug_x], centres))
    return outcomes


EXAMPLES = {
    "views": ({"goal": "red bowl left of blue mug", "relations": [["left of", "red bowl", "blue mug"]]}, _views_example),
    "vector": (None, lambda: torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.3, 0.2]])),
    "image": ({"prompt": "a red square", "label": 3}, lambda: torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1),
    "video": ({"question": "what color is the shape?", "frames": torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))},
              lambda: ["red", "blue circle", ""]),
    "text": (
        {"question": "Tom has 3 apples and buys 2 more. How many apples does he have?"},
        lambda: ["He has 3 + 2 = <<3+2=5>>5 apples.\n#### 5", "He has 3 - 2 = 1", ""],
    ),
}


@pytest.fixture(scope="module", params=SCORERS.names())
def scorer(request) -> tuple[str, Scorer]:
    return request.param, SCORERS.make_tiny(request.param)


def test_scorer_contract(scorer):
    name, sc = scorer
    assert isinstance(sc, Scorer)
    assert sc.modality in EXAMPLES, f"scorer {name!r}: add an example for modality {sc.modality!r} here"
    context, make = EXAMPLES[sc.modality]
    candidates = make()
    out = sc.score(context, candidates)
    assert isinstance(out, ScoreOutput)
    scores = torch.as_tensor(out.scores)
    assert scores.shape == (len(candidates),) and torch.isfinite(scores).all()
    again = asyncio.run(sc.ascore(context, candidates))
    assert torch.allclose(torch.as_tensor(again.scores), scores, atol=1e-5), "scores must be deterministic"
    if not sc.differentiable:
        with pytest.raises(TypeError, match="not differentiable"):
            sc.score(context, candidates, need_grad=True)
        return
    out = sc.score(context, candidates, need_grad=True)
    grad = torch.as_tensor(out.grad)
    assert grad.shape == candidates.shape and torch.isfinite(grad).all()
    # A small step along the gradient raises every candidate's score.
    step = 1e-2 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (grad.dim() - 1))
    moved = torch.as_tensor(sc.score(context, candidates + step).scores)
    assert (moved > scores - 1e-6).all() and (moved > scores).any()


def _ensemble_for(rule: str, modality: str = "vector") -> tuple[ScorerEnsemble, object]:
    if modality == "views":  # MPC: candidates are predicted camera views
        return ScorerEnsemble({"front": SCORERS.make_tiny("view_relations")}), EXAMPLES["views"][0]
    if modality == "image":  # diffusion: candidates are images, scored by the tiny CLIP and classifier
        scorers = {"clip": SCORERS.make_tiny("clip"), "classifier": SCORERS.make_tiny("classifier")}
        return ScorerEnsemble(scorers), EXAMPLES["image"][0]
    if rule == "token":
        return ScorerEnsemble({"verifier": SCORERS.make_tiny("sequence_classifier")}), EXAMPLES["text"][0]["question"]
    return ScorerEnsemble({"a": SCORERS.make("quadratic", target=[1.0, 0.0]), "b": SCORERS.make("quadratic", target=[0.0, 1.0])}), None


@pytest.mark.parametrize("name", GENERATORS.names())
def test_generator_contract(name):
    gen = GENERATORS.make_tiny(name)
    assert isinstance(gen, Generator) and gen.update_rule in UPDATE_RULES
    ensemble, context = _ensemble_for(gen.update_rule, getattr(gen, "modality", "vector"))
    states = []
    result = run_consensus(gen, ensemble, context, ConsensusConfig(max_rounds=12, seed=1),
                           callback=lambda rec, st: states.append(pickle.dumps(st)))
    assert result.rounds and len(states) == len(result.rounds)
    for record in result.rounds:
        assert set(record.scorer_energy) == set(ensemble.names) and record.missing == []
    restored = pickle.loads(states[-1])
    assert gen.output(restored) is not None
    # Same seed → same rounds.
    again = run_consensus(gen, ensemble, context, ConsensusConfig(max_rounds=12, seed=1))
    assert [r.best for r in again.rounds] == [r.best for r in result.rounds]
    proposal = gen.propose(gen.init_state(context, 1), context)
    assert isinstance(proposal, Proposal) and len(proposal) > 0


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name):
    task = TASKS.make_tiny(name)
    assert isinstance(task, Task)
    items = task.items(3, seed=7)
    assert len(items) == 3 and all(isinstance(i, Item) for i in items)
    assert len({i.id for i in items}) == 3
    assert [i.id for i in task.items(3, seed=7)] == [i.id for i in items]
    for item in items:
        assert task.metric(task.answer("", item), item) in (0.0, 1.0) or isinstance(task.metric(task.answer("", item), item), float)

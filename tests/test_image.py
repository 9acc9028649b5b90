"""Image generation: the guided diffusion sampler, the image task and its metrics, the CLI.

Unit tier on tiny real models (a 16 px class-conditional UNet, a tiny CLIP, a tiny classifier, all
random init); the slow tier trains the small shapes models (reduced settings) when their checkpoints are
missing and checks that scorer guidance does not hurt the independent classifier's accuracy.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from ensemble.aggregate import ScorerEnsemble
from ensemble.config import ConsensusConfig, EnsembleConfig
from ensemble.consensus import run_consensus
from ensemble.generators.diffusion import DiffusionGenerator
from ensemble.models.tiny import tiny_unet
from ensemble.registry import SCORERS
from ensemble.tasks.image.data import CLASS_NAMES, class_index, labels_from_qa, prompt
from ensemble.tasks.image.task import (
    STANDARD_CONFIGS,
    ImageTask,
    SamplerSettings,
    build_system,
    frechet_distance,
    inception_score,
    kernel_distance,
)

CONTEXT = {"prompt": "a red circle", "label": 0}


@pytest.fixture(scope="module")
def diffusion():
    torch.manual_seed(0)
    return tiny_unet(num_classes=len(CLASS_NAMES))


@pytest.fixture(scope="module")
def scorers():
    return {"clip": SCORERS.make_tiny("clip", scale=10.0), "classifier": SCORERS.make_tiny("classifier")}


def _sample(diffusion, scorers, seed=0, weights=None, **kwargs):
    kwargs = {"steps": 4, "n_samples": 2, **kwargs}
    gen = DiffusionGenerator(diffusion, **kwargs)
    ensemble = ScorerEnsemble(scorers, EnsembleConfig(weights=weights or {}))
    return run_consensus(gen, ensemble, CONTEXT, ConsensusConfig(seed=seed))


def _summed_energy(scorers, images) -> float:
    return sum(-float(s.score(CONTEXT, images).scores.mean()) for s in scorers.values())


def test_guided_sampler_records_every_scorer_each_step(diffusion, scorers):
    result = _sample(diffusion, scorers, guidance_scale=1.0)
    assert len(result.rounds) == 4 and result.stop_reason == "generator_done"
    assert result.output.shape == (2, 3, 16, 16) and result.output.abs().max() <= 1
    for record in result.rounds:
        assert set(record.scorer_energy) == {"clip", "classifier"} and record.missing == []
        assert record.info["grad_rms"] > 0 and record.info["t"] is not None
    ts = [r.info["t"] for r in result.rounds]
    assert ts == sorted(ts, reverse=True)


def test_guidance_lowers_the_summed_energy(diffusion, scorers):
    unguided = _sample(diffusion, scorers, guidance_scale=0.0)
    guided = _sample(diffusion, scorers, guidance_scale=0.5)
    assert all(r.info["grad_rms"] == 0 for r in unguided.rounds)
    assert _summed_energy(scorers, guided.output) < _summed_energy(scorers, unguided.output)


def test_guidance_on_the_noisy_sample(diffusion, scorers):
    unguided = _sample(diffusion, scorers, guidance_scale=0.0, guide="xt")
    guided = _sample(diffusion, scorers, guidance_scale=0.5, guide="xt")
    assert (guided.output - unguided.output).abs().max() > 1e-4
    assert all(r.info["grad_rms"] > 0 for r in guided.rounds)


def test_same_seed_same_image_and_cfg_changes_it(diffusion, scorers):
    a = _sample(diffusion, scorers, seed=3, guidance_scale=0.5)
    b = _sample(diffusion, scorers, seed=3, guidance_scale=0.5)
    assert torch.equal(a.output, b.output)
    assert not torch.equal(a.output, _sample(diffusion, scorers, seed=4, guidance_scale=0.5).output)
    cfg = _sample(diffusion, scorers, seed=3, guidance_scale=0.5, cfg_scale=3.0)
    assert (cfg.output - a.output).abs().max() > 1e-3
    assert all(r.info["cfg"] > 0 for r in cfg.rounds) and all(r.info["cfg"] == 0 for r in a.rounds)


def test_state_pickles_and_resumes(diffusion, scorers):
    straight = _sample(diffusion, scorers, seed=1, guidance_scale=0.5)
    gen = DiffusionGenerator(diffusion, steps=4, n_samples=2, guidance_scale=0.5)
    ensemble = ScorerEnsemble(scorers)
    states = []
    run_consensus(gen, ensemble, CONTEXT, ConsensusConfig(seed=1, max_rounds=2), callback=lambda r, s: states.append(pickle.dumps(s)))
    state = pickle.loads(states[-1])
    assert state.step == 2 and state.label == 0
    resumed = run_consensus(gen, ensemble, CONTEXT, ConsensusConfig(seed=1), state=state, start_round=2)
    assert torch.allclose(resumed.output, straight.output, atol=1e-6)


def test_generator_validates_inputs(diffusion):
    with pytest.raises(ValueError, match="guide"):
        DiffusionGenerator(diffusion, guide="noise")
    with pytest.raises(ValueError, match="steps"):
        DiffusionGenerator(diffusion, steps=0)
    gen = DiffusionGenerator(diffusion, class_names=list(CLASS_NAMES))
    assert gen.label({"label": "blue triangle"}) == class_index("blue triangle")
    with pytest.raises(ValueError, match="null class"):
        gen.label({"label": len(CLASS_NAMES)})


def test_build_system_weights_follow_the_config(diffusion, scorers):
    settings = SamplerSettings(steps=2, cfg_scale=2.5)
    gen, ens = build_system(STANDARD_CONFIGS["cls"], diffusion, scorers, settings)
    assert gen.guidance_scale == settings.guidance_scale and gen.cfg_scale == 1.0
    assert ens.weight("clip") == 0.0 and ens.weight("classifier") == 1.0
    gen, ens = build_system(STANDARD_CONFIGS["alone"], diffusion, scorers, settings)
    assert gen.guidance_scale == 0.0 and gen.propose(gen.init_state(CONTEXT, 0), CONTEXT).need_grad is False
    gen, _ = build_system(STANDARD_CONFIGS["all"], diffusion, scorers, settings)
    assert gen.cfg_scale == 2.5 and gen.guidance_scale > 0


# -- data, task, metrics -----------------------------------------------------------------------------


def test_labels_from_questions_and_answers():
    qs = ["what is the blue shape?", "does the image not contain a gray shape?", "is there a triangle?"]
    assert labels_from_qa(qs, ["rectangle", "yes", "no"]) == ("blue", "rectangle")
    assert labels_from_qa(["is there not a red shape?", "what shape is in the image?"], ["no", "circle"]) == ("red", "circle")
    assert labels_from_qa(["what color is the shape?"], ["teal"]) == ("teal", None)
    assert prompt(class_index("a teal triangle")) == "a teal triangle"


def test_task_items_are_balanced_and_seeded():
    task = ImageTask()
    items = task.items(48, seed=0)
    assert [i.id for i in items] == [i.id for i in task.items(48, seed=0)]
    assert sorted(i.target for i in items) == sorted(list(range(24)) * 2)
    assert [i.target for i in task.items(24, seed=1)] != [i.target for i in items[:24]]
    assert items[0].context == {"prompt": prompt(items[0].target), "label": items[0].target}
    assert task.metric(task.answer("", items[0]), items[0]) == 0.0


def test_distribution_metrics():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(400, 4, generator=gen, dtype=torch.float64)
    shifted = b + 2.0
    assert frechet_distance(a, b) < 0.2 and 14 < frechet_distance(a, shifted) < 18  # 4 dims × 2² = 16
    assert abs(kernel_distance(a, b)) < 0.05 < kernel_distance(a, shifted)
    assert inception_score(torch.eye(5)) == pytest.approx(5.0)
    assert inception_score(torch.full((5, 5), 0.2)) == pytest.approx(1.0)


def test_eval_and_run_cli_on_tiny_models(tmp_path, diffusion):
    from actors.cli import main

    unet, scheduler = diffusion
    unet.save_pretrained(tmp_path / "unet" / "unet")
    scheduler.save_pretrained(tmp_path / "unet" / "scheduler")
    (tmp_path / "unet" / "model_index.json").write_text('{"_class_name": "DDIMPipeline"}')
    results = tmp_path / "r.jsonl"
    argv = ["eval", "image", "--n", "3", "--steps", "2", "--systems", "alone,all", "--no-progress", "--out", str(results),
            "--unet", str(tmp_path / "unet"), "--clip", "tiny-clip", "--classifier", "tiny-image-classifier",
            "--evaluator", "tiny-image-classifier"]
    assert main(argv) == 0
    assert len(results.read_text().splitlines()) == 6
    assert main(argv) == 0 and len(results.read_text().splitlines()) == 6  # resumed: nothing redone
    table = (tmp_path / "r.jsonl.md").read_text()
    assert "diffusion alone" in table and "+ CLIP + classifier + CFG" in table and "FID-like" in table
    assert main(["run", "image", "--prompt", "a red circle", "--n-samples", "2", "--steps", "2", "--out",
                 str(tmp_path / "g.png"), "--unet", str(tmp_path / "unet"), "--clip", "tiny-clip",
                 "--classifier", "tiny-image-classifier"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0


# -- slow tier: the small models trained on the shapes -------------------------------------------------


@pytest.mark.slow
def test_trained_models_guided_accuracy_at_least_unguided(tmp_path, monkeypatch):
    """Uses the trained checkpoints when present; otherwise trains reduced ones in a private cache."""
    from ensemble.models import load_diffusion
    from ensemble.tasks.image.models import ImageTrainConfig, missing_models, train_image_models
    from ensemble.tasks.image.task import build_scorers

    torch.set_num_threads(1)
    missing = missing_models()
    if missing:
        monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "cache"))
        cfg = ImageTrainConfig(unet_steps=400, classifier_steps=300, clip_steps=300)
        train_image_models(cfg, log=lambda msg: None)
    settings = SamplerSettings(steps=15)
    task = ImageTask()
    diffusion = load_diffusion("image/shapes-unet")
    scorers = build_scorers(settings=settings)
    items = task.items(16, seed=0, split="train")
    accuracy = {}
    for name in ("alone", "all"):
        gen, ens = build_system(STANDARD_CONFIGS[name], diffusion, scorers, settings)
        hits = [task.metric(task.answer(run_consensus(gen, ens, it.context, ConsensusConfig(seed=i)).output, it), it)
                for i, it in enumerate(items)]
        accuracy[name] = sum(hits) / len(hits)
    assert accuracy["all"] >= accuracy["alone"], accuracy

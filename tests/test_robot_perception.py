"""Robot perception (unit tier): objects located from segmented views, proposals without privileged state,
the learned SegFormer segmenter (tiny config: shapes, save/load, training data labels)."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.aggregate import ScorerEnsemble
from ensemble.config import ConsensusConfig
from ensemble.consensus import run_consensus
from ensemble.tasks.robot.mpc import MPCGenerator
from ensemble.tasks.robot.perception import ObjectLocator, pixel_rays, triangulate
from ensemble.tasks.robot.view_relations import ViewRelationsScorer
from ensemble.tasks.robot.world_model import SimulatorWorldModel

ENV_ID = "envs:Tabletop-Relations-v0"
CAMERAS = ("front", "left", "top")
OBJECTS = ["red bowl", "blue mug", "green mug", "yellow bowl"]
GOAL = {"goal": "blue mug on top of red bowl; green mug left of yellow bowl; red bowl right of yellow bowl",
        "objects": OBJECTS}


def _true_centres(wm: SimulatorWorldModel) -> np.ndarray:
    return np.asarray(wm.env.object_geometry().centres)


class BlindfoldedWorld(SimulatorWorldModel):
    """The simulator as a world model that withholds object positions: ``info()`` has no ``"centres"``
    (reading them raises ``KeyError``; outcomes carry none)."""

    def info(self):
        info = super().info()
        del info["centres"]
        return info


def test_pixel_rays_hit_what_the_camera_sees():
    wm = SimulatorWorldModel(ENV_ID, cameras=CAMERAS)
    try:
        wm.reset(4)
        calib = wm.calibration()
        seg = wm.segment()
        centres = _true_centres(wm)
        for camera in CAMERAS:
            ys, xs = np.nonzero(seg[camera] == 0)
            origin, d = pixel_rays(calib[camera], np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]))
            # the ray through object 0's mask centroid passes within 2 cm of its centre
            v = centres[0] - origin
            assert np.linalg.norm(v - (v @ d[0]) * d[0]) < 0.02, camera
        # two rays through one point meet there; one ray is cut at the centre height
        p = np.array([0.1, -0.05, 0.03])
        o1, o2 = np.zeros(3) + [0, -1, 1], np.array([1.0, 0.0, 1.0])
        d1, d2 = (p - o1) / np.linalg.norm(p - o1), (p - o2) / np.linalg.norm(p - o2)
        assert np.allclose(triangulate([o1, o2], [d1, d2]), p) and np.allclose(triangulate([o1], [d1]), p)
    finally:
        wm.close()


@pytest.mark.parametrize("segmenter, render, tol", [("simulator", "segmentation", 0.02), ("colour", "rgb", 0.03)])
def test_locator_finds_objects_from_three_views(segmenter, render, tol):
    wm = SimulatorWorldModel(ENV_ID, cameras=CAMERAS)
    try:
        errors = []
        for seed in range(6):
            wm.reset(seed)
            if seed % 2:  # a stack: object 0 onto object 1
                wm.step(np.array([0, *_true_centres(wm)[1, :2]], dtype=np.float32))
            found = ObjectLocator(segmenter, wm.calibration()).locate(wm.outcome(render))
            centres = _true_centres(wm)
            errors += [np.hypot(*(found[n][:2] - centres[i, :2])) for i, n in enumerate(wm.info()["object_names"]) if n in found]
        assert len(errors) >= 20 and np.median(errors) < tol / 2 and np.percentile(errors, 80) < tol, np.round(errors, 3)
    finally:
        wm.close()


def test_planner_never_reads_object_positions_from_the_simulator_state():
    wm = BlindfoldedWorld(ENV_ID, cameras=CAMERAS, width=48, height=48)
    gen = MPCGenerator(ENV_ID, n_candidates=24, iterations=2, max_steps=2, world_model=wm, segmenter="colour",
                       render="rgb", object_centric=0.5)
    try:
        state = gen.init_state(GOAL, 3)
        centres = _true_centres(wm)[state.objects, :2]
        # the positions the proposals aim at were seen, and they are where the objects are
        assert np.all(np.isfinite(state.located)) and np.abs(state.located - centres).max() < 0.03
        plans = gen.propose(state, None).info["plans"][:, 0]
        near = [np.min(np.hypot(*(centres - p[1:]).T)) for p in plans]
        assert sum(d < 0.04 for d in near) >= 4  # object-centric targets, from perception
        assert all(o.centres is None for o in gen.propose(state, None).candidates)
        # and a whole episode plans without them
        ensemble = ScorerEnsemble({f"view_{c}": ViewRelationsScorer(c, "colour") for c in CAMERAS})
        result = run_consensus(gen, ensemble, gen.scorer_context(state), ConsensusConfig(seed=3), state=state)
        assert result.output["steps"] >= 1 and sum(result.output["relations"]) >= sum(state.relations)
    finally:
        gen.close()
    with pytest.raises(KeyError):
        wm.info()["centres"]


def test_tiny_segformer_segments_a_batch_and_survives_a_save_load_round_trip(tmp_path):
    from transformers import SegformerForSemanticSegmentation

    from ensemble.tasks.robot.segformer import (
        CLASSES,
        SegformerSegmenter,
        segformer_config,
        to_pixels,
        upsampled_logits,
    )

    seg = SegformerSegmenter("tiny")
    wm = SimulatorWorldModel(ENV_ID, cameras=CAMERAS, width=32, height=32)
    try:
        wm.reset(0)
        outcomes = [wm.outcome("rgb")] * 3
    finally:
        wm.close()
    model = seg.load()
    logits = upsampled_logits(model, to_pixels(np.stack([o.views["front"] for o in outcomes])))
    assert tuple(logits.shape) == (3, len(CLASSES), 32, 32)
    masks = seg.segment_many(outcomes, "front")
    names = [n.lower() for n in outcomes[0].object_names]
    assert len(masks) == 3 and all(sorted(m) == sorted(names) for m in masks)
    assert all(m[n].shape == (32, 32) and m[n].dtype == bool for m in masks for n in names)
    # only background and the scene's objects are ever predicted
    labels = seg.labels(np.stack([o.views["top"] for o in outcomes]), names)
    assert set(np.unique(labels)) <= {0, *(CLASSES.index(n) for n in names)}
    # save / load: the same predictions from the directory, by the same segmenter class
    model.save_pretrained(tmp_path / "seg")
    again = SegformerSegmenter(tmp_path / "seg")
    assert isinstance(again.load(), SegformerForSemanticSegmentation)
    assert again.load().config.to_dict()["hidden_sizes"] == segformer_config("tiny").hidden_sizes
    for a, b in zip(again.segment_many(outcomes, "left"), seg.segment_many(outcomes, "left"), strict=True):
        assert all(np.array_equal(a[n], b[n]) for n in names)
    with pytest.raises(FileNotFoundError, match="ensemble train robot-segmenter"):
        SegformerSegmenter(str(tmp_path / "missing")).load()


def test_segmenter_training_data_labels_are_the_simulator_masks_and_fitting_lowers_the_loss():
    from ensemble.tasks.robot.segformer import CLASSES
    from ensemble.tasks.robot.segmenter_train import (
        SegmenterTrainConfig,
        build_segformer,
        fit,
        iou_per_class,
        render_dataset,
    )

    images, labels = render_dataset(3, 2_000_000, ENV_ID, resolution=32)
    assert images.shape == (12, 32, 32, 3) and labels.shape == (12, 32, 32) and images.dtype == np.uint8
    assert labels.max() < len(CLASSES) and (labels == 0).mean() > 0.5 and (labels > 0).any()
    # the same scene rendered again gives the same labels (seeded scenes, moves and lighting)
    again_images, again = render_dataset(1, 2_000_000, ENV_ID, resolution=32)
    assert np.array_equal(again, labels[:4]) and np.array_equal(again_images, images[:4])
    model = build_segformer("tiny")
    cfg = SegmenterTrainConfig(scenes=3, heldout_scenes=1, steps=30, batch_size=8, lr=1e-2, size="tiny")
    losses = fit(model, images, labels, cfg, progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    ious = iou_per_class(model, images, labels)
    assert set(ious) == set(CLASSES) and 0.0 <= ious["background"] <= 1.0


def test_cem_refits_a_mixture_around_the_elites_and_keeps_exploring():
    from ensemble.tasks.robot.oracle_relations import OracleRelationsScorer

    gen = MPCGenerator(ENV_ID, {"cameras": ("top",), "width": 32, "height": 32}, n_candidates=40, iterations=3,
                       max_steps=1, elite_frac=0.1, explore=0.25, elite_std=0.02)
    ensemble = ScorerEnsemble({"oracle": OracleRelationsScorer()})
    try:
        state = gen.init_state(GOAL, 0)
        context = gen.scorer_context(state)
        proposal = gen.propose(state, context)
        state = gen.refine(state, proposal, ensemble.score(context, proposal))
        elites = state.elites[:, 0]
        assert state.iteration == 1 and len(elites) == 4
        plans = gen._sample(state)[:, 0]
        # 30 of 40 from the elite mixture (same object as an elite, target within 5 sigma), 10 fresh
        near = [np.any((elites[:, 0] == p[0]) & (np.hypot(*(elites[:, 1:] - p[1:]).T) < 0.1)) for p in plans]
        assert sum(near) >= 30 and np.array_equal(plans[0], state.best_plan[0])
        with pytest.raises(ValueError, match="distribution"):
            MPCGenerator(distribution="kde")
    finally:
        gen.close()


def test_planner_bench_control_step_executes_one_action_and_reports_the_chosen_energy():
    from ensemble.tasks.robot.bench_planner import VARIANTS, control_step
    from ensemble.tasks.robot.oracle_relations import OracleRelationsScorer

    ensemble = ScorerEnsemble({"oracle": OracleRelationsScorer()})
    for name in ("random", "cem-elites+explore"):
        gen = MPCGenerator(ENV_ID, {"cameras": ("top",), "width": 32, "height": 32}, n_candidates=8, iterations=2,
                           max_steps=1, **VARIANTS[name])
        try:
            state, energy, elites = control_step(gen, ensemble, gen.init_state(GOAL, 0))
            assert state.step == 1 and np.isfinite(energy) and (elites is None) == (name == "random")
        finally:
            gen.close()


def test_goal_photo_layout_scorer_prefers_the_photographed_arrangement():
    from ensemble.tasks.robot.view_layout import ViewLayoutScorer
    from envs import oracle_plan

    wm = SimulatorWorldModel(ENV_ID, cameras=CAMERAS)
    try:
        wm.reset(0, options=GOAL)
        start = wm.snapshot()
        photo, holds = wm.env.goal_photo()
        assert holds and np.array_equal(wm.snapshot(), start)  # the photo's arrangement meets the goal; state kept
        before = wm.outcome("rgb")
        for obj, x, y in oracle_plan(wm.env.goal, wm.env.object_geometry()):
            wm.step(np.array([obj, x, y], dtype=np.float32))
        arranged = wm.outcome("rgb")
        assert all(arranged.relations)
    finally:
        wm.close()
    for camera in CAMERAS:
        scorer = ViewLayoutScorer(camera, "colour")
        scores = scorer.score({"goal_views": photo}, [arranged, before]).scores
        assert float(scores[0]) > float(scores[1]) and float(scores[0]) > -0.3, (camera, scores)
        assert scorer.score({"goal_views": {}}, [arranged, before]).scores.tolist() == [0.0, 0.0]  # no photo: no opinion


def test_run_command_takes_a_goal_photo(tmp_path, capsys):
    from actors.cli import main

    photo = tmp_path / "goal.png"
    common = ["--scene-seed", "3", "--segmenter-model", "tiny", "--candidates", "4", "--iterations", "1", "--max-steps", "1"]
    assert main(["run", "robot", "--save-goal-image", str(photo), *common]) == 0 and photo.is_file()
    code = main(["run", "robot", "--goal-image", str(photo), "--out", str(tmp_path / "ep.gif"), *common])
    out = capsys.readouterr().out
    assert code in (0, 1) and "step 1: move" in out and (tmp_path / "ep.gif").is_file()


def _png(width: int, height: int, seed: int = 0) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_served_goal_photo_becomes_the_goal_views_or_a_clear_error():
    import base64

    from ensemble.registry import TASKS
    from ensemble.tasks.robot.serve import RobotRequest

    task = TASKS.make("robot")
    b64 = base64.b64encode(_png(100, 80)).decode()
    item, system, seed = task.request_item(RobotRequest(scene_seed=4, seed=2, goal_image_base64=b64, goal_camera="top"))
    assert system == "3views-photo-cem" and seed == 2 and item.context["scene_seed"] == 4
    assert item.context["goal_views"]["top"].shape == (80, 100, 3) and item.context["goal_views"]["top"].dtype == np.uint8
    item, system, _ = task.request_item(RobotRequest(scene_seed=4))
    assert system == "3views-cem" and "goal_views" not in item.context  # no photo: the text-goal default
    bad = {"not valid base64": "@@@@", "not a readable image": base64.b64encode(b"hello, not a png").decode(),
           "at most 2048 px": base64.b64encode(_png(3000, 2)).decode()}
    for reason, data in bad.items():
        with pytest.raises(ValueError, match=reason):
            task.request_item(RobotRequest(goal_image_base64=data))
    from ensemble.contracts import ContextError
    from ensemble.tasks.robot.solver import RobotSettings, RobotSolver

    item, system, seed = task.request_item(RobotRequest(goal_image_base64=b64, system="3views-cem"))
    solver = RobotSolver(task, RobotSettings(**task.settings_for(tiny=True)))
    with pytest.raises(ContextError, match="needs a photo system, e.g. 3views-photo-cem"):  # before any episode work
        solver.solve(item, system, seed)
    assert task.max_request_bytes > len(base64.b64encode(bytes(4 * 2**20)))  # a 4 MiB photo fits the body limit


def test_goal_photos_are_fitted_to_the_renders_and_checked_against_the_cameras():
    from ensemble.contracts import ContextError
    from ensemble.tasks.robot.goal_photo import fit_goal_photos, read_photo

    wm = SimulatorWorldModel(ENV_ID, width=32, height=24)
    try:
        photo = read_photo(_png(100, 80))
        fitted = fit_goal_photos({"front": photo, "top": photo[:24, :32]}, wm)
        assert fitted["front"].shape == (24, 32, 3) and fitted["top"].shape == (24, 32, 3)
        assert np.array_equal(fitted["top"], photo[:24, :32])  # already at render size: unchanged
        with pytest.raises(ContextError, match="'right' is not one of this system's cameras: front, left, top"):
            fit_goal_photos({"right": photo}, wm)
        with pytest.raises(ContextError, match=r"\(H, W, 3\)"):
            fit_goal_photos({"front": photo[..., 0]}, wm)
        gen = MPCGenerator(ENV_ID, n_candidates=4, world_model=wm, segmenter="colour")
        state = gen.init_state({**GOAL, "scene_seed": 3, "goal_views": {"front": photo}}, 0)
        assert state.goal_views["front"].shape == (24, 32, 3)  # a photo of any size plans at the render size
    finally:
        wm.close()

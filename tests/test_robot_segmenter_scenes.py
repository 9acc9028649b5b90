"""The segmenter's training scenes (unit tier): the hard-scene options and the held-out IoU helpers."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.tasks.robot.training_scenes import PLAIN, SceneOptions, pair_names, partner, render_scenes

ENV_ID = "envs:Tabletop-Relations-v0"


def test_hard_scene_options_make_same_colour_pairs_and_toppled_objects():
    hard = SceneOptions(pair_scenes=1.0, partner_moves=1.0, rim_moves=1.0, onto_moves=1.0, max_moves=4)
    _, labels, names, tilted = render_scenes(10, 2_000_000, ENV_ID, resolution=16, options=hard)
    _, plain_labels, plain_names, plain_tilted = render_scenes(10, 2_000_000, ENV_ID, resolution=16)
    colours = [len({n.split()[0] for n in scene}) for scene in names]
    assert colours == [2] * 10  # every scene: two bowl/mug pairs of one colour each
    assert sorted({n.split()[1] for n in names[0]}) == ["bowl", "mug"]
    assert sum(t > 0 for t in tilted) >= 2 and sum(t > 0 for t in tilted) > sum(t > 0 for t in plain_tilted)
    assert any(len({n.split()[0] for n in scene}) > 2 for scene in plain_names)  # the plain generator: random objects
    assert labels.shape == plain_labels.shape == (40, 16, 16)


def test_plain_scene_options_reproduce_the_earlier_renders():
    from ensemble.tasks.robot.segmenter_train import render_dataset

    images, labels, _, _ = render_scenes(2, 3_000_000, ENV_ID, resolution=16, options=PLAIN)
    again_images, again = render_dataset(2, 3_000_000, ENV_ID, resolution=16)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again)


def test_scene_option_helpers_and_validation():
    names = pair_names(np.random.default_rng(0))
    assert len(set(names)) == 4 and len({n.split()[0] for n in names}) == 2
    assert names[partner(names, 0)].split()[0] == names[0].split()[0] and partner(names, 0) != 0
    assert partner(["red bowl", "blue mug", "green mug", "yellow bowl"], 0) is None
    with pytest.raises(ValueError, match="rim_moves"):
        SceneOptions(rim_moves=1.5)
    from ensemble.tasks.robot.segmenter_train import SegmenterTrainConfig

    with pytest.raises(ValueError, match="pair_scenes"):
        SegmenterTrainConfig(pair_scenes=-0.1)
    assert SegmenterTrainConfig().scene_options == PLAIN  # the default checkpoint's scenes
    assert SegmenterTrainConfig(rim_moves=0.6).scene_options.rim_moves == 0.6


def test_scene_restricted_iou_only_predicts_the_scenes_objects():
    from ensemble.tasks.robot.bench_segmenter import iou_from_labels
    from ensemble.tasks.robot.segformer import CLASSES
    from ensemble.tasks.robot.segmenter_train import build_segformer, iou_per_class, scene_classes

    allowed = scene_classes([["red bowl", "red mug", "blue bowl", "blue mug"]])
    assert allowed.shape == (4, len(CLASSES)) and allowed.sum(1).tolist() == [5] * 4
    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    labels = np.zeros((4, 16, 16), dtype=np.uint8)
    labels[:, 4:8, 4:8] = CLASSES.index("red mug")
    ious = iou_per_class(build_segformer("tiny"), images, labels, allowed=allowed)
    for absent in ("green bowl", "yellow mug"):  # never predicted, never labelled
        assert np.isnan(ious[absent])
    assert iou_from_labels(labels, labels, len(CLASSES))[CLASSES.index("red mug")] == 1.0

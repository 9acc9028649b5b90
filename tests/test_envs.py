"""Fast tests of the tabletop environments (no Ray): API contract, determinism, snapshots, relations."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs  # noqa: E402
from envs.oracle import goal_columns, oracle_plan  # noqa: E402
from envs.relations import (  # noqa: E402
    LEFT_OF,
    ON_TOP_OF,
    RIGHT_OF,
    ObjectGeometry,
    Relation,
    evaluate,
    format_goal,
    parse_goal,
    sample_goal,
)

ENVS_DIR = Path(envs.__file__).parent
NAMES = ["red bowl", "blue mug", "green mug"]


@pytest.fixture(scope="module")
def env():
    """One 3-camera env shared by the tests that only reset and step it."""
    e = gym.make("Tabletop-Relations-v0").unwrapped
    yield e
    e.close()


def _assert_obs_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------- registry and API contract
@pytest.mark.parametrize("env_id", sorted(envs.ENV_IDS))
def test_check_env_passes_for_every_registered_id(env_id: str) -> None:
    e = gym.make(env_id)
    try:
        check_env(e.unwrapped)
        obs, _ = e.reset(seed=0)
        assert set(obs) == {*envs.ENV_IDS[env_id]["cameras"], "state"}
    finally:
        e.close()


def test_import_is_cheap_and_layering_holds() -> None:
    code = "import sys, envs; assert 'mujoco' not in sys.modules, 'envs imported mujoco eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ENVS_DIR.parent)
    allowed = {"numpy", "gymnasium", "mujoco", "PIL", "envs", *sys.stdlib_module_names}
    for path in ENVS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"


def test_bad_configuration_is_rejected_with_the_valid_values() -> None:
    with pytest.raises(ValueError, match="front"):
        envs.TabletopRelationsEnv(cameras=("back",))
    with pytest.raises(ValueError, match="num_relations"):
        envs.TabletopRelationsEnv(num_objects=3, num_relations=4)


# ---------------------------------------------------------------- determinism and snapshots
def test_same_seed_gives_same_goal_and_images(env) -> None:
    other = envs.TabletopRelationsEnv()
    try:
        obs_a, info_a = env.reset(seed=7)
        obs_b, info_b = other.reset(seed=7)
        assert info_a["goal"] == info_b["goal"]
        _assert_obs_equal(obs_a, obs_b)
        goals = {env.reset(seed=s)[1]["goal"] for s in range(5)}
        assert len(goals) > 1
    finally:
        other.close()


def test_restore_then_step_is_exact(env) -> None:
    env.reset(seed=3)
    env.step(env.action_space.sample())
    snapshot = env.get_state()
    action = env.make_action(1, 0.05, -0.1)
    first = env.step(action)
    env.step(env.make_action(0, -0.2, 0.1))  # wander off
    env.set_state(snapshot)
    np.testing.assert_array_equal(env.get_state(), snapshot)
    second = env.step(action)
    _assert_obs_equal(first[0], second[0])
    assert first[1:4] == second[1:4] and first[4] == second[4]

    other = envs.TabletopRelationsEnv()  # a fresh copy with another scene takes the snapshot too
    try:
        other.reset(seed=99)
        other.set_state(snapshot)
        assert other.goal_text == env.goal_text and other.object_names == env.object_names
        _assert_obs_equal(first[0], other.step(action)[0])
        with pytest.raises(ValueError, match="does not fit"):
            other.set_state(snapshot[:-1])
    finally:
        other.close()


# ---------------------------------------------------------------- relation logic
def _upright(centres_xy_z: list[tuple[float, float, float]]) -> ObjectGeometry:
    """Bowl (r .055, half height .02), mug, mug, placed with their centres as given."""
    return ObjectGeometry.upright(
        np.array(centres_xy_z), radii=[0.055, 0.03, 0.03], half_heights=[0.02, 0.045, 0.045]
    )


def test_left_right_use_front_camera_x_with_a_margin() -> None:
    geom = _upright([(-0.2, 0.0, 0.02), (0.0, 0.1, 0.045), (0.03, -0.1, 0.045)])
    clear = [Relation(LEFT_OF, 0, 1), Relation(RIGHT_OF, 1, 0), Relation(RIGHT_OF, 0, 1)]
    assert evaluate(clear, geom) == [True, True, False]
    within_margin = [Relation(LEFT_OF, 1, 2), Relation(RIGHT_OF, 2, 1)]
    assert evaluate(within_margin, geom) == [False, False]


def test_on_top_needs_contact_and_overlap() -> None:
    mug_on_bowl = _upright([(0.0, 0.0, 0.02), (0.02, 0.0, 0.04 + 0.045), (0.3, 0.0, 0.045)])
    assert evaluate([Relation(ON_TOP_OF, 1, 0), Relation(ON_TOP_OF, 0, 1)], mug_on_bowl) == [True, False]
    floating = _upright([(0.0, 0.0, 0.02), (0.0, 0.0, 0.15), (0.3, 0.0, 0.045)])
    beside = _upright([(0.0, 0.0, 0.02), (0.07, 0.0, 0.085), (0.3, 0.0, 0.045)])
    assert not evaluate([Relation(ON_TOP_OF, 1, 0)], floating)[0]
    assert not evaluate([Relation(ON_TOP_OF, 1, 0)], beside)[0]
    bowl_on_mug = _upright([(0.3, 0.0, 0.09 + 0.02), (0.0, 0.0, 0.045), (0.3, 0.0, 0.045)])
    assert evaluate([Relation(ON_TOP_OF, 0, 2), Relation(ON_TOP_OF, 0, 1)], bowl_on_mug) == [True, False]


# ---------------------------------------------------------------- goal text
def test_goal_text_round_trips_and_accepts_synonyms() -> None:
    goal = [Relation(ON_TOP_OF, 1, 0), Relation(LEFT_OF, 2, 0), Relation(RIGHT_OF, 0, 2)]
    text = format_goal(goal, NAMES)
    assert text == "blue mug on top of red bowl; green mug left of red bowl; red bowl right of green mug"
    assert parse_goal(text, NAMES) == goal
    assert (
        parse_goal("The Blue mug is on the red bowl.\ngreen mug to the left of red bowl", NAMES) == goal[:2]
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("purple mug on top of red bowl", "unknown object 'purple mug'.*valid objects: red bowl, blue mug"),
        (
            "blue mug under red bowl",
            "cannot parse goal phrase 'blue mug under red bowl'.*left of, right of, on top of",
        ),
        ("red bowl left of red bowl", "itself"),
        (" ; ", "empty goal"),
    ],
)
def test_goal_parse_errors_name_the_phrase_and_valid_words(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_goal(text, NAMES)


def test_sampled_goals_are_distinct_pairs_and_consistent() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        goal = sample_goal(rng, num_objects=4, num_relations=3)
        assert len({frozenset((r.subject, r.reference)) for r in goal}) == 3
        goal_columns(goal, 4)  # raises if the goal cannot be built as stacks side by side


# ---------------------------------------------------------------- the primitive reaches goals
@pytest.mark.parametrize("seed", range(4))
def test_oracle_placements_achieve_sampled_goals(env, seed: int) -> None:
    _, info = env.reset(seed=seed)
    assert not info["success"]
    plan = oracle_plan(env.goal, env.object_geometry())
    assert len(plan) <= env.max_steps
    for obj, x, y in plan:  # a left/right goal may hold before every object has moved
        _, reward, terminated, truncated, info = env.step(env.make_action(obj, x, y))
        assert not truncated
        if terminated:
            break
    assert terminated and info["success"] and info["relations"] == [True] * 3 and reward == 3.0


def test_given_goal_text_and_truncation(env) -> None:
    goal = "yellow bowl on top of red mug; blue mug left of red mug"
    _, info = env.reset(seed=1, options={"goal": goal})
    assert info["goal"] == goal and {"yellow bowl", "red mug", "blue mug"} <= set(info["object_names"])
    assert info["goal_relations"][0][0] == "on top of" and info["relations"] == [False, info["relations"][1]]
    red_mug = info["object_names"].index("red mug")
    for k in range(env.max_steps):
        *_, terminated, truncated, info = env.step(env.make_action(red_mug, 0.25 * (-1) ** k, 0.0))
        assert not terminated and truncated == (k == env.max_steps - 1)
    assert info["elapsed_steps"] == env.max_steps
    with pytest.raises(ValueError, match="valid objects"):
        env.reset(options={"goal": "red bowl on top of pink mug"})


# ---------------------------------------------------------------- rendering
def test_segmentation_maps_pixels_to_objects(env) -> None:
    env.reset(seed=2)
    for i, x in enumerate((-0.25, -0.08, 0.08, 0.25)):
        env.step(env.make_action(i, x, 0.0))
    seg = env.render_views(segmentation=True)
    assert set(seg) == set(env.cameras)
    for camera, labels in seg.items():
        assert labels.shape == (64, 64) and set(np.unique(labels)) <= {-1, 0, 1, 2, 3}, camera
    columns = [np.nonzero(seg["front"] == i)[1].mean() for i in range(4)]
    assert columns == sorted(columns)  # left to right in the image, as in the world
    np.testing.assert_array_equal(env.segment("top"), seg["top"])


def test_render_grid_and_save_strip(tmp_path: Path) -> None:
    e = gym.make("Tabletop-Relations-v0", render_mode="rgb_array", render_size=(48, 40))
    try:
        e.reset(seed=0)
        frame = e.render()
        assert frame.shape == (48, 3 * 40 + 2 * 2, 3) and frame.dtype == np.uint8
        from PIL import Image

        from ensemble.media import save_strip

        png = save_strip([frame, frame], tmp_path / "strip.png")
        gif = save_strip([frame, 255 - frame], tmp_path / "strip.gif")  # (equal frames would merge)
        assert Image.open(png).size == (frame.shape[1], 2 * frame.shape[0] + 2)  # wide frames stack top to bottom
        assert Image.open(gif).n_frames == 2
    finally:
        e.close()
        e.close()  # closing twice is allowed


def test_gripper_is_seen_at_pick_and_place_and_parked_out_of_every_view() -> None:
    e = gym.make("Tabletop-Relations-4view-v0").unwrapped
    try:
        e.reset(seed=1)
        parked = e.render_views()
        gripper = [i for i in range(e.model.ngeom) if e.model.geom(i).name.startswith("gripper")]
        groups = e.model.geom_group.copy()
        e.model.geom_group[gripper] = 3  # hidden
        assert all(np.array_equal(parked[c], v) for c, v in e.render_views().items())  # parked: in no view
        e.model.geom_group[:] = groups
        state = e.get_state()
        action = e.make_action(0, 0.1, 0.05)
        frames = e.pick_and_place_frames(action)
        assert len(frames) == 3 and e.elapsed_steps == 1
        for camera in e.cameras:  # the gripper shows in the pick and place frames, not after parking
            assert (frames[0][camera] != frames[2][camera]).any() and (frames[1][camera] != frames[2][camera]).any()
        e.set_state(state)
        e.step(action)
        assert all(np.array_equal(frames[2][c], v) for c, v in e.render_views().items())  # physics as step
    finally:
        e.close()

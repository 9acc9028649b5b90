"""TabletopRelations: arrange coloured mugs and bowls to satisfy spatial relations, seen by several cameras.

One step is one pick-and-place primitive: the chosen object is lifted upright, held just above whatever
lies under the target point (the table or the top of another object) and released; physics then
settles for a fixed number of steps. Objects can therefore end up on top of others, and badly placed
ones tip over or slide off.

Action: ``Box(3,)`` float32 ``(object, x, y)``: ``object`` in ``[-0.5, N - 0.5]`` is rounded to an
object index; ``(x, y)`` is the target in metres, within ``|x| <= 0.30``, ``|y| <= 0.20`` (clipped).

Observation: ``Dict`` with one (H, W, 3) uint8 image per camera, keyed by camera name, and, unless
``include_state=False``, ``"state"``: (N, 3) float32 object centres (metres, clipped to +-10).

The goal (see :mod:`envs.relations`) is sampled at reset from the seed, or given as
``reset(options={"goal": "red bowl on top of blue mug; ..."})``; ``options["objects"]`` may fix the
scene's objects (names like ``"red bowl"``). Reward is the number of goal relations that hold; the
episode terminates when all hold and truncates after ``max_steps`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs import relations as rel
from envs.media import tile_views
from envs.scene import (
    CAMERAS,
    COLOUR_NAMES,
    DEFAULT_CAMERAS,
    GRIPPER_HOVER,
    GRIPPER_PARK,
    KIND_NAMES,
    KINDS,
    WORK_X,
    WORK_Y,
    apply_layout,
    build_scene_xml,
    object_name,
    scene_handles,
)

ALL_OBJECT_NAMES: tuple[str, ...] = tuple(
    object_name(c, k) for c in range(len(COLOUR_NAMES)) for k in range(len(KIND_NAMES))
)
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION  # full physics + warm start: exact replays
_GEOM = int(mujoco.mjtObj.mjOBJ_GEOM)  # as a plain int: comparing arrays to the enum is slow
_DROP_GAP = 0.003  # released this far above the surface under the target (metres)
_STATE_BOUND = 10.0  # "state" observations are clipped to +-this (metres); only fallen objects get near


class TabletopRelationsEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Pick-and-place of coloured mugs and bowls towards a goal of spatial relations.

    Args:
        cameras: names of the cameras to observe, from ``"front"``, ``"left"``, ``"right"``, ``"top"``.
        width: image width in pixels.
        height: image height in pixels.
        num_objects: objects per scene (2 to 8; every object has a distinct colour-kind name).
        num_relations: relations per sampled goal.
        max_steps: pick-and-place steps before the episode is truncated.
        settle_steps: physics steps (4 ms each) simulated after every release.
        include_state: add the ``"state"`` entry (object centres) to observations.
        render_mode: ``None`` or ``"rgb_array"`` (all views side by side).
        render_size: ``(height, width)`` of each view in :meth:`render`; default the observation size.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        width: int = 64,
        height: int = 64,
        num_objects: int = 4,
        num_relations: int = 3,
        max_steps: int = 6,
        settle_steps: int = 100,
        include_state: bool = True,
        render_mode: str | None = None,
        render_size: tuple[int, int] | None = None,
    ) -> None:
        # 1. Check the configuration.
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be distinct names from {sorted(CAMERAS)}, got {list(cameras)}")
        if not 2 <= num_objects <= len(ALL_OBJECT_NAMES):
            raise ValueError(f"num_objects must be in [2, {len(ALL_OBJECT_NAMES)}], got {num_objects}")
        pairs = num_objects * (num_objects - 1) // 2
        if not 1 <= num_relations <= pairs:
            raise ValueError(
                f"num_relations must be in [1, {pairs}] for {num_objects} objects, got {num_relations}"
            )
        if min(width, height) < 16 or max_steps < 1 or settle_steps < 1:
            raise ValueError("need width, height >= 16, max_steps >= 1 and settle_steps >= 1")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.cameras = tuple(cameras)
        self.width, self.height = int(width), int(height)
        self.num_objects, self.num_relations = int(num_objects), int(num_relations)
        self.max_steps, self.settle_steps = int(max_steps), int(settle_steps)
        self.include_state = include_state
        self.render_mode = render_mode
        self.render_size = tuple(render_size) if render_size else (self.height, self.width)

        # 2. Build the simulator.
        biggest = max(self.width, self.height, *self.render_size)
        self.model = mujoco.MjModel.from_xml_string(
            build_scene_xml(self.num_objects, max_render_size=biggest)
        )
        self.data = mujoco.MjData(self.model)
        self._handles = scene_handles(self.model, self.num_objects)
        self._state_size = mujoco.mj_stateSize(self.model, _STATE_SPEC)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._gripper = int(self.model.body_mocapid[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "gripper")])
        self._default_lighting = (
            (self.model.vis.headlight.ambient.copy(), self.model.vis.headlight.diffuse.copy()),
            (self.model.light_diffuse[0].copy(), self.model.light_dir[0].copy()),
        )

        # 3. Spaces.
        n = self.num_objects
        self.action_space = spaces.Box(
            low=np.array([-0.5, -WORK_X, -WORK_Y], dtype=np.float32),
            high=np.array([n - 0.5, WORK_X, WORK_Y], dtype=np.float32),
            dtype=np.float32,
        )
        obs = {c: spaces.Box(0, 255, (self.height, self.width, 3), dtype=np.uint8) for c in self.cameras}
        if include_state:
            obs["state"] = spaces.Box(-_STATE_BOUND, _STATE_BOUND, (n, 3), dtype=np.float32)
        self.observation_space = spaces.Dict(obs)

        # 4. Episode state (set for real by reset).
        self._layout = np.full((2, n), -1, dtype=np.int64)  # rows: kind, colour per slot
        self._set_layout(np.arange(n) % len(KINDS), np.arange(n) // len(KINDS) % len(COLOUR_NAMES))
        self.goal: list[rel.Relation] = []
        self.elapsed_steps = 0

    # ------------------------------------------------------------------ scene facts
    @property
    def object_names(self) -> list[str]:
        """Goal-text name of every object, index i naming object i (the action's object index)."""
        return [object_name(c, k) for k, c in zip(*self._layout, strict=True)]

    @property
    def goal_text(self) -> str:
        """The goal as text, e.g. ``"red bowl on top of blue mug; green mug left of red bowl"``."""
        return rel.format_goal(self.goal, self.object_names)

    def object_geometry(self) -> rel.ObjectGeometry:
        """Centres, vertical extents and footprint radii of the objects in the current state."""
        kinds = self._layout[0]
        radius = np.array([KINDS[k].radius for k in kinds])
        half = np.array([KINDS[k].half_height for k in kinds])
        axis = self.data.xmat[self._handles.body_ids].reshape(-1, 3, 3)[:, :, 2]  # (N, 3) object z axes
        centres = self.data.xpos[self._handles.body_ids] + axis * half[:, None]
        cos = np.clip(np.abs(axis[:, 2]), 0.0, 1.0)
        extent = half * cos + radius * np.sqrt(1.0 - cos**2)
        return rel.ObjectGeometry(centres, centres[:, 2] - extent, centres[:, 2] + extent, radius)

    def relation_status(self) -> list[bool]:
        """Which goal relations hold now, in goal order."""
        return rel.evaluate(self.goal, self.object_geometry())

    @staticmethod
    def make_action(obj: int, x: float, y: float) -> np.ndarray:
        """The action that moves object ``obj`` to ``(x, y)``."""
        return np.array([obj, x, y], dtype=np.float32)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode: choose objects and goal, scatter the objects on the table, settle."""
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        # 1. Objects (fixed by options, else sampled) and goal (given as text, else sampled).
        names = list(options.get("objects") or [])
        goal = options.get("goal")
        if isinstance(goal, str):
            wanted = {n for r in rel.parse_goal(goal, ALL_OBJECT_NAMES) for n in (r.subject, r.reference)}
            names = names or self._complete_names([ALL_OBJECT_NAMES[i] for i in sorted(wanted)], rng)
        names = names or [
            ALL_OBJECT_NAMES[i] for i in rng.choice(len(ALL_OBJECT_NAMES), self.num_objects, replace=False)
        ]
        self._set_layout_from_names(names)
        if isinstance(goal, str):
            self.goal = rel.parse_goal(goal, self.object_names)
        elif goal is not None:
            self.goal = [r if isinstance(r, rel.Relation) else rel.Relation(*r) for r in goal]
            if any(not 0 <= i < self.num_objects for r in self.goal for i in (r.subject, r.reference)):
                raise ValueError(f"goal relations must index objects 0..{self.num_objects - 1}, got {goal}")
        else:
            self.goal = rel.sample_goal(rng, self.num_objects, self.num_relations)
        # 2. Scatter the objects upright, so that the goal does not already hold, and let them settle.
        mujoco.mj_resetData(self.model, self.data)
        for _ in range(100):
            xy = self._scatter(rng)
            kinds = self._layout[0]
            half = np.array([KINDS[k].half_height for k in kinds])
            centres = np.column_stack([xy, half])
            radii = np.array([KINDS[k].radius for k in kinds])
            if not all(rel.evaluate(self.goal, rel.ObjectGeometry.upright(centres, radii, half))):
                break
        for i, (x, y) in enumerate(xy):
            self._put(i, x, y, 0.0005, yaw=float(rng.uniform(-np.pi, np.pi)))
        mujoco.mj_step(self.model, self.data, nstep=25)
        mujoco.mj_forward(self.model, self.data)
        self.elapsed_steps = 0
        status = self.relation_status()
        return self._observation(), self._info(status)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Pick object ``action[0]`` and place it at ``(action[1], action[2])``, then settle."""
        obj, x, y = self._decode(action)
        self._pick_and_place(obj, x, y)
        self.elapsed_steps += 1
        status = self.relation_status()
        terminated = bool(status) and all(status)
        truncated = not terminated and self.elapsed_steps >= self.max_steps
        info = self._info(status)
        info.update(picked=self.object_names[obj], target=(x, y))
        return self._observation(), float(sum(status)), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """All views side by side, (H, num_cameras * W + gaps, 3) uint8, for ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        renderer = self._renderer(self.render_size)
        return tile_views([self._render(renderer, c, segmentation=False) for c in self.cameras])

    def close(self) -> None:
        """Release the renderers (GL contexts). Safe to call twice."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ------------------------------------------------------------------ planning support
    def get_state(self) -> np.ndarray:
        """Snapshot of everything a step depends on, as a flat float64 vector.

        Layout: ``[state size, num objects, num relations, elapsed steps]``, the MuJoCo integration
        state (``mj_getState`` with ``mjSTATE_INTEGRATION``: time, qpos, qvel, warm start, …), object
        kinds, object colours, then ``(relation type, subject, reference)`` per goal relation.
        """
        physics = np.empty(self._state_size)
        mujoco.mj_getState(self.model, self.data, physics, _STATE_SPEC)
        goal = [(rel.RELATION_TYPES.index(r.kind), r.subject, r.reference) for r in self.goal]
        header = [self._state_size, self.num_objects, len(self.goal), self.elapsed_steps]
        return np.concatenate([header, physics, self._layout.ravel(), np.ravel(goal)]).astype(np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restore a snapshot from :meth:`get_state` (of this env or one built with the same arguments)."""
        state = np.asarray(state, dtype=np.float64)
        size, n, k = (int(v) for v in state[:3])
        if size != self._state_size or n != self.num_objects or state.size != 4 + size + 2 * n + 3 * k:
            raise ValueError(
                f"state of length {state.size} (physics {size}, {n} objects, {k} relations) does not fit this env "
                f"(physics {self._state_size}, {self.num_objects} objects); take it with get_state() of a like env"
            )
        self.elapsed_steps = int(state[3])
        mujoco.mj_setState(self.model, self.data, state[4 : 4 + size], _STATE_SPEC)
        layout = state[4 + size : 4 + size + 2 * n].astype(np.int64).reshape(2, n)
        if not np.array_equal(layout, self._layout):
            self._set_layout(layout[0], layout[1])
        goal = state[4 + size + 2 * n :].astype(np.int64).reshape(k, 3)
        if [(rel.RELATION_TYPES.index(r.kind), r.subject, r.reference) for r in self.goal] != goal.tolist():
            self.goal = [rel.Relation(rel.RELATION_TYPES[t], int(a), int(b)) for t, a, b in goal]
        mujoco.mj_forward(self.model, self.data)

    def goal_photo(self) -> tuple[dict[str, np.ndarray], bool]:
        """Views of the current scene arranged to satisfy the goal (the scripted planner's arrangement).

        The state is restored afterwards. Returns ``(camera -> (H, W, 3) uint8 image, whether the goal
        holds in the photographed arrangement)``: a goal given as photos instead of text.
        """
        from envs.oracle import oracle_plan

        state = self.get_state()
        try:
            for obj, x, y in oracle_plan(self.goal, self.object_geometry()):
                self._pick_and_place(obj, x, y)
            status = self.relation_status()
            return self.render_views(), bool(status) and all(status)
        finally:
            self.set_state(state)

    def move_gripper(self, x: float, y: float, z: float) -> None:
        """Show the gripper with its fingertips at ``(x, y, z)`` (kinematic only: no physics is affected)."""
        self.data.mocap_pos[self._gripper] = (x, y, z)
        mujoco.mj_kinematics(self.model, self.data)

    def park_gripper(self) -> None:
        """Send the gripper out of every camera's view (where it waits between moves)."""
        self.move_gripper(*GRIPPER_PARK)

    def pick_and_place_frames(self, action: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Execute one action like :meth:`step` and return the views as the gripper moves through it.

        Frames: the gripper above the object to pick, above the target with the object released and
        settled, then parked (the plain views). Use for viewing episodes; planning uses :meth:`step`.
        """
        obj, x, y = self._decode(action)
        geom = self.object_geometry()
        self.move_gripper(*geom.centres[obj, :2], geom.tops[obj] + GRIPPER_HOVER)
        frames = [self.render_views()]
        self._pick_and_place(obj, x, y)
        self.elapsed_steps += 1
        geom = self.object_geometry()
        self.move_gripper(*geom.centres[obj, :2], geom.tops[obj] + GRIPPER_HOVER)
        frames.append(self.render_views())
        self.park_gripper()
        frames.append(self.render_views())
        return frames

    def camera_calibration(self) -> dict[str, dict[str, Any]]:
        """Intrinsics and extrinsics of every observed camera (what a calibrated real rig also knows).

        Returns:
            camera name -> ``{"pos": (3,) position, "rot": (3, 3) rotation whose columns are the camera's
            x (image right), y (image up) and z (backwards) axes in the world frame, "fovy": vertical field
            of view in degrees, "width", "height": image size}``.
        """
        out = {}
        for c in self.cameras:
            cid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, c)
            out[c] = {"pos": self.data.cam_xpos[cid].copy(), "rot": self.data.cam_xmat[cid].reshape(3, 3).copy(),
                      "fovy": float(self.model.cam_fovy[cid]), "width": self.width, "height": self.height}
        return out

    def set_lighting(self, ambient: float = 1.0, diffuse: float = 1.0, direction: Sequence[float] | None = None) -> None:
        """Scale the scene's lights (1.0 = the defaults) and optionally point the sun elsewhere.

        Lighting is not part of :meth:`get_state`; it varies renders (e.g. for training a segmenter) and is
        reset to the defaults with ``set_lighting()``.

        Args:
            ambient: factor on the headlight's ambient light.
            diffuse: factor on the headlight's and the sun's diffuse light.
            direction: the sun's direction (normalised here); ``None`` keeps the default.
        """
        if min(ambient, diffuse) < 0:
            raise ValueError(f"light factors must be >= 0, got ambient={ambient}, diffuse={diffuse}")
        head, sun = self._default_lighting
        self.model.vis.headlight.ambient[:] = np.clip(head[0] * ambient, 0, 1)
        self.model.vis.headlight.diffuse[:] = np.clip(head[1] * diffuse, 0, 1)
        self.model.light_diffuse[0] = np.clip(sun[0] * diffuse, 0, 1)
        d = np.asarray(sun[1] if direction is None else direction, dtype=np.float64)
        self.model.light_dir[0] = d / max(float(np.linalg.norm(d)), 1e-9)

    def render_views(self, segmentation: bool = False) -> dict[str, np.ndarray]:
        """Render every observed camera for the current state.

        Returns:
            camera name -> (H, W, 3) uint8 RGB image, or with ``segmentation=True`` an (H, W) int64
            map of object index per pixel (-1 for table, floor and sky).
        """
        renderer = self._renderer((self.height, self.width))
        return {c: self._render(renderer, c, segmentation) for c in self.cameras}

    def segment(self, camera: str) -> np.ndarray:
        """(H, W) int64 object index per pixel seen by ``camera`` (-1 background)."""
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; valid cameras: {sorted(CAMERAS)}")
        return self._render(self._renderer((self.height, self.width)), camera, segmentation=True)

    # ------------------------------------------------------------------ internals
    def _decode(self, action: np.ndarray) -> tuple[int, float, float]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (3,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 3 finite numbers (object, x, y), got {action!r}")
        obj = int(np.clip(np.rint(a[0]), 0, self.num_objects - 1))
        return obj, float(np.clip(a[1], -WORK_X, WORK_X)), float(np.clip(a[2], -WORK_Y, WORK_Y))

    def _pick_and_place(self, obj: int, x: float, y: float) -> None:
        geom = self.object_geometry()
        others = np.arange(self.num_objects) != obj
        under = others & (
            np.hypot(geom.centres[:, 0] - x, geom.centres[:, 1] - y) < geom.radii + geom.radii[obj]
        )
        surface = max(0.0, float(geom.tops[under].max())) if under.any() else 0.0
        w, _, _, z = self.data.qpos[self._handles.qpos_adr[obj] + 3 : self._handles.qpos_adr[obj] + 7]
        self._put(obj, x, y, surface + _DROP_GAP, yaw=2.0 * float(np.arctan2(z, w)))
        mujoco.mj_step(self.model, self.data, nstep=self.settle_steps)
        mujoco.mj_forward(self.model, self.data)

    def _put(self, obj: int, x: float, y: float, z: float, yaw: float) -> None:
        """Place object ``obj`` upright with its bottom centre at (x, y, z), at rest."""
        q, v = self._handles.qpos_adr[obj], self._handles.qvel_adr[obj]
        self.data.qpos[q : q + 7] = (x, y, z, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.data.qvel[v : v + 6] = 0.0

    def _scatter(self, rng: np.random.Generator) -> np.ndarray:
        """(N, 2) non-overlapping positions in the workspace."""
        radii = np.array([KINDS[k].radius for k in self._layout[0]])
        for _ in range(200):
            xy = np.empty((self.num_objects, 2))
            for i, r in enumerate(radii):
                for _ in range(100):
                    xy[i] = rng.uniform((-WORK_X + r, -WORK_Y + r), (WORK_X - r, WORK_Y - r))
                    if all(np.hypot(*(xy[i] - xy[j])) > r + radii[j] + 0.02 for j in range(i)):
                        break
                else:
                    break
            else:
                return xy
        raise RuntimeError(f"cannot scatter {self.num_objects} objects on the table")

    def _complete_names(self, names: list[str], rng: np.random.Generator) -> list[str]:
        if len(names) > self.num_objects:
            raise ValueError(
                f"the goal mentions {len(names)} objects but scenes hold {self.num_objects}: {names}"
            )
        rest = [n for n in ALL_OBJECT_NAMES if n not in names]
        names = names + [rest[i] for i in rng.choice(len(rest), self.num_objects - len(names), replace=False)]
        return [names[i] for i in rng.permutation(len(names))]

    def _set_layout_from_names(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in ALL_OBJECT_NAMES]
        if unknown or len(names) != self.num_objects or len(set(names)) != len(names):
            raise ValueError(
                f"objects must be {self.num_objects} distinct names from {list(ALL_OBJECT_NAMES)}, "
                f"got {names}"
            )
        index = [ALL_OBJECT_NAMES.index(n) for n in names]
        self._set_layout(np.array(index) % len(KIND_NAMES), np.array(index) // len(KIND_NAMES))

    def _set_layout(self, kinds: np.ndarray, colours: np.ndarray) -> None:
        self._layout = np.stack([kinds, colours]).astype(np.int64)
        apply_layout(self.model, self._handles, self._layout[0], self._layout[1])

    def _renderer(self, size: tuple[int, int]) -> mujoco.Renderer:
        if size not in self._renderers:
            self._renderers[size] = mujoco.Renderer(self.model, height=size[0], width=size[1])
        return self._renderers[size]

    def _render(self, renderer: mujoco.Renderer, camera: str, segmentation: bool) -> np.ndarray:
        if not segmentation:
            renderer.update_scene(self.data, camera=camera)
            return renderer.render()
        renderer.enable_segmentation_rendering()
        try:
            renderer.update_scene(self.data, camera=camera)
            ids = renderer.render()
        finally:
            renderer.disable_segmentation_rendering()
        is_geom = ids[..., 1] == _GEOM
        return np.where(is_geom, self._handles.geom_to_object[np.where(is_geom, ids[..., 0], 0)], -1)

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self.render_views()
        if self.include_state:
            obs["state"] = np.clip(self.object_geometry().centres, -_STATE_BOUND, _STATE_BOUND).astype(
                np.float32
            )
        return obs

    def _info(self, status: list[bool]) -> dict[str, Any]:
        return {
            "goal": self.goal_text,
            "relations": status,
            "success": bool(status) and all(status),
            "num_satisfied": int(sum(status)),
            "goal_relations": [r.as_tuple() for r in self.goal],
            "object_names": self.object_names,
            "elapsed_steps": self.elapsed_steps,
        }

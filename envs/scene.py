"""The tabletop scene: object kinds, colours, cameras and the MJCF model.

The world frame has its origin at the centre of the table top, ``x`` pointing to the right as seen
from the ``front`` camera, ``y`` pointing away from it and ``z`` up. The model is compiled once per
environment and holds ``num_objects`` object *slots*. Each slot is a free body carrying both a bowl
and a mug geometry; :func:`apply_layout` switches one of them on (visible, colliding) and the other
off, and recolours the slot. So the same compiled model (and the same GL context) serves every
episode, and a scene layout is just a few integers that snapshots can carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

# Table top: z = 0, half extents in x and y (metres).
TABLE_HALF_X = 0.45
TABLE_HALF_Y = 0.35
TABLE_THICKNESS = 0.03
# Where objects start and where pick-and-place targets may lie: |x| <= WORK_X, |y| <= WORK_Y.
WORK_X = 0.30
WORK_Y = 0.20


@dataclass(frozen=True)
class ObjectKind:
    """Geometry of one kind of object (an upright cylinder with its origin at the bottom centre).

    Attributes:
        name: word used in goal text ("bowl", "mug").
        radius: footprint radius in metres.
        half_height: half of the object's height in metres.
    """

    name: str
    radius: float
    half_height: float


KINDS: tuple[ObjectKind, ...] = (
    ObjectKind("bowl", radius=0.055, half_height=0.02),
    ObjectKind("mug", radius=0.03, half_height=0.045),
)
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.12, 0.65, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.8, 0.1),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)


@dataclass(frozen=True)
class CameraSpec:
    """A fixed camera looking from ``pos`` at ``target`` (world frame, metres)."""

    name: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float] = (0.0, 0.0, 0.03)
    fovy: float = 50.0

    def xyaxes(self) -> str:
        """The camera frame's x (image right) and y (image up) axes, for MJCF ``xyaxes``."""
        forward = np.subtract(self.target, self.pos)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, (0.0, 0.0, 1.0))
        if np.linalg.norm(right) < 1e-6:  # looking straight down: image up is +y (away from front)
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        return " ".join(f"{v:.6f}" for v in (*right, *up))


CAMERAS: dict[str, CameraSpec] = {
    spec.name: spec
    for spec in (
        CameraSpec("front", pos=(0.0, -0.62, 0.62), target=(0.0, 0.0, 0.0), fovy=58.0),
        CameraSpec("left", pos=(-0.55, -0.5, 0.55), target=(0.0, 0.0, 0.0), fovy=55.0),
        CameraSpec("right", pos=(0.55, -0.5, 0.55), target=(0.0, 0.0, 0.0), fovy=55.0),
        CameraSpec("top", pos=(0.0, 0.0, 1.0), target=(0.0, 0.0, 0.0), fovy=45.0),
    )
}
DEFAULT_CAMERAS: tuple[str, ...] = ("front", "left", "top")


def object_name(colour: int, kind: int) -> str:
    """Goal-text name of an object, e.g. ``"red bowl"``."""
    return f"{COLOUR_NAMES[colour]} {KIND_NAMES[kind]}"


def _object_body(slot: int) -> str:
    bowl, mug = KINDS
    return f"""
    <body name="obj{slot}" pos="{0.1 * slot:.3f} 0 0">
      <freejoint name="obj{slot}_joint"/>
      <inertial pos="0 0 0.02" mass="0.2" diaginertia="1.4e-4 1.4e-4 1.6e-4"/>
      <geom name="obj{slot}_bowl" type="cylinder" size="{bowl.radius} {bowl.half_height}"
            pos="0 0 {bowl.half_height}"/>
      <geom name="obj{slot}_bowl_inner" type="cylinder" size="{bowl.radius * 0.8} 0.0012"
            pos="0 0 {2 * bowl.half_height}" contype="0" conaffinity="0"/>
      <geom name="obj{slot}_mug" type="cylinder" size="{mug.radius} {mug.half_height}"
            pos="0 0 {mug.half_height}"/>
      <geom name="obj{slot}_handle" type="box" size="0.012 0.005 0.022"
            pos="{mug.radius + 0.008} 0 {mug.half_height}" contype="0" conaffinity="0"/>
    </body>"""


GRIPPER_PARK = (0.0, 0.0, 2.5)
"""Where the gripper waits between moves: above every camera, so planning renders never see it."""
GRIPPER_HOVER = 0.035
"""Height (metres) of the fingertips above the object the gripper picks or releases."""


def _gripper_body() -> str:
    """A two-finger gripper on a mocap body (kinematic, no collisions: it shows the moves, physics is unchanged)."""
    grey = 'rgba="0.25 0.25 0.28 1" contype="0" conaffinity="0"'
    return f"""
    <body name="gripper" mocap="true" pos="{" ".join(map(str, GRIPPER_PARK))}">
      <geom name="gripper_wrist" type="cylinder" size="0.012 0.08" pos="0 0 0.13" {grey}/>
      <geom name="gripper_palm" type="box" size="0.06 0.015 0.012" pos="0 0 0.05" {grey}/>
      <geom name="gripper_finger_l" type="box" size="0.006 0.012 0.03" pos="-0.05 0 0.01" {grey}/>
      <geom name="gripper_finger_r" type="box" size="0.006 0.012 0.03" pos="0.05 0 0.01" {grey}/>
    </body>"""


def build_scene_xml(num_objects: int, max_render_size: int = 640) -> str:
    """MJCF text of the scene with ``num_objects`` object slots and every camera in :data:`CAMERAS`.

    Args:
        num_objects: number of object slots (free bodies).
        max_render_size: largest image side any renderer will ask for (sets the offscreen buffer).
    """
    cameras = "\n".join(
        f'    <camera name="{c.name}" pos="{" ".join(map(str, c.pos))}" xyaxes="{c.xyaxes()}" fovy="{c.fovy}"/>'
        for c in CAMERAS.values()
    )
    bodies = "".join(_object_body(i) for i in range(num_objects))
    size = max(int(max_render_size), 64)
    leg_x, leg_y, leg_h = TABLE_HALF_X - 0.04, TABLE_HALF_Y - 0.04, 0.35
    legs = "\n".join(
        f'    <geom name="leg{i}" type="box" size="0.025 0.025 {leg_h}" pos="{sx * leg_x} {sy * leg_y} '
        f'{-TABLE_THICKNESS * 2 - leg_h}" rgba="0.45 0.3 0.18 1" contype="0" conaffinity="0"/>'
        for i, (sx, sy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1)))
    )
    return f"""<mujoco model="tabletop_relations">
  <compiler angle="radian"/>
  <option timestep="0.004" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.35 0.35 0.35" specular="0.05 0.05 0.05"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.75 0.82 0.9" rgb2="0.3 0.35 0.4"
             width="32" height="32"/>
  </asset>
  <default>
    <geom friction="0.9 0.01 0.001" solref="0.004 1" rgba="0.5 0.5 0.5 1"/>
  </default>
  <worldbody>
    <light name="sun" pos="0.3 -0.4 1.5" dir="-0.2 0.3 -1" directional="true" castshadow="false"
           diffuse="0.45 0.45 0.45" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.8" rgba="0.82 0.84 0.86 1"/>
    <geom name="table" type="box" size="{TABLE_HALF_X} {TABLE_HALF_Y} {TABLE_THICKNESS}"
          pos="0 0 {-TABLE_THICKNESS}" rgba="0.72 0.58 0.42 1"/>
{legs}
{cameras}
{bodies}
{_gripper_body()}
  </worldbody>
</mujoco>
"""


@dataclass(frozen=True)
class SceneHandles:
    """Indices into the compiled model for each object slot.

    Attributes:
        qpos_adr: (N,) start of each slot's free-joint ``qpos`` (3 position + 4 quaternion).
        qvel_adr: (N,) start of each slot's free-joint ``qvel`` (6 numbers).
        body_ids: (N,) body id of each slot.
        kind_geoms: (N, num kinds) geom ids of the colliding geometry of each kind.
        extra_geoms: (N, num kinds) geom ids of each kind's decorative geometry.
        geom_to_object: (ngeom,) object slot of every geom, -1 for the table, floor and legs.
    """

    qpos_adr: np.ndarray
    qvel_adr: np.ndarray
    body_ids: np.ndarray
    kind_geoms: np.ndarray
    extra_geoms: np.ndarray
    geom_to_object: np.ndarray


def scene_handles(model: mujoco.MjModel, num_objects: int) -> SceneHandles:
    """Look up the per-slot indices of a model built by :func:`build_scene_xml`."""

    def gid(name: str) -> int:
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)

    joints = [
        mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"obj{i}_joint") for i in range(num_objects)
    ]
    body_ids = np.array(
        [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"obj{i}") for i in range(num_objects)]
    )
    geom_to_object = np.full(model.ngeom, -1, dtype=np.int64)
    for slot, body in enumerate(body_ids):
        geom_to_object[model.geom_bodyid == body] = slot
    return SceneHandles(
        qpos_adr=model.jnt_qposadr[joints].copy(),
        qvel_adr=model.jnt_dofadr[joints].copy(),
        body_ids=body_ids,
        kind_geoms=np.array([[gid(f"obj{i}_bowl"), gid(f"obj{i}_mug")] for i in range(num_objects)]),
        extra_geoms=np.array(
            [[gid(f"obj{i}_bowl_inner"), gid(f"obj{i}_handle")] for i in range(num_objects)]
        ),
        geom_to_object=geom_to_object,
    )


def apply_layout(
    model: mujoco.MjModel, handles: SceneHandles, kinds: np.ndarray, colours: np.ndarray
) -> None:
    """Give every slot its kind (geometry on/off) and colour, in place on ``model``.

    Args:
        model: the compiled scene.
        handles: indices from :func:`scene_handles`.
        kinds: (N,) kind index per slot, into :data:`KINDS`.
        colours: (N,) colour index per slot, into :data:`COLOUR_NAMES`.
    """
    hidden_group = 3  # not drawn by the default visualisation options (groups 0-2 are)
    for slot, (kind, colour) in enumerate(zip(kinds, colours, strict=True)):
        rgb = np.array(COLOURS[COLOUR_NAMES[int(colour)]])
        for k in range(len(KINDS)):
            active = k == int(kind)
            body, extra = handles.kind_geoms[slot, k], handles.extra_geoms[slot, k]
            model.geom_contype[body] = model.geom_conaffinity[body] = int(active)
            model.geom_group[body] = model.geom_group[extra] = 0 if active else hidden_group
            model.geom_rgba[body, :3] = rgb
            model.geom_rgba[extra, :3] = rgb * (0.6 if KINDS[k].name == "bowl" else 0.85)

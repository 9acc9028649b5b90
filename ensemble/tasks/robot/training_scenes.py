"""The segmenter's training scenes: random tabletop scenes, optionally biased toward the hard cases.

Replaying the learned segmenter's failures (README, issue 15) showed two scene features behind them:
a bowl and a mug **of one colour** (the SegFormer swaps their labels) and **toppled or leaning**
objects (a bowl on its side looks like a mug). Random scenes hold a same-colour pair often (77 % of
four-of-eight draws) but toppled objects rarely, because the random moves onto another object land
near its centre. :class:`SceneOptions` makes both frequent: scenes made of two same-colour pairs,
moves onto the same-colour partner, and releases on another object's rim (3–8 cm from its centre,
where objects slide off, lean or topple, as in the planner's failed episodes).

The options only change which scenes are *generated*; with :data:`PLAIN` the scenes are exactly the
earlier generator's (the options draw from their own random stream), so held-out renders made with
:data:`PLAIN` are the same images for every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALL_CAMERAS = ("front", "left", "right", "top")
COLOURS = ("red", "green", "blue", "yellow")
RIM_RANGE = (0.03, 0.08)
"""Distance (m) of a rim release from the centre of the object it lands on."""
TILT_DEGREES = 30.0
"""An object whose axis is further than this from vertical counts as toppled (:func:`tilted_objects`)."""


@dataclass(frozen=True)
class SceneOptions:
    """How training scenes are generated (``ensemble train robot-segmenter`` flags of the same names).

    Attributes:
        pair_scenes: probability that a scene's four objects are two same-colour bowl/mug pairs
            (otherwise four random distinct objects, as before).
        partner_moves: probability that a move onto another object picks the moved object's
            same-colour partner, when the scene has one.
        rim_moves: probability that a move onto another object releases on its rim (3–8 cm off its
            centre: the object slides, leans or topples) instead of within 1 cm of its centre.
        onto_moves: probability that a random move goes onto another object (else anywhere on the table).
        max_moves: random pick-and-place moves per scene, 0 to this many.
    """

    pair_scenes: float = 0.0
    partner_moves: float = 0.0
    rim_moves: float = 0.0
    onto_moves: float = 0.5
    max_moves: int = 3

    def __post_init__(self) -> None:
        for name in ("pair_scenes", "partner_moves", "rim_moves", "onto_moves"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be a probability in [0, 1]")
        if self.max_moves < 0:
            raise ValueError(f"max_moves={self.max_moves} must be >= 0")


PLAIN = SceneOptions()
"""The earlier generator's scenes (random objects, 0–3 moves, half onto another object near its centre)."""


def pair_names(rng: np.random.Generator) -> list[str]:
    """Four object names forming two same-colour bowl/mug pairs, in random order."""
    colours = rng.choice(len(COLOURS), 2, replace=False)
    names = [f"{COLOURS[c]} {k}" for c in colours for k in ("bowl", "mug")]
    return [names[i] for i in rng.permutation(4)]


def partner(names: list[str], obj: int) -> int | None:
    """Index of the other kind of the same colour as object ``obj``, if the scene has it."""
    colour = names[obj].split()[0]
    found = [i for i, n in enumerate(names) if i != obj and n.split()[0] == colour]
    return found[0] if found else None


def tilted_objects(env) -> int:
    """How many objects of a tabletop environment lean more than :data:`TILT_DEGREES` from upright."""
    axes = env.data.xmat[env._handles.body_ids].reshape(-1, 3, 3)[:, 2, 2]  # z component of each z axis
    return int((np.abs(axes) < np.cos(np.radians(TILT_DEGREES))).sum())


def random_moves(wm, names: list[str], rng: np.random.Generator, hard: np.random.Generator, options: SceneOptions) -> None:
    """Apply 0..``max_moves`` random pick-and-place moves to the world model's scene.

    ``rng`` draws exactly what the earlier generator drew (so :data:`PLAIN` reproduces its scenes);
    ``hard`` draws the options' choices (partner, rim offset).
    """
    for _ in range(int(rng.integers(0, options.max_moves + 1))):
        obj = int(rng.integers(len(names)))
        if rng.random() < options.onto_moves:  # onto another object (the labeller may read the simulator)
            other = (obj + int(rng.integers(1, len(names)))) % len(names)
            noise = 0.01 * rng.standard_normal(2)
            mate = partner(names, obj)
            if options.partner_moves and mate is not None and hard.random() < options.partner_moves:
                other = mate
            if options.rim_moves and hard.random() < options.rim_moves:
                angle, dist = hard.uniform(0, 2 * np.pi), hard.uniform(*RIM_RANGE)
                noise = dist * np.array([np.cos(angle), np.sin(angle)])
            xy = np.asarray(wm.info()["centres"])[other, :2] + noise
        else:
            xy = rng.uniform((-0.3, -0.2), (0.3, 0.2))
        wm.step(np.array([obj, *xy], dtype=np.float32))


def render_scenes(
    n_scenes: int, seed_base: int, env_id: str = "envs:Tabletop-Relations-v0", resolution: int = 64,
    options: SceneOptions = PLAIN, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[list[str]], list[int]]:
    """Random scenes seen by every camera under random lighting.

    Args:
        n_scenes: scenes; scene ``i`` uses seed ``seed_base + i``.
        seed_base: first scene seed.
        env_id: gymnasium id of the environment.
        resolution: render size in pixels.
        options: how scenes are generated (:data:`PLAIN`: the earlier generator's scenes).
        progress: show a progress bar.

    Returns:
        ``(images, labels, names, tilted)``: ``(n_scenes · 4, H, W, 3)`` uint8 renders, ``(n_scenes · 4, H, W)``
        uint8 class indices into :data:`~ensemble.tasks.robot.segformer.CLASSES`, the object names of every
        scene and its number of toppled objects.
    """
    from tqdm import tqdm

    from ensemble.tasks.robot.segformer import CLASSES
    from ensemble.tasks.robot.world_model import SimulatorWorldModel

    wm = SimulatorWorldModel(env_id, cameras=ALL_CAMERAS, width=resolution, height=resolution)
    images, labels, scene_names, tilted = [], [], [], []
    try:
        for i in tqdm(range(n_scenes), desc="render scenes", disable=not progress):
            rng = np.random.default_rng(seed_base + i)
            hard = np.random.default_rng([seed_base + i, 1])  # the options' own stream
            reset_options = None
            if options.pair_scenes and hard.random() < options.pair_scenes:
                reset_options = {"objects": pair_names(hard)}
            info = wm.reset(seed_base + i, reset_options)
            names = [n.lower() for n in info["object_names"]]
            random_moves(wm, names, rng, hard, options)
            wm.env.set_lighting(ambient=float(rng.uniform(0.4, 1.6)), diffuse=float(rng.uniform(0.4, 1.6)),
                                direction=(*rng.uniform(-0.6, 0.6, 2), -1.0))
            views, segs = wm.render_views(), wm.segment()
            lut = np.array([CLASSES.index(n) for n in names] + [0], dtype=np.uint8)  # index -1 → background
            for camera in ALL_CAMERAS:
                images.append(views[camera])
                labels.append(lut[segs[camera]])
            scene_names.append(names)
            tilted.append(tilted_objects(wm.env))
        wm.env.set_lighting()
    finally:
        wm.close()
    return np.stack(images), np.stack(labels), scene_names, tilted

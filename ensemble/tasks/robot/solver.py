"""The robot solver: named systems (views × scorer × planner), one episode per call.

A system is one row of the results table, ``<perception>-<planner>``: the perception is ``3views`` (one
``view_relations`` scorer per camera, summed, every view segmented from RGB by the learned SegFormer),
``1view``, ``oracle`` (ground-truth relations), ``3views-colour`` (colour rules instead of the learned
segmenter), ``3views-simseg`` (the simulator's segmentation render: the upper bound of perception) or
``3views-photo`` (the goal as photos); the planner is ``cem`` or ``random`` (random shooting), e.g.
``3views-cem``, ``1view-random``. The planner's object-centric proposals are located with the system's own
segmenter. The solver opens one MPC generator per system on first use and keeps it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ensemble.contracts import ContextError, Item, Solver, Task, make_row
from ensemble.eval.seeds import run_seed
from ensemble.eval.table import markdown_table, mean_ci
from ensemble.results import config_hash
from ensemble.tasks.robot.segformer import CHECKPOINT

VIEW_SETS: dict[int, tuple[str, ...]] = {
    1: ("front",),
    2: ("front", "top"),
    3: ("front", "left", "top"),
    4: ("front", "left", "right", "top"),
}
"""Cameras of the N-view systems."""


@dataclass(frozen=True)
class RobotConfig:
    """One system.

    Attributes:
        name: row label.
        views: number of camera views (scorers); ignored by the oracle.
        scorer: ``"views"`` (per-view segmentation scorers of the goal relations), ``"photo"`` (the goal
            given as photos of the arrangement from every camera, per-view layout scorers) or ``"oracle"``
            (ground-truth relations).
        method: ``"cem"`` or ``"random"``.
        segmenter: ``"learned"`` (SegFormer from RGB), ``"colour"`` (RGB rules) or ``"simulator"``
            (segmentation render); the oracle uses it only to locate objects for proposals.
    """

    name: str
    views: int = 3
    scorer: str = "views"
    method: str = "cem"
    segmenter: str = "learned"

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras this system renders."""
        return VIEW_SETS[1] if self.scorer == "oracle" else VIEW_SETS[self.views]


PLANNERS: tuple[str, ...] = ("cem", "random")
"""The planners every system comes with (its name's last part): CEM or random shooting."""
DEFAULT_PLANNER = "cem"
"""The planner of the table's rows and of a request that names no system (chosen on tuning seeds, README)."""


def standard_configs(views: int) -> dict[str, RobotConfig]:
    """The compared systems, by name: every perception variant with every planner, the default planner's first."""
    variants = {  # name prefix: (views, scorer, segmenter)
        f"{views}views": (views, "views", "learned"),
        "1view": (1, "views", "learned"),
        "oracle": (views, "oracle", "simulator"),
        f"{views}views-colour": (views, "views", "colour"),
        f"{views}views-simseg": (views, "views", "simulator"),
        f"{views}views-photo": (views, "photo", "learned"),
    }
    planners = sorted(PLANNERS, key=lambda m: m != DEFAULT_PLANNER)
    return {f"{prefix}-{m}": RobotConfig(f"{prefix}-{m}", n, scorer, m, segmenter)
            for m in planners for prefix, (n, scorer, segmenter) in variants.items()}


@dataclass
class RobotSettings:
    """Solver settings (picklable; part of every system's config hash).

    Attributes:
        views: N of the N-view systems.
        candidates: plans per sampling iteration.
        iterations: sampling iterations per executed action.
        max_steps: executed actions per episode at most (10; was 6: goals with stacks that need an object
            moved out of the way first ran out of actions; chosen on tuning seeds, README).
        env_id: gymnasium id of the environment.
        env_kwargs: extra environment arguments (e.g. render ``width``/``height``).
        frames: keep the tiled camera views of every executed step in the row (Serve, ``run``).
        cem_distribution: CEM's refitted distribution, ``"elites"`` (a mixture around the elite plans) or
            ``"gaussian"`` (one Gaussian per object; the earlier planner).
        cem_explore: fraction of every later CEM iteration's plans drawn afresh from the proposal distribution.
        stable_placement: the planner snaps releases on another object's rim onto its centre or pushes
            them clear (:class:`~ensemble.tasks.robot.mpc.MPCGenerator`; chosen on tuning seeds, README).
        relation_margin: the view scorers' left/right margin in image widths (0.08: a robust gap; the
            environment's 4 cm is about 0.03; chosen on tuning seeds, README).
        hidden_under_stack: when the view scorers judge an object a view does not show where the goal
            object stacked on it is seen (a finished stack hides its base from above): a rule of
            :data:`~ensemble.tasks.robot.spatial.HIDDEN_RULES` (``True`` = ``"always"``, the third pass's
            rule; ``False`` = ``"off"``; chosen on tuning seeds, README).
        lookahead: fraction of the planner's fresh plans that are two actions (the first executed, the
            second proposed again next step; :class:`~ensemble.tasks.robot.mpc.MPCGenerator`; 0.5, chosen
            on tuning seeds, README; 0 is the earlier one-action planner).
        threads: torch CPU threads of the solver's process (the learned segmenter); not part of the hash.
        segmenter_model: the learned systems' SegFormer: a project checkpoint name, a directory, or
            ``"tiny"`` (an untrained tiny model built from its config: tests and ``--tiny`` runs).
    """

    views: int = 3
    candidates: int = 48
    iterations: int = 3
    max_steps: int = 10
    env_id: str = "envs:Tabletop-Relations-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    frames: bool = False
    segmenter_model: str = CHECKPOINT
    cem_distribution: str = "elites"
    cem_explore: float = 0.25
    relation_margin: float = 0.08
    stable_placement: bool = True
    hidden_under_stack: bool | str = "beneath"
    lookahead: float = 0.5
    threads: int = 1

    def __post_init__(self) -> None:
        from ensemble.tasks.robot.spatial import hidden_rule

        self.hidden_under_stack = hidden_rule(self.hidden_under_stack)
        if self.views not in VIEW_SETS:
            raise ValueError(f"views={self.views} must be one of {sorted(VIEW_SETS)}")
        if min(self.candidates, self.iterations, self.max_steps) < 1:
            raise ValueError("candidates, iterations and max_steps must be at least 1")
        if self.relation_margin < 0:
            raise ValueError(f"relation_margin={self.relation_margin} must be >= 0 (image widths)")
        if not 0.0 <= self.lookahead <= 1.0 or (self.lookahead > 0 and self.cem_distribution != "elites"):
            raise ValueError(f"lookahead={self.lookahead} must be in [0, 1] and needs cem_distribution='elites'")
        if self.cem_distribution not in ("elites", "gaussian") or not 0.0 <= self.cem_explore < 1.0:
            raise ValueError(f"cem_distribution={self.cem_distribution!r} must be elites or gaussian and "
                             f"cem_explore={self.cem_explore} in [0, 1)")


def build(config: RobotConfig, settings: RobotSettings, executor: Any = None) -> tuple[Any, Any]:
    """The MPC generator and the scorer ensemble of one system."""
    from ensemble.aggregate import ScorerEnsemble
    from ensemble.registry import GENERATORS, SCORERS
    from ensemble.tasks.robot.segmenters import RGB_SEGMENTERS, make_segmenter
    from ensemble.tasks.robot.task import view_scorers

    name = f"segformer:{settings.segmenter_model}" if config.segmenter == "learned" else config.segmenter
    segmenter = make_segmenter(name)  # one instance: the scorers' and the proposals' eyes
    if config.scorer == "oracle":
        scorers = {"oracle": SCORERS.make("oracle_relations")}
    elif config.scorer == "photo":
        scorers = {f"layout_{c}": SCORERS.make("view_layout", camera=c, segmenter=segmenter) for c in config.cameras}
    else:
        scorers = view_scorers(config.cameras, segmenter, settings.relation_margin, settings.hidden_under_stack)
    rgb = config.scorer != "oracle" and config.segmenter in RGB_SEGMENTERS
    generator = GENERATORS.make(
        "mpc", env_id=settings.env_id, env_kwargs={**settings.env_kwargs, "cameras": config.cameras},
        n_candidates=settings.candidates, iterations=settings.iterations, method=config.method,
        max_steps=settings.max_steps, render="rgb" if rgb else "segmentation", segmenter=segmenter,
        distribution=settings.cem_distribution, explore=settings.cem_explore,
        stable_placement=settings.stable_placement, lookahead=settings.lookahead, executor=executor,
    )
    return generator, ScorerEnsemble(scorers)


class RobotSolver(Solver):
    """Runs one episode of a system toward an item's goal.

    Args:
        task: the robot task.
        settings: budgets and the environment.
        executor_factory: ``(env_id, env_kwargs) -> RolloutExecutor`` for parallel rollouts (the Ray
            layer's environment actors); ``None``: rollouts run in-process.
    """

    def __init__(self, task: Task, settings: RobotSettings, executor_factory: Any = None) -> None:
        self.task, self.settings, self.executor_factory = task, settings, executor_factory
        self.configs = standard_configs(settings.views)
        self._built: dict[str, tuple[Any, Any]] = {}

    def systems(self) -> list[str]:
        return list(self.configs)

    def default_systems(self) -> list[str]:
        """The table's rows: every system with the default planner but the colour rules, and the learned 3-view
        and 1-view rows of the other planner (run the rest by name)."""
        views = self.settings.views
        rows = [n for n, c in self.configs.items() if c.method == DEFAULT_PLANNER and c.segmenter != "colour"]
        return rows + [f"{p}-{m}" for m in PLANNERS if m != DEFAULT_PLANNER for p in (f"{views}views", "1view")]

    def config_hash(self, system: str) -> str:
        self.check_systems([system])
        budget = {"candidates": self.settings.candidates, "iterations": self.settings.iterations,
                  "max_steps": self.settings.max_steps, "proposals": "perception"}
        if self.settings.stable_placement:  # absent from the hash when off: earlier rows keep theirs
            budget["placement"] = "stable"
        if self.settings.lookahead:  # absent from the hash when off: earlier rows keep theirs
            budget["lookahead"] = self.settings.lookahead
        if self.configs[system].method == "cem":
            budget["cem"] = [self.settings.cem_distribution, self.settings.cem_explore]
        spec = {"name": self.task.name, "env_id": self.settings.env_id, "env_kwargs": self.settings.env_kwargs}
        config = self.configs[system]
        if config.scorer == "views":  # the view scorers' margin; RGB masks judged by their largest component
            budget["relations"] = {"margin": self.settings.relation_margin, "largest_component": config.segmenter != "simulator"}
            rule = self.settings.hidden_under_stack  # absent when off, True when always: earlier rows keep theirs
            if rule != "off":
                budget["relations"]["hidden_under_stack"] = True if rule == "always" else rule
        if config.segmenter == "learned":  # a retrained segmenter is another system
            from ensemble.models import checkpoint_fingerprint

            model = self.settings.segmenter_model
            budget["segmenter"] = f"{model}@{checkpoint_fingerprint(model)}" if model != "tiny" else "tiny"
        return config_hash({"task": spec, "config": asdict(config), **budget})

    def _system(self, system: str) -> tuple[Any, Any]:
        if system not in self._built:
            if not self._built:  # the first build: no renderer exists yet in this process
                import torch

                from ensemble.tasks.robot.segformer import preload

                preload()
                torch.set_num_threads(self.settings.threads)
            config = self.configs[system]
            executor = None
            if self.executor_factory is not None:
                executor = self.executor_factory(self.settings.env_id, {**self.settings.env_kwargs, "cameras": config.cameras})
            self._built[system] = build(config, self.settings, executor)
        return self._built[system]

    def solve(self, item: Item, system: str, seed: int = 0, callback: Any = None) -> dict[str, Any]:
        """One episode; ``metric`` is success; ``scorers`` holds each scorer's mean energy of the executed
        candidates; ``extras``: goal, steps, rollouts, actions, relations (and ``frames`` as a GIF when
        the settings ask for them)."""
        from ensemble.config import ConsensusConfig
        from ensemble.consensus import run_consensus

        self.check_systems([system])
        if isinstance(item.context, dict) and "goal_views" in item.context and self.configs[system].scorer != "photo":
            raise ContextError(f"system {system!r} takes the goal as text; a goal photo needs a photo system, "
                               f"e.g. {self.settings.views}views-photo-{DEFAULT_PLANNER}")
        generator, ensemble = self._system(system)
        t0 = time.perf_counter()
        seed_run = run_seed(seed, item)
        context = item.context
        if self.configs[system].scorer == "photo" and isinstance(context, dict) and "goal_views" not in context:
            context = {**context, "goal_photo": True}  # the goal as photos of its arrangement, not as text
        state0 = generator.init_state(context, seed_run)
        context = generator.scorer_context(state0)
        res = run_consensus(generator, ensemble, context, ConsensusConfig(seed=seed_run), state=state0,
                            callback=callback)
        out = res.output
        answer = self.task.answer(out, item)
        energies: dict[str, list[float]] = {}
        for r in res.rounds:
            for name, e in r.scorer_mean_energy.items():
                energies.setdefault(name, []).append(float(e))
        scorers = {n: {"mean_energy": sum(v) / len(v)} for n, v in energies.items()}
        extras = {"goal": state0.goal, "relations": out["relations"], "steps": out["steps"],
                  "rollouts": res.n_candidates, "actions": [list(map(float, a)) for a in out["actions"]],
                  "object_names": list(generator.world_model.info()["object_names"])}
        if self.settings.frames:
            extras["frames_gif_b64"] = episode_gif(generator.world_model, state0.env_state, out["actions"])
        return make_row(item, system, self.config_hash(system), seed, bool(answer), self.task.metric(answer, item),
                        time.perf_counter() - t0, scorers=scorers, extras=extras)

    def close(self) -> None:
        """Close every open environment."""
        for generator, _ in self._built.values():
            generator.close()
        self._built.clear()


def episode_frames(world_model: Any, env_state: Any, actions: list[Any]) -> list[Any]:
    """Tiled camera views before the episode and as each executed action is carried out (the gripper
    above the object it picks, above where it placed it, then parked out of view)."""
    import numpy as np

    from ensemble.media import tile_frames

    world_model.restore(env_state)
    frames = [tile_frames(list(world_model.render_views().values()))]
    for action in actions:
        frames += [tile_frames(list(v.values())) for v in world_model.step_frames(np.asarray(action, dtype=np.float32))]
    return frames


def episode_gif(world_model: Any, env_state: Any, actions: list[Any]) -> str:
    """:func:`episode_frames` as a base64 GIF."""
    import base64

    from ensemble.media import gif_bytes

    return base64.b64encode(gif_bytes(episode_frames(world_model, env_state, actions))).decode()


def robot_table(rows: list[dict[str, Any]], systems: list[str]) -> str:
    """One line per system: success ± 95 % interval, episodes, mean steps and rollouts, seconds."""
    out = []
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        if not mine:
            continue
        n = len(mine)
        mean, half = mean_ci([r["metric"] for r in mine])
        out.append([system, f"{100 * mean:.0f} ± {100 * half:.0f}", n, sum(r["extras"]["steps"] for r in mine) / n,
                    sum(r["extras"]["rollouts"] for r in mine) / n, sum(r["timings"]["seconds"] for r in mine) / n])
    return markdown_table(["system", "success % (95 % CI)", "goals", "mean steps", "rollouts / episode",
                           "s / episode"], out)

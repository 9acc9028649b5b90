"""Model-predictive control over a world model: random shooting or CEM over pick-and-place plans.

Every consensus round is one sampling iteration of the current control step:

1. sample ``n_candidates`` plans (sequences of ``horizon`` pick-and-place actions ``(object, x, y)``)
   from the step's sampling distribution (uniform at first);
2. roll each plan out from the planning state on the world model (restore → apply → render every
   view) through the *rollout executor* (in-process, or sharded over Ray environment actors);
3. the candidates put to the scorers are these predicted outcomes (per-view images / segmentations);
4. refine: keep the plan of lowest summed energy; CEM refits the distribution to the elite plans
   (a mixture with one narrow Gaussian per elite, plus fresh proposals: see :class:`MPCGenerator`);
   after ``iterations`` rounds the first action of the best plan is executed in the environment and
   the robot re-plans from the new state;
5. done when the goal holds (the environment's termination signal) or after ``max_steps`` actions.

The state is a picklable :class:`MPCState` (environment state vector, goal, step, sampling
distribution), so any worker can resume an episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ensemble.contracts import Generator, Proposal
from ensemble.tasks.robot.goal_photo import fit_goal_photos
from ensemble.tasks.robot.perception import ObjectLocator
from ensemble.tasks.robot.segmenters import SimulatorSegmenter
from ensemble.tasks.robot.spatial import named_relations
from ensemble.tasks.robot.world_model import (
    LocalExecutor,
    Outcome,
    RolloutExecutor,
    SimulatorWorldModel,
    WorldModel,
)

METHODS = ("random", "cem")
WORK_X, WORK_Y = 0.30, 0.20
"""Half extents of the region where pick-and-place targets are sampled (metres)."""
OBJECT_RADII = {"bowl": 0.055, "mug": 0.03}
"""Footprint radius (metres) of each object kind, as named in the goal: the robot's model of its objects
(known from their names, like a gripper's CAD models), not state."""
CLEARANCE = 0.01
"""Gap (metres) left between footprints when a placement is pushed clear of an object."""
SNAP_SHRINK = 0.25
"""A release snapped onto an object keeps this fraction of its offset from the seen centre, so stacking
plans stay distinct (seen centres are off by millimetres to centimetres) and CEM can refine them."""


@dataclass
class MPCState:
    """Picklable state of an MPC episode.

    Attributes:
        env_state: the environment's full state vector (``get_state``) at the current control step.
        goal: the goal text.
        seed: base seed of the sampling.
        step: actions executed so far.
        iteration: sampling iteration within the current step.
        probs: ``[horizon, K]`` probabilities of moving each goal object (CEM distribution).
        mean, std: ``[horizon, K, 2]`` Gaussian over the target ``(x, y)`` per object (``distribution="gaussian"``).
        elites: ``[E, horizon, 3]`` elite plans of the last iteration (``distribution="elites"``).
        goal_views: camera -> RGB photo of the desired arrangement (goals given as photos), else ``None``.
        goal_located: ``[K, 2]`` where the goal photos show each object (NaN where not seen).
        carry: the second action of the last executed two-action plan (``lookahead``), proposed again at
            the next control step; ``None`` if there is none.
        best_plan: best ``(horizon, 3)`` plan found at this step; ``best_energy`` its summed energy.
        executed: actions executed so far, ``(object, x, y)`` each.
        relations: which goal relations hold after the last executed action (environment info).
        named_goal: the goal as named relations ``(kind, subject, reference)``, as the environment parsed it.
        success: every goal relation holds.
        done: the episode is over.
        objects: indices of the goal's objects (the ones plans move).
        located: ``[K, 2]`` table positions of the goal objects estimated from the current camera views
            (NaN where an object is not seen); object-centric proposals aim at these.
    """

    env_state: np.ndarray
    goal: str
    seed: int
    step: int = 0
    iteration: int = 0
    probs: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    best_plan: np.ndarray | None = None
    best_energy: float = float("inf")
    executed: list[list[float]] = field(default_factory=list)
    relations: list[bool] = field(default_factory=list)
    named_goal: list[tuple[str, str, str]] = field(default_factory=list)
    success: bool = False
    done: bool = False
    objects: list[int] = field(default_factory=list)
    located: np.ndarray | None = None
    elites: np.ndarray | None = None
    goal_views: dict[str, np.ndarray] | None = None
    goal_located: np.ndarray | None = None
    carry: np.ndarray | None = None


class MPCGenerator(Generator):
    """MPC with random shooting or the cross-entropy method (CEM) over pick-and-place plans.

    Args:
        env_id: gymnasium id of the environment (``"module:Id"`` imports the registering module).
        env_kwargs: keyword arguments for the environment (e.g. ``cameras``, ``width``).
        n_candidates: plans rolled out per round.
        iterations: rounds (sampling iterations) per executed action.
        method: ``"random"`` (uniform sampling, keep the best) or ``"cem"`` (refit to the elites).
        horizon: actions per plan; the first is executed, then the robot re-plans.
        elite_frac: fraction of the plans CEM refits to.
        min_std: CEM's floor on the target std (metres).
        max_steps: actions per episode.
        render: what rollouts render: ``"segmentation"``, ``"rgb"`` or ``"both"`` (what the scorers read).
        object_centric: fraction of uniformly sampled first actions whose target is another goal
            object's position as the cameras show it (plus 1 cm noise) instead of a uniform point:
            object-centric proposals make stacking reachable with few samples. Positions come from
            segmenting the current views (:class:`~ensemble.tasks.robot.perception.ObjectLocator`),
            never from the simulator's state.
        segmenter: what the proposals' object positions are segmented with (name or
            :class:`~ensemble.tasks.robot.segmenters.Segmenter`; the systems pass their scorers' segmenter).
        distribution: CEM's sampling distribution after the first iteration. ``"elites"`` (default): a
            mixture with one Gaussian per elite plan (same object; target std ``elite_std`` halved every
            iteration, floor ``min_std``), so distinct good moves ("A onto B", "C left of D") are refined
            side by side; ``"gaussian"``: one Gaussian per object fitted to its elites (a fit across
            distinct modes lands between them).
        explore: fraction of each CEM iteration's plans drawn afresh from the first iteration's proposal
            distribution (uniform + object-centric), so an early wrong elite set cannot lock the search.
        elite_std: target std (metres) of the elite mixture in the second iteration.
        stable_placement: make every planned placement a stable one, judged from the objects' seen
            positions and their kinds' footprints (:data:`OBJECT_RADII`): a target whose footprint would
            rest on another object's rim is snapped onto that object's centre when within the larger
            radius (a centred stack), else pushed clear of it. Off-centre releases on a rim topple the
            object, and a toppled bowl looks like a mug to the segmenter.
        lookahead: fraction of the fresh plans that are two pick-and-place actions instead of one (the rest
            are padded with a no-action): the second moves another goal object, half the time onto where the
            first action put its object, a quarter onto another object as seen, else anywhere (stabilised
            against the positions after the first action). A greedy one-action planner cannot see a move
            that only pays off after the next one (lift a mug out of a bowl, then put the bowl on it); the
            summed energy of the state after both actions can. Only the first action is executed; the
            second is proposed again at the next step. 0: one-action plans only (the earlier planner).
        executor: a :class:`~ensemble.tasks.robot.world_model.RolloutExecutor`; default: in-process rollouts.
        world_model: the model to plan and execute on; default: the simulator made from ``env_id``.
    """

    update_rule = "selection"
    #: The candidates it proposes: predicted camera views (:class:`~ensemble.tasks.robot.world_model.Outcome`).
    modality = "views"

    def __init__(
        self,
        env_id: str = "envs:Tabletop-Relations-v0",
        env_kwargs: dict[str, Any] | None = None,
        n_candidates: int = 48,
        iterations: int = 3,
        method: str = "cem",
        horizon: int = 1,
        elite_frac: float = 0.15,
        min_std: float = 0.01,
        max_steps: int = 6,
        render: str = "segmentation",
        object_centric: float = 0.5,
        segmenter: Any = "simulator",
        distribution: str = "elites",
        explore: float = 0.25,
        elite_std: float = 0.03,
        stable_placement: bool = True,
        lookahead: float = 0.0,
        executor: RolloutExecutor | None = None,
        world_model: WorldModel | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
        if min(n_candidates, iterations, horizon, max_steps) < 1 or not 0 < elite_frac <= 1:
            raise ValueError(
                "need n_candidates, iterations, horizon, max_steps >= 1 and elite_frac in (0, 1]; got "
                f"{n_candidates}, {iterations}, {horizon}, {max_steps}, {elite_frac}"
            )
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.n, self.iterations, self.method, self.horizon = n_candidates, iterations, method, horizon
        self.elite_frac, self.min_std, self.max_steps, self.render = elite_frac, min_std, max_steps, render
        if not 0.0 <= object_centric <= 1.0:
            raise ValueError(f"object_centric={object_centric} must be in [0, 1]")
        self.object_centric = object_centric
        self.segmenter = segmenter
        if distribution not in ("elites", "gaussian") or not 0.0 <= explore < 1.0 or elite_std <= 0:
            raise ValueError(f"need distribution in (elites, gaussian), explore in [0, 1), elite_std > 0; got "
                             f"{distribution!r}, {explore}, {elite_std}")
        self.distribution, self.explore, self.elite_std = distribution, explore, elite_std
        self.stable_placement = stable_placement
        if not 0.0 <= lookahead <= 1.0 or (lookahead > 0 and (horizon != 1 or distribution != "elites")):
            raise ValueError(f"lookahead={lookahead} must be in [0, 1], and above 0 needs horizon=1 and "
                             f"distribution='elites' (got {horizon}, {distribution!r})")
        self.lookahead = lookahead
        self._locator: ObjectLocator | None = None
        self._world_model = world_model
        self._executor = executor

    # -- components, built on first use ---------------------------------------------------------------
    @property
    def world_model(self) -> WorldModel:
        """The world model the episode runs on (built lazily)."""
        if self._world_model is None:
            self._world_model = SimulatorWorldModel(self.env_id, **self.env_kwargs)
        return self._world_model

    @property
    def executor(self) -> RolloutExecutor:
        """Where candidate rollouts run (in-process unless one was given)."""
        if self._executor is None:
            self._executor = LocalExecutor(self.world_model)
        return self._executor

    def close(self) -> None:
        """Release the world model and the executor."""
        if self._executor is not None:
            self._executor.close()
        if self._world_model is not None:
            self._world_model.close()

    # -- the Generator contract -----------------------------------------------------------------------
    def init_state(self, context: Any, seed: int) -> MPCState:
        """Reset the scene for the goal in ``context`` and snapshot it.

        ``context`` is goal text or a dict with ``"goal"`` and optionally ``"scene_seed"`` (the scene's
        seed; default ``seed``) and ``"objects"`` (the scene's object names). Without a goal, one is
        sampled from the seed. A goal as photos: ``"goal_views"`` (camera -> RGB image of the desired
        arrangement), or ``"goal_photo": True`` to have the world model photograph the goal's arrangement
        from every camera; then every object may be moved, and proposals also aim at where the photos
        show each object.
        """
        ctx = context if isinstance(context, dict) else {"goal": context}
        options = {k: ctx[k] for k in ("goal", "objects") if ctx.get(k)}
        wm = self.world_model
        info = wm.reset(int(ctx.get("scene_seed", seed)), options=options or None)
        names = [n.lower() for n in info["object_names"]]
        mentioned = {n for r in named_relations(info) for n in (r.subject, r.reference)}
        objects = [i for i, n in enumerate(names) if n in mentioned] or list(range(len(names)))
        photos = ctx.get("goal_views") or (wm.goal_photo() if ctx.get("goal_photo") else None)
        if photos:
            objects = list(range(len(names)))
        state = MPCState(
            env_state=wm.snapshot(), goal=info["goal"], seed=int(seed), objects=objects,
            relations=[bool(r) for r in info["relations"]], success=bool(info["success"]),
            named_goal=[(r.kind, r.subject, r.reference) for r in named_relations(info)],
        )
        state.done = state.success
        if photos:
            state.goal_views = fit_goal_photos(photos, wm)  # checked against the cameras, at their render size
            state.goal_located = self._locate_in_photos(state)
        return self._fresh_distribution(self._perceive(state))

    @staticmethod
    def scorer_context(state: MPCState) -> dict[str, Any]:
        """What the scorers judge: the goal text and its named relations (as the environment parsed them),
        and the goal photos when the goal is given as photos."""
        context: dict[str, Any] = {"goal": state.goal, "relations": [list(r) for r in state.named_goal]}
        if state.goal_views:
            context["goal_views"] = state.goal_views
        return context

    def propose(self, state: MPCState, context: Any) -> Proposal:
        """Sample plans and roll them out from the planning state; candidates are the outcomes."""
        plans = self._sample(state)
        outcomes = self.executor.rollouts(state.env_state, list(plans), self.render)
        return Proposal(candidates=outcomes, info={"plans": plans})

    def refine(self, state: MPCState, proposal: Proposal, feedback: Any) -> MPCState:
        """Keep the best plan; CEM refits; after the last iteration execute the best plan's first action."""
        energy = feedback.energy.detach().cpu().numpy()
        plans = proposal.info["plans"]
        i = int(np.argmin(energy))
        state = replace(
            state, executed=list(state.executed), probs=state.probs.copy(), mean=state.mean.copy(), std=state.std.copy()
        )
        if energy[i] < state.best_energy:
            state.best_plan, state.best_energy = plans[i].copy(), float(energy[i])
        if self.method == "cem":
            self._refit(state, plans, energy)
        state.iteration += 1
        if state.iteration < self.iterations:
            return state
        return self._execute(state)

    def is_done(self, state: MPCState) -> bool:
        """The goal holds or the action budget is spent."""
        return state.done

    def output(self, state: MPCState) -> dict[str, Any]:
        """The executed episode: success, steps, actions, final relations, goal."""
        return {
            "success": state.success,
            "steps": state.step,
            "actions": [list(a) for a in state.executed],
            "relations": list(state.relations),
            "goal": state.goal,
        }

    def describe(self, state: MPCState, proposal: Proposal, feedback: Any) -> dict[str, Any]:
        """Step, iteration, the action executed this round (if any), relations and success."""
        executed = state.iteration == 0 and state.executed
        return {
            "step": state.step,
            "iteration": state.iteration,
            "executed": list(state.executed[-1]) if executed else None,
            "relations": list(state.relations),
            "success": state.success,
        }

    # -- sampling ---------------------------------------------------------------------------------------
    def _fresh_distribution(self, state: MPCState) -> MPCState:
        k = len(state.objects)
        state.probs = np.full((self.horizon, k), 1.0 / k)
        state.mean = np.zeros((self.horizon, k, 2))
        state.std = np.broadcast_to(np.array([WORK_X, WORK_Y]), (self.horizon, k, 2)).copy()
        state.iteration, state.best_plan, state.best_energy, state.elites = 0, None, float("inf"), None
        return state

    def _rng(self, state: MPCState) -> np.random.Generator:
        return np.random.default_rng([state.seed, state.step, state.iteration])

    def _sample(self, state: MPCState) -> np.ndarray:
        """``[N, horizon, 3]`` plans: the proposal distribution on the first iteration (always for random
        shooting); then CEM's refitted distribution, with a fraction ``explore`` of fresh proposals; first
        actions made stable (``stable_placement``)."""
        rng = self._rng(state)
        if self.method == "random" or state.iteration == 0:
            plans = self._stabilise(state, self._propose_fresh(state, rng, self.n))
            if state.iteration == 0 and state.carry is not None and self.n > 1:
                plans[-1] = self._stabilise(state, self._pad(state.carry[None, None]))[0]  # finish the last plan
            return plans
        n_fresh = int(round(self.explore * self.n))
        refit = self._sample_elites if self.distribution == "elites" else self._sample_gaussian
        plans = np.concatenate([refit(state, rng, self.n - n_fresh), self._propose_fresh(state, rng, n_fresh)])
        plans = self._stabilise(state, plans)
        if state.best_plan is not None:
            plans[0] = state.best_plan  # elitism: the best plan so far stays in the pool
        return plans

    def _pad(self, plans: np.ndarray) -> np.ndarray:
        """``[N, 1, 3]`` one-action plans as two-action ones (a NaN object: no action) when ``lookahead``."""
        if self.lookahead <= 0:
            return plans
        pad = np.full((len(plans), 1, 3), np.nan, dtype=np.float32)
        return np.concatenate([plans.astype(np.float32), pad], axis=1)

    def _radii(self, state: MPCState) -> np.ndarray:
        """``[K]`` footprint radii of the goal objects, known from their kinds (:func:`placement_radius`)."""
        names = [n.lower() for n in self.world_model.info()["object_names"]]
        return np.array([placement_radius(names[o]) for o in state.objects])

    def _stabilise(self, state: MPCState, plans: np.ndarray) -> np.ndarray:
        """Snap or push each plan's first target off other objects' rims (see ``stable_placement``).

        Uses the seen positions ``state.located`` (perception, not simulator state); objects not seen
        are ignored. Only the first action is adjusted: later ones start from unseen predicted states.
        """
        if not self.stable_placement or state.located is None or len(state.objects) < 2:
            return plans
        radius = self._radii(state)
        index = {o: j for j, o in enumerate(state.objects)}
        bound = np.array([WORK_X, WORK_Y])
        out = plans.copy()
        for p in range(len(out)):
            out[p, 0, 1:] = np.clip(stable_target(out[p, 0, 1:], index[int(round(out[p, 0, 0]))], state.located, radius),
                                    -bound, bound)
        return out

    def _propose_fresh(self, state: MPCState, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform objects and targets, a fraction ``object_centric`` aimed at other objects as seen."""
        k, h = len(state.objects), self.horizon
        plans = np.empty((n, h, 3), dtype=np.float32)
        bound = np.array([WORK_X, WORK_Y])
        for t in range(h):
            which = rng.choice(k, size=n, p=np.full(k, 1.0 / k))
            xy = rng.uniform(-bound, bound, size=(n, 2))
            if t == 0 and self.object_centric > 0 and k > 1 and state.located is not None:
                xy = self._object_centric(state, rng, which, xy)
            plans[:, t, 0] = np.asarray(state.objects)[which]
            plans[:, t, 1:] = np.clip(xy, -bound, bound)
        plans = self._pad(plans)
        if self.lookahead > 0 and k > 1:
            two = np.nonzero(rng.random(n) < self.lookahead)[0]
            plans[two, 1] = self._second_actions(state, rng, plans[two, 0])
        return plans

    def _second_actions(self, state: MPCState, rng: np.random.Generator, first: np.ndarray) -> np.ndarray:
        """``[M, 3]`` second actions after the ``[M, 3]`` first ones (see ``lookahead``): another goal object,
        onto the first's release point (1/2), onto another object as seen (1/4) or anywhere (1/4), made
        stable against the positions after the first action."""
        k, bound = len(state.objects), np.array([WORK_X, WORK_Y])
        index = {o: j for j, o in enumerate(state.objects)}
        out = np.empty((len(first), 3), dtype=np.float32)
        radius = self._radii(state)
        located = state.located if state.located is not None else np.full((k, 2), np.nan)
        for m, (obj, x, y) in enumerate(first):
            moved = index[int(round(obj))]
            after = located.copy()
            after[moved] = (x, y)
            which = (moved + int(rng.integers(1, k))) % k
            u = rng.random()
            if u < 0.5:
                xy = np.array([x, y]) + 0.01 * rng.standard_normal(2)
            elif u < 0.75:
                other = (which + int(rng.integers(1, k))) % k
                xy = after[other] + 0.01 * rng.standard_normal(2)
            else:
                xy = rng.uniform(-bound, bound)
            if not np.all(np.isfinite(xy)):
                xy = rng.uniform(-bound, bound)
            if self.stable_placement:
                xy = stable_target(xy, which, after, radius)
            out[m] = (state.objects[which], *np.clip(xy, -bound, bound))
        return out

    def _sample_gaussian(self, state: MPCState, rng: np.random.Generator, n: int) -> np.ndarray:
        """One Gaussian per object over its target, objects by the refitted probabilities."""
        k, h = len(state.objects), self.horizon
        plans = np.empty((n, h, 3), dtype=np.float32)
        bound = np.array([WORK_X, WORK_Y])
        for t in range(h):
            which = rng.choice(k, size=n, p=state.probs[t])
            xy = state.mean[t, which] + state.std[t, which] * rng.standard_normal((n, 2))
            plans[:, t, 0] = np.asarray(state.objects)[which]
            plans[:, t, 1:] = np.clip(xy, -bound, bound)
        return plans

    def _sample_elites(self, state: MPCState, rng: np.random.Generator, n: int) -> np.ndarray:
        """A mixture with one Gaussian per elite plan: the elite's objects, its targets plus noise."""
        bound = np.array([WORK_X, WORK_Y])
        plans = state.elites[rng.integers(len(state.elites), size=n)].copy()
        std = max(self.min_std, self.elite_std * 0.5 ** (state.iteration - 1))
        plans[:, :, 1:] = np.clip(plans[:, :, 1:] + std * rng.standard_normal(plans[:, :, 1:].shape), -bound, bound)
        return plans.astype(np.float32)

    def _object_centric(
        self, state: MPCState, rng: np.random.Generator, which: np.ndarray, xy: np.ndarray
    ) -> np.ndarray:
        """Replace a fraction of uniform targets by another goal object's seen position (1 cm noise)."""
        k = len(state.objects)
        other = (which + rng.integers(1, k, size=len(which))) % k  # never the moved object itself
        centric = rng.random(len(which)) < self.object_centric
        near = state.located[other] + 0.01 * rng.standard_normal((len(which), 2))
        if state.goal_located is not None:  # half of them: where the goal photos show the moved object
            own = state.goal_located[which] + 0.01 * rng.standard_normal((len(which), 2))
            near = np.where((rng.random(len(which)) < 0.5)[:, None] & np.isfinite(own), own, near)
        return np.where(centric[:, None] & np.isfinite(near), near, xy)

    def _locate_in_photos(self, state: MPCState) -> np.ndarray:
        """Where the goal photos show each object (needs an RGB segmenter; NaN otherwise)."""
        names = [n.lower() for n in self.world_model.info()["object_names"]]
        found: dict[str, np.ndarray] = {}
        if not isinstance(self.locator.segmenter, SimulatorSegmenter):
            found = self.locator.locate(Outcome(views=state.goal_views, object_names=names), names)
        return np.array([found[names[i]][:2] if names[i] in found else (np.nan, np.nan) for i in state.objects])

    @property
    def locator(self) -> ObjectLocator:
        """Finds objects in the current views (built on first use, with the world model's cameras)."""
        if self._locator is None:
            self._locator = ObjectLocator(self.segmenter, self.world_model.calibration())
        return self._locator

    def _perceive(self, state: MPCState) -> MPCState:
        """Locate the goal objects in the current camera views (what a real robot would see)."""
        if self.object_centric <= 0:
            return state
        wm = self.world_model
        wm.restore(state.env_state)
        render = "segmentation" if isinstance(self.locator.segmenter, SimulatorSegmenter) else "rgb"
        outcome = wm.outcome(render)
        names = [outcome.object_names[i].lower() for i in state.objects]
        found = self.locator.locate(outcome, names)
        state.located = np.array([found[n][:2] if n in found else (np.nan, np.nan) for n in names], dtype=np.float64)
        return state

    def _refit(self, state: MPCState, plans: np.ndarray, energy: np.ndarray) -> None:
        """CEM: the elite plans (mixture), or object probabilities and per-object target Gaussians."""
        n_elite = max(2, int(round(self.elite_frac * len(energy))))
        elite = plans[np.argsort(energy, kind="stable")[:n_elite]]
        state.elites = elite.copy()
        if self.distribution == "elites":
            return
        index = {o: j for j, o in enumerate(state.objects)}
        k = len(state.objects)
        for t in range(self.horizon):
            which = np.array([index[int(round(o))] for o in elite[:, t, 0]])
            counts = np.bincount(which, minlength=k).astype(np.float64)
            state.probs[t] = 0.9 * counts / counts.sum() + 0.1 / k
            for j in range(k):
                xy = elite[which == j, t, 1:]
                if len(xy) >= 2:
                    state.mean[t, j], state.std[t, j] = xy.mean(0), np.maximum(xy.std(0), self.min_std)
                elif len(xy) == 1:
                    state.mean[t, j], state.std[t, j] = xy[0], np.maximum(state.std[t, j] * 0.5, self.min_std)

    def _execute(self, state: MPCState) -> MPCState:
        """Execute the best plan's first action in the environment and start the next control step."""
        action = state.best_plan[0]
        wm = self.world_model
        wm.restore(state.env_state)
        info = wm.step(action)
        state.env_state = wm.snapshot()
        state.executed.append([float(v) for v in action])
        nxt = state.best_plan[1] if len(state.best_plan) > 1 else None
        state.carry = nxt.copy() if nxt is not None and np.isfinite(nxt[0]) else None
        state.step += 1
        state.relations = [bool(r) for r in info["relations"]]
        state.success = bool(info["success"])
        state.done = state.success or state.step >= self.max_steps
        return self._fresh_distribution(self._perceive(state))


def placement_radius(name: str) -> float:
    """Footprint radius of an object from its name's kind (:data:`OBJECT_RADII`; the largest if unknown)."""
    return next((r for kind, r in OBJECT_RADII.items() if kind in name), max(OBJECT_RADII.values()))


def stable_target(target: np.ndarray, moved: int, located: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """A stable release point near ``target`` for object ``moved``.

    Args:
        target: ``(2,)`` planned release point (metres).
        moved: index (into ``located``) of the object being moved.
        located: ``[K, 2]`` seen object positions (NaN where not seen).
        radius: ``[K]`` footprint radii.

    Returns:
        ``target`` unchanged when its footprint overlaps no other object; when ``target`` lies within the
        larger ``R`` of the two radii, a centred stack: the overlapped object's centre plus
        :data:`SNAP_SHRINK` of the offset (``target`` itself when already within ``SNAP_SHRINK · R`` of
        the centre, so the map is idempotent); otherwise the point on the ray from that object's centre
        through ``target`` where the footprints are ``CLEARANCE`` apart.
    """
    others = [j for j in range(len(located)) if j != moved and np.all(np.isfinite(located[j]))]
    if not others:
        return target
    dist = np.array([np.hypot(*(target - located[j])) for j in others])
    k = int(np.argmin(dist))
    j, d = others[k], float(dist[k])
    touch = radius[moved] + radius[j]
    if d >= touch + CLEARANCE:
        return target
    centred = max(radius[moved], radius[j])
    if d <= SNAP_SHRINK * centred:
        return target
    if d < centred:
        return (located[j] + SNAP_SHRINK * (target - located[j])).astype(target.dtype)
    direction = (target - located[j]) / max(d, 1e-9)
    return (located[j] + (touch + CLEARANCE) * direction).astype(target.dtype)

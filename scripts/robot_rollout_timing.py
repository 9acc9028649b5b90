"""In-process rollout cost of the robot world model, for comparing commits side by side.

Rolls the same 96 one-action plans out from one state of seed 0 (restore, pick-and-place, settle,
render 3 views), three rounds per render mode, and prints CPU / wall ms per rollout, then the CPU ms of
the physics step alone and of the segmentation render alone. Works on trees before and after the task
folders (imports the world model from either place). Run it alternately in two trees, e.g.::

    git worktree add /tmp/old a0ee867
    for i in 1 2 3; do
      (cd /tmp/old && MUJOCO_GL=egl PYTHONPATH=/tmp/old python scripts/robot_rollout_timing.py old)
      MUJOCO_GL=egl PYTHONPATH=. python scripts/robot_rollout_timing.py new
    done
"""

import os
import sys
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
try:
    from ensemble.tasks.robot.world_model import LocalExecutor, SimulatorWorldModel
except ImportError:  # trees before the task folders
    from ensemble.world_model import LocalExecutor, SimulatorWorldModel


def main(label: str) -> None:
    wm = SimulatorWorldModel("envs:Tabletop-Relations-v0", cameras=("front", "left", "top"))
    wm.reset(0)
    state = wm.snapshot()
    rng = np.random.default_rng(0)
    plans = [np.array([[rng.integers(4), rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2)]], dtype=np.float32)
             for _ in range(96)]
    ex = LocalExecutor(wm)
    ex.rollouts(state, plans[:12], "segmentation")  # warm-up
    res: dict[str, list[str]] = {}
    for _ in range(3):
        for mode in ("segmentation", "rgb"):
            c0, t0 = time.process_time(), time.perf_counter()
            ex.rollouts(state, plans, mode)
            cpu, wall = (time.process_time() - c0) / len(plans), (time.perf_counter() - t0) / len(plans)
            res.setdefault(mode, []).append(f"{1000 * cpu:.1f}/{1000 * wall:.1f}")
    c0 = time.process_time()
    for p in plans:
        wm.restore(state)
        wm.step(p[0])
    step_ms = 1000 * (time.process_time() - c0) / len(plans)
    c0 = time.process_time()
    for _ in plans:
        wm.segment()
    seg_ms = 1000 * (time.process_time() - c0) / len(plans)
    print(f"{label}: CPU/wall ms per rollout, segmentation {res['segmentation']}, rgb {res['rgb']}; "
          f"physics step {step_ms:.2f} ms, segmentation render {seg_ms:.2f} ms; load {os.getloadavg()[0]:.1f}")
    wm.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this tree")

"""``ensemble run TASK …``: one task instance, its consensus rounds shown the task's way.

Each task's flags and output live in its folder (``ensemble/tasks/<name>/cli.py``: ``add_run_arguments``
and ``run``); math prints the rounds where a verifier moved the token, image the energies per denoising
step and a PNG grid, robot the executed plan and a GIF of the camera views.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from actors.commands._tasks import task_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    run_parser = sub.add_parser("run", help="run one task instance and show its consensus rounds")
    tasks = run_parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name in task_names():
        cli = importlib.import_module(f"ensemble.tasks.{name}.cli")
        p = tasks.add_parser(name, help=getattr(cli, "RUN_HELP", f"one {name} instance"))
        cli.add_run_arguments(p)
        p.set_defaults(func=cli.run, rollout_executor_factory=rollout_executor_factory)


def rollout_executor_factory(runners: int, address: str | None = None) -> Any:
    """``(env_id, env_kwargs) -> RayRolloutExecutor``: parallel rollouts on Ray environment actors
    (handed to tasks whose ``run`` takes ``--ray``)."""
    from actors.env_runners import EnvSpec, RayRolloutExecutor
    from actors.runtime import connect

    connect(address)

    def make(env_id: str, env_kwargs: dict[str, Any]) -> Any:
        return RayRolloutExecutor(EnvSpec(env_id, env_kwargs), num_runners=runners)

    return make

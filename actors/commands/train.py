"""``ensemble train TARGET``: train project models offline on CPU, saved as checkpoints.

Every task offers its training targets in its folder (``TRAIN_TARGETS`` of ``ensemble/tasks/<name>/cli.py``
or ``train_cli.py``): math ``verifiers`` and ``generator``, image ``image-models``.
"""

from __future__ import annotations

import argparse
import importlib

from actors.commands._tasks import task_names


def train_targets() -> dict[str, tuple[str, object, object]]:
    """Every task's training targets: name → (help, add_arguments, run)."""
    targets: dict = {}
    for task in task_names():
        for module in ("train_cli", "cli"):
            try:
                mod = importlib.import_module(f"ensemble.tasks.{task}.{module}")
            except ModuleNotFoundError as err:
                if err.name == f"ensemble.tasks.{task}.{module}":
                    continue
                raise
            targets.update(getattr(mod, "TRAIN_TARGETS", {}))
    return targets


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train project models offline (math verifiers and generator, image models)")
    targets = p.add_subparsers(dest="what", metavar="TARGET", required=True)
    for name, (help_text, add_arguments, run) in train_targets().items():
        tp = targets.add_parser(name, help=help_text)
        add_arguments(tp)
        tp.set_defaults(func=run)

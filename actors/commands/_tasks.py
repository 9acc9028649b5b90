"""The registered tasks, for the commands that loop over them (``run``, ``eval``, ``serve``)."""

from __future__ import annotations


def task_names() -> list[str]:
    """Every registered task name (each has a folder ``ensemble/tasks/<name>/`` with a ``cli.py``)."""
    from ensemble.registry import TASKS

    return TASKS.names()

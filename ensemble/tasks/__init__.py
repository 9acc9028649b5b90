"""Tasks: one folder per task (``ensemble/tasks/<name>/``), registered by one line each.

A task folder holds everything specific to its task: data, hooks for the generic generators and
scorers, its own scorers, training code, the solver of one item, metrics, CLI arguments and the Serve
request/response. Its ``__init__.py`` registers the task and its components as lazy entry points.
Adding a task: write the folder, then add one line below.
"""

import importlib

TASK_PACKAGES = (
    "math",
    "robot",
    "image",
    "video_qa",
)
"""One line per task: the folder names under ``ensemble/tasks/`` (each registers itself on import)."""

for _name in TASK_PACKAGES:
    importlib.import_module(f"ensemble.tasks.{_name}")

"""Tasks: glue between datasets, components, answers and metrics. Registry name = file stem."""

from ensemble.registry import TASKS  # noqa: F401

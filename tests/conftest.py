"""Test tiers, enforced in code.

* unit (default): no Ray (``ray.init`` raises), no network (hub offline), tiny real models;
* ``@pytest.mark.ray``: may use the session's local Ray cluster (fixture ``ray_cluster``);
* ``@pytest.mark.slow``: real offline assets (SmolLM2, MiniLM, EfficientNet, datasets);
* ``@pytest.mark.gpu``: skipped without CUDA.

Pick tiers with ``-m``: ``pytest -m "not slow and not ray"`` is the fast tier.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (gpu tier)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_ray_outside_ray_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the ``ray`` tier, starting Ray is a test bug: make ``ray.init`` raise."""
    if "ray" in request.keywords:
        return
    try:
        import ray
    except ImportError:  # pragma: no cover
        return

    def _refuse(*args, **kwargs):
        raise RuntimeError("ray.init() called in a unit-tier test; mark the test @pytest.mark.ray")

    monkeypatch.setattr(ray, "init", _refuse)

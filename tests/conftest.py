"""Test tiers, enforced in code.

* unit (default): no Ray (``ray.init`` raises), no network (hub offline), tiny real models;
* ``@pytest.mark.ray``: may use the session's local Ray cluster (fixture ``ray_cluster``);
* ``@pytest.mark.slow``: real offline assets (SmolLM2, MiniLM, EfficientNet, datasets);
* ``@pytest.mark.gpu``: skipped without CUDA.

Pick tiers with ``-m``: ``pytest -m "not slow and not ray"`` is the fast tier.
"""

from __future__ import annotations

import contextlib
import os

import pytest

# Mesa's software EGL (llvmpipe, used by MuJoCo's renderer) and triton (imported by torchvision) each
# load LLVM; importing triton after a MuJoCo renderer exists segfaults. Importing it first is safe.
with contextlib.suppress(ImportError):
    import torchvision.ops  # noqa: F401

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


@pytest.fixture(scope="session")
def ray_cluster():
    """One private local Ray cluster per test session (``ray`` tier), owned by this process.

    Loopback only (node IP 127.0.0.1), free non-default ports, a private temp dir, token
    authentication on, a dashboard for the jobs API. ``tests/`` is on the workers' ``PYTHONPATH`` so
    test-only components (``ray_toy``) can be built remotely. At the end: ``ray.shutdown()``, then
    the cluster's owning process is terminated by its pid (never ``ray stop``).
    """
    import ray

    from actors.local_cluster import LocalCluster

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    pythonpath = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH", "")) if p)
    cluster = LocalCluster(num_cpus=8, extra_env={"PYTHONPATH": pythonpath}).start()
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    cluster.use_in_this_process()
    try:
        ray.init(address=cluster.address, log_to_driver=False, namespace="ic-tests")
        yield cluster
    finally:
        ray.shutdown()
        cluster.cleanup()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

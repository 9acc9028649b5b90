"""Verifier checkpoints: an ordinary directory ``<cache>/checkpoints/<name>/`` with ``config.json`` and
``model.safetensors``.

``config.json`` names the verifier ``type`` (the scorer registry name), its hyper-parameters and how it
was trained (seeds, example counts, held-out accuracy), so a checkpoint explains itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_CHECKPOINTS = {"minilm_verifier": "verifiers/gsm-minilm", "numeric_verifier": "verifiers/gsm-numeric"}
"""Default checkpoint name of each verifier scorer."""


def verifier_checkpoint(name: str, kwargs: dict[str, Any]) -> str | None:
    """The checkpoint a verifier scorer is built from: its ``checkpoint`` kwarg, else its default
    (``None`` for a scorer without a project checkpoint, e.g. a hub sequence classifier)."""
    return kwargs.get("checkpoint", DEFAULT_CHECKPOINTS.get(name))


def checkpoint_path(name_or_dir: str | os.PathLike) -> Path:
    """A checkpoint directory: an existing local directory, else the project checkpoint ``name``.

    Raises:
        FileNotFoundError: neither exists; the message says how to train it.
    """
    path = Path(name_or_dir)
    if (path / "config.json").is_file():
        return path
    from ensemble.models import find_project_checkpoint, project_checkpoint_dir

    found = find_project_checkpoint(str(name_or_dir))
    if found is None:
        raise FileNotFoundError(
            f"no verifier checkpoint {str(name_or_dir)!r} (looked in {project_checkpoint_dir(str(name_or_dir))}); "
            "train one with `ensemble train verifiers`"
        )
    return found


def save_checkpoint(name_or_dir: str | os.PathLike, config: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write ``config.json`` + ``model.safetensors``; a bare name goes to the project cache.

    Returns:
        The checkpoint directory.
    """
    import safetensors.torch

    path = Path(name_or_dir)
    if not path.is_absolute() and not str(name_or_dir).startswith("."):
        from ensemble.models import project_checkpoint_dir

        path = project_checkpoint_dir(str(name_or_dir))
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    safetensors.torch.save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=2, default=str))
    (path / ".complete").write_text("")
    return path


def load_checkpoint(name_or_dir: str | os.PathLike, expected_type: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``(config, state dict, directory)`` of a verifier checkpoint of ``expected_type``."""
    import safetensors.torch

    path = checkpoint_path(name_or_dir)
    config = json.loads((path / "config.json").read_text())
    if config.get("type") != expected_type:
        raise ValueError(f"{path} holds a {config.get('type')!r} checkpoint, not {expected_type!r}")
    return config, safetensors.torch.load_file(str(path / "model.safetensors")), path


def auc_weights(verifiers: dict[str, dict[str, Any]], metric: str = "held_out_lm_auc") -> dict[str, float]:
    """Ensemble weights from each verifier checkpoint's held-out AUC: ``max(0, 2·AUC − 1)`` (the Gini
    coefficient: 0 for a verifier no better than chance, 1 for a perfect one), rounded to 3 decimals.

    The AUC is the one measured by ``ensemble train verifiers`` on held-out *training-split* problems (by
    default on the LM's own samples, right vs wrong), so the weights never see evaluation problems.

    Args:
        verifiers: verifier name → scorer kwargs (an optional ``checkpoint`` overrides the default one).
        metric: which recorded metric to use.

    Raises:
        ValueError: a verifier has no project checkpoint or its record lacks ``metric``.
    """
    weights = {}
    for name, kwargs in verifiers.items():
        checkpoint = verifier_checkpoint(name, kwargs)
        if checkpoint is None:
            raise ValueError(f"--weights auc: {name!r} has no project checkpoint with a held-out AUC; give weights as NAME=W")
        config = json.loads((checkpoint_path(checkpoint) / "config.json").read_text())
        auc = config.get("metrics", {}).get(metric)
        if auc is None:
            raise ValueError(f"--weights auc: checkpoint {checkpoint!r} of {name!r} records no {metric!r} "
                             "(retrain it with `ensemble train verifiers`, or give weights as NAME=W)")
        weights[name] = round(max(0.0, 2.0 * float(auc) - 1.0), 3)
    return weights

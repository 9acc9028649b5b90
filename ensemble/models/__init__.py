"""Model loading: one resolver from names to weights on disk, and loaders on top of it.

```python
from ensemble.models import list_models, load_causal_lm, resolve

resolve("smollm2-135m-instruct")           # ResolvedModel(kind="causal_lm", source="offline-package", …)
model, tokenizer = load_causal_lm("tiny-causal-lm")
```

Importing this package (and :func:`list_models`) imports no heavy library: torch, transformers,
diffusers, open_clip and timm are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ensemble.models.cache import cache_dir, checkpoints_dir
from ensemble.models.catalog import CATALOG, KINDS, SOURCES, KnownModel, package_dir
from ensemble.models.errors import ModelNotFoundError
from ensemble.models.load import (
    embed,
    load_causal_lm,
    load_clip,
    load_diffusion,
    load_image_classifier,
    load_sequence_classifier,
    load_text_encoder,
    mean_pool,
    torch_device,
    torch_dtype,
)
from ensemble.models.network import is_offline, offline_reason
from ensemble.models.offline import (
    checkpoint_fingerprint,
    find_project_checkpoint,
    list_project_checkpoints,
    project_checkpoint_dir,
    register_project_checkpoint,
    save_project_checkpoint,
)
from ensemble.models.resolve import ResolvedModel, infer_kind, resolve

__all__ = [
    "KINDS",
    "SOURCES",
    "ModelNotFoundError",
    "ResolvedModel",
    "cache_dir",
    "checkpoints_dir",
    "embed",
    "checkpoint_fingerprint",
    "find_project_checkpoint",
    "infer_kind",
    "is_offline",
    "list_models",
    "list_project_checkpoints",
    "load_causal_lm",
    "load_clip",
    "load_diffusion",
    "load_image_classifier",
    "load_sequence_classifier",
    "load_text_encoder",
    "mean_pool",
    "offline_reason",
    "project_checkpoint_dir",
    "register_project_checkpoint",
    "resolve",
    "save_project_checkpoint",
    "torch_device",
    "torch_dtype",
]


def list_models(kind: str | None = None) -> list[dict[str, Any]]:
    """Every model name the resolver knows, with whether it can be loaded here.

    Covers the offline assets (available if their package is installed), the tiny models (always
    available; ``path`` is set once built), project checkpoints found in the cache, and paper-scale
    names (available if cached locally; otherwise only when the hub is reachable). Cheap: no heavy import,
    no conversion, no download.

    Args:
        kind: only list models of this kind.

    Returns:
        Dicts with ``name``, ``kind``, ``available``, ``source``, ``path`` (str or ``None``) and ``summary``.
    """
    from ensemble.models.catalog import check_kind

    check_kind(kind)
    rows = [_catalog_row(entry) for entry in CATALOG]
    for name, path in list_project_checkpoints().items():
        stored = infer_kind(path)
        rows.append(
            {
                "name": name,
                "kind": stored or "unknown",
                "available": True,
                "source": "project-cache",
                "path": str(path),
                "summary": "project-trained checkpoint",
            }
        )
    return [row for row in rows if kind is None or row["kind"] == kind]


def _catalog_row(entry: KnownModel) -> dict[str, Any]:
    row = {
        "name": entry.name,
        "kind": entry.kind,
        "available": False,
        "source": None,
        "path": None,
        "summary": entry.summary,
    }
    if entry.family == "tiny":
        built = cache_dir() / "tiny" / entry.name
        return {**row, "available": True, "source": "tiny", "path": str(built) if built.is_dir() else None}
    cached = _hf_cached_file(entry)
    if cached is not None:
        return {**row, "available": True, "source": "hf-cache", "path": cached}
    if entry.family == "offline" and entry.module is not None:
        folder = package_dir(entry.module)
        return {
            **row,
            "available": folder is not None,
            "source": "offline-package",
            "path": str(folder) if folder else None,
        }
    online = not is_offline()
    return {**row, "available": online, "source": "hub" if online else None}


def _hf_cached_file(entry: KnownModel) -> str | None:
    """A cached weights file of the entry's Hugging Face repo (no network, no heavy import)."""
    if entry.hf_repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    if entry.open_clip is not None:  # the repo also holds timm-format weights: look for open_clip's only
        arch, tag = entry.open_clip
        url_file = Path("~/.cache/clip").expanduser() / f"{arch}.pt"
        if tag == "openai" and url_file.is_file():
            return str(url_file)
        candidates = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    else:
        candidates = [
            "model.safetensors",
            "pytorch_model.bin",
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
        ]
    for filename in candidates:
        found = try_to_load_from_cache(entry.hf_repo, filename)
        if isinstance(found, str):
            return found
    return None

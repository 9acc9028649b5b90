"""The Hugging Face cache and hub, and open_clip / timm pretrained names, seen from the resolver.

Cache look-ups never touch the network. Downloads are only called by the resolver after it has decided
that the machine is online.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ensemble.models.errors import ModelNotFoundError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".npz")
NON_TORCH_PATTERNS = ["*onnx*", "*flax*", "*tf_model*", "*.msgpack", "*.h5", "*openvino*", "*.gguf"]
OPEN_CLIP_URL_CACHE = Path("~/.cache/clip")
"""Where open_clip keeps weights downloaded from URLs (OpenAI CLIP ``.pt`` files)."""


def has_weights(path: Path) -> bool:
    """Whether a directory holds at least one weights file (searched recursively)."""
    return any(p.suffix in WEIGHT_SUFFIXES for p in path.rglob("*") if p.is_file())


def hf_cached_snapshot(repo: str) -> Path | None:
    """The cached snapshot of a Hugging Face repo, if it holds weights (never uses the network)."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id
        return None
    return path if path.is_dir() and has_weights(path) else None


def hf_download(repo: str, patterns: list[str]) -> Path:
    """Download a repo's configs, tokenizer files and torch weights (safetensors preferred)."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(repo, allow_patterns=patterns, ignore_patterns=NON_TORCH_PATTERNS))
    if not any(p.suffix == ".safetensors" for p in path.rglob("*")):
        path = Path(
            snapshot_download(repo, allow_patterns=[*patterns, "*.bin"], ignore_patterns=NON_TORCH_PATTERNS)
        )
    if not has_weights(path):
        raise ModelNotFoundError(f"the hub repo {repo!r} has no PyTorch weights (safetensors or .bin)")
    return path


def timm_hub_repo(name: str) -> str | None:
    """The hub repo of a timm model name (``"resnet50"`` → ``"timm/resnet50.a1_in1k"``), if any."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except Exception:
        return None
    return cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None


def open_clip_pretrained_cfg(arch: str, tag: str) -> dict[str, Any]:
    """open_clip's pretrained config for ``arch``/``tag``.

    Raises:
        ModelNotFoundError: open_clip knows no such tag (the message lists the tags of ``arch``).
    """
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = list_pretrained_tags_by_model(arch)
        raise ModelNotFoundError(
            f"open_clip has no pretrained weights {tag!r} for {arch!r}; its tags: {', '.join(tags) or 'none'}"
        )
    return dict(cfg)


def open_clip_cached(arch: str, tag: str) -> tuple[Path, dict[str, Any]] | None:
    """Cached weights of an open_clip pretrained tag: the HF cache, then open_clip's URL cache."""
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip_pretrained_cfg(arch, tag)
    details = _open_clip_details(arch, tag, cfg)
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return Path(cfg["file"]), details
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" → default file name
        for candidate in _open_clip_filenames(filename or "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, candidate)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), {**details, "repo": repo}
    if cfg.get("url"):
        file = OPEN_CLIP_URL_CACHE.expanduser() / os.path.basename(cfg["url"])
        if file.is_file():
            return file, {**details, "url": cfg["url"]}
    return None


def open_clip_download(arch: str, tag: str) -> tuple[Path, dict[str, Any]]:
    """Download an open_clip pretrained tag with open_clip's own downloader (online only)."""
    from open_clip.pretrained import download_pretrained

    cfg = open_clip_pretrained_cfg(arch, tag)
    file = download_pretrained(cfg)
    if not file:
        raise ModelNotFoundError(f"open_clip could not download {arch}/{tag}")
    return Path(file), _open_clip_details(arch, tag, cfg)


def _open_clip_filenames(filename: str) -> list[str]:
    names = []
    if filename == "open_clip_pytorch_model.bin":
        names.append("open_clip_model.safetensors")
    if filename.endswith(".bin"):
        names.append(filename[: -len(".bin")] + ".safetensors")
    names.append(filename)
    return names


def _open_clip_details(arch: str, tag: str, cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {
        "format": "open_clip-pretrained",
        "arch": arch,
        "pretrained": tag,
        "quick_gelu": bool(cfg.get("quick_gelu", False)),
        **{k: cfg[k] for k in keys if k in cfg},
    }

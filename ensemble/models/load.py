"""Loaders: a model name → a ready model on a device, always through :func:`resolve`.

Every loader takes ``(name, device="cpu", dtype=None)``. ``device`` is anything ``torch.device``
accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``dtype`` is ``None`` (float32), a ``torch.dtype`` or its
name (``"float16"``, ``"bfloat16"``). Half precision is for accelerators: ``float16`` on a CPU is refused.
Models are returned in eval mode; heavy libraries are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ensemble.models.resolve import ResolvedModel, resolve

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def torch_device(device: Any = "cpu"):
    """``device`` as a ``torch.device``, checked against the hardware.

    Raises:
        ValueError: not a device string, or CUDA/MPS requested but not available (the message says which
            devices exist).
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}; use 'cpu', 'cuda', 'cuda:<index>' or 'mps'") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} requested but only cuda:0..cuda:{count - 1} exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available here; use device='cpu'")
    return dev


def torch_dtype(device: Any, dtype: Any = None):
    """The parameter dtype for ``device``: float32 by default; float16/bfloat16 on request.

    Raises:
        ValueError: unknown dtype name, or float16 on a CPU.
    """
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(sorted(set(_DTYPES.values())))}")
        dtype = getattr(torch, _DTYPES[dtype.removeprefix("torch.")])
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported dtype {dtype}; use torch.float32, torch.float16 or torch.bfloat16")
    if dtype == torch.float16 and torch_device(device).type == "cpu":
        raise ValueError(
            "float16 is not supported on the CPU (slow, and several ops lack kernels); "
            "use dtype=None (float32) or 'bfloat16'"
        )
    return dtype


def _require(resolved: ResolvedModel, formats: Sequence[str], loader: str):
    if resolved.format not in formats or resolved.path is None:
        raise ValueError(
            f"{loader} cannot read {resolved.name!r} ({resolved.format} checkpoint at {resolved.path}); "
            f"it reads: {', '.join(formats)}"
        )
    return resolved.path


# -- transformers models ---------------------------------------------------------------------------------


def _tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, device: Any = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (the tokenizer's pad token defaults to its EOS token).

    Returns:
        ``(AutoModelForCausalLM, tokenizer)``; logits are ``[batch, seq, vocab]``.
    """
    from transformers import AutoModelForCausalLM

    path = _require(resolve(name, "causal_lm"), ["transformers"], "load_causal_lm")
    dev, dt = torch_device(device), torch_dtype(device, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(dev).eval()
    tokenizer = _tokenizer(path)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_text_encoder(name: str, device: Any = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Load a text encoder (``AutoModel``, no head) and its tokenizer; see :func:`embed`."""
    from transformers import AutoModel

    path = _require(resolve(name, "text_encoder"), ["transformers"], "load_text_encoder")
    dev, dt = torch_device(device), torch_dtype(device, dtype)
    return AutoModel.from_pretrained(path, dtype=dt).to(dev).eval(), _tokenizer(path)


def load_sequence_classifier(
    name: str, device: Any = "cpu", dtype: Any = None, num_labels: int | None = None
) -> tuple[Any, Any]:
    """Load ``AutoModelForSequenceClassification`` and its tokenizer.

    A causal-LM or encoder checkpoint loads too, with a freshly initialised head (the starting point of a
    verifier); ``num_labels`` sets that head's size (default: the checkpoint's, else 2).

    Returns:
        ``(model, tokenizer)``; logits are ``[batch, num_labels]``. The model's ``pad_token_id`` is set
        so batches with padding pool the right token.
    """
    from transformers import AutoModelForSequenceClassification

    path = _require(resolve(name, "sequence_classifier"), ["transformers"], "load_sequence_classifier")
    dev, dt = torch_device(device), torch_dtype(device, dtype)
    extra = {} if num_labels is None else {"num_labels": num_labels}
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dt, **extra).to(dev).eval()
    tokenizer = _tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def mean_pool(hidden, attention_mask):
    """Average token states over real tokens: ``[N, L, D]`` and mask ``[N, L]`` → ``[N, D]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 256,
    normalize: bool = True,
):
    """Mean-pooled sentence embeddings (sentence-transformers style), without gradients.

    Args:
        model: a text encoder from :func:`load_text_encoder`.
        tokenizer: its tokenizer.
        texts: the sentences.
        batch_size: sentences per forward pass.
        max_length: tokens kept per sentence.
        normalize: L2-normalise each embedding (dot product = cosine similarity).

    Returns:
        ``Tensor[N, D]`` (float32, on the model's device).
    """
    import torch

    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings; wrap a single text in a list")
    device = next(model.parameters()).device
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            chunks.append(mean_pool(hidden.float(), batch["attention_mask"]))
    out = torch.cat(chunks) if chunks else torch.empty(0, model.config.hidden_size, device=device)
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


# -- image models ------------------------------------------------------------------------------------------


def load_image_classifier(name: str, device: Any = "cpu", dtype: Any = None) -> tuple[Any, dict[str, Any]]:
    """Load a timm image classifier (``"efficientnet-lite0"``, a tiny or trained one, a cached timm name).

    Returns:
        ``(model, preprocess_info)``; ``model(x[B, 3, H, W])`` → logits ``[B, num_classes]``.
        ``preprocess_info`` has ``input_size`` (C, H, W), ``size`` (H), ``mean``, ``std``,
        ``interpolation``, ``crop_pct``, ``num_classes``, ``label_names`` (list or ``None``; ImageNet
        descriptions for 1000-class models; also under ``class_names``) and ``transform`` (PIL image →
        normalised ``Tensor[3, H, W]``).
    """
    import timm
    from timm.data import create_transform, resolve_data_config

    path = _require(resolve(name, "image_classifier"), ["timm"], "load_image_classifier")
    dev, dt = torch_device(device), torch_dtype(device, dtype)
    model = timm.create_model(f"local-dir:{path}", pretrained=True).to(dev, dt).eval()
    config = resolve_data_config(model=model)
    info: dict[str, Any] = {k: config[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")}
    info["size"] = info["input_size"][-1]
    info["num_classes"] = model.num_classes
    info["label_names"] = info["class_names"] = _label_names(path, model.num_classes)
    info["transform"] = create_transform(**config)
    return model, info


def _label_names(path, num_classes: int) -> list[str] | None:
    import json

    try:
        names = json.loads((path / "config.json").read_text()).get("label_names")
    except (OSError, ValueError):
        names = None
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    return None


def load_clip(name: str, device: Any = "cpu", dtype: Any = None) -> tuple[Any, Any, Any]:
    """Load a CLIP model with open_clip's interface.

    ``name`` is an open_clip ``"Arch/pretrained"`` pair (``"ViT-B-32/openai"``; the weights must be in
    the HF or open_clip cache, or the hub reachable), a folder with ``open_clip_config.json`` + weights
    (``"tiny-clip"``, project checkpoints), a LiT CLIP folder (:mod:`ensemble.models.lit_clip`: frozen
    pre-trained towers + trained heads; it embeds videos, ``encode_video``, and has no ``preprocess``) or a
    transformers CLIP folder/repo.

    Returns:
        ``(model, tokenizer, preprocess)``: ``tokenizer(list[str])`` → ``LongTensor[N, L]``,
        ``preprocess(PIL.Image)`` → ``Tensor[3, S, S]``, ``model.encode_image`` / ``encode_text`` →
        ``[N, D]``, ``model.logit_scale``. With ``dtype`` float16/bfloat16 every parameter is cast
        (open_clip's ``pure_*`` precision), so cast images to the model's dtype too.
    """
    import open_clip

    resolved = resolve(name, "clip")
    path = _require(resolved, ["open_clip", "open_clip-pretrained", "transformers-clip", "lit-clip"], "load_clip")
    dev, dt = torch_device(device), torch_dtype(device, dtype)
    precision = {"float32": "fp32", "float16": "pure_fp16", "bfloat16": "pure_bf16"}[
        str(dt).removeprefix("torch.")
    ]
    if resolved.format == "lit-clip":
        from ensemble.models.lit_clip import load_lit_clip

        return load_lit_clip(path, dev)
    if resolved.format == "transformers-clip":
        from ensemble.models.hf_clip import load_hf_clip

        return load_hf_clip(path, dev, dt)
    if resolved.format == "open_clip":
        model_name = f"local-dir:{path}"
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, precision=precision, device=dev
        )
        return model.eval(), open_clip.get_tokenizer(model_name), preprocess
    d = resolved.details
    model, _, preprocess = open_clip.create_model_and_transforms(
        d["arch"],
        pretrained=str(path),
        precision=precision,
        device=dev,
        force_quick_gelu=d["quick_gelu"],
        image_mean=d.get("mean"),
        image_std=d.get("std"),
        image_interpolation=d.get("interpolation"),
        image_resize_mode=d.get("resize_mode"),
        weights_only=path.suffix != ".pt",  # OpenAI .pt = TorchScript
    )
    return model.eval(), open_clip.get_tokenizer(d["arch"]), preprocess


def load_diffusion(name: str, device: Any = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Load a diffusers UNet and its noise scheduler from a folder, cache or hub repo.

    The folder holds ``unet/`` + ``scheduler/`` (pipeline layout) or the UNet's ``config.json`` and a
    ``scheduler_config.json`` at its root. The classes are read from the configs (``UNet2DModel`` and
    ``DDPMScheduler`` by default).

    Returns:
        ``(unet, scheduler)``; ``unet(x, t).sample`` has the shape of ``x`` (``[B, C, S, S]``).
    """
    import diffusers

    path = _require(resolve(name, "diffusion"), ["diffusers"], "load_diffusion")
    dev, dt = torch_device(device), torch_dtype(device, dtype)
    unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
    unet_cls = getattr(diffusers, _class_name(unet_dir / "config.json", "UNet2DModel"))
    unet = unet_cls.from_pretrained(unet_dir, torch_dtype=dt).to(dev).eval()
    scheduler_dir = path / "scheduler" if (path / "scheduler").is_dir() else path
    config_file = scheduler_dir / "scheduler_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no scheduler in {path}: expected scheduler/scheduler_config.json or scheduler_config.json"
        )
    scheduler_cls = getattr(diffusers, _class_name(config_file, "DDPMScheduler"))
    return unet, scheduler_cls.from_pretrained(scheduler_dir)


def _class_name(config_file, default: str) -> str:
    import json

    try:
        return str(json.loads(config_file.read_text()).get("_class_name") or default)
    except (OSError, ValueError):
        return default

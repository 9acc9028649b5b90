"""Key/value context helpers for the token-level rule, across transformers cache APIs.

The context of a causal LM is its key/value cache. The token rule keeps it as a plain, picklable list
of ``(key, value)`` tensors per layer (each ``[batch, kv_heads, seq, head_dim]``), adds a learnable
delta to it, and rebuilds the library's cache object for every forward pass.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]


def _cache_kwarg(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def to_cache(model: Any, kv: KV | None) -> Any:
    """A library cache object holding ``kv`` (``None`` for an empty context)."""
    from transformers import DynamicCache

    if kv is None:
        return DynamicCache(config=model.config)
    try:
        return DynamicCache(ddp_cache_data=list(kv), config=model.config)
    except TypeError:  # transformers 4.x
        return DynamicCache.from_legacy_cache(tuple(kv))


def from_cache(cache: Any) -> KV:
    """The ``(key, value)`` list of a library cache object."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]


def forward(model: Any, input_ids: torch.Tensor, kv: KV | None) -> tuple[torch.Tensor, KV]:
    """Run ``input_ids`` (``[1, T]``) after context ``kv``.

    Returns:
        ``(logits [T, vocab] as float32, the extended context)``.
    """
    out = model(input_ids=input_ids, use_cache=True, **{_cache_kwarg(model): to_cache(model, kv)})
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return out["logits"][0].float(), from_cache(cache)


def forward_batch(model: Any, input_ids: torch.Tensor, kv: KV) -> tuple[torch.Tensor, KV]:
    """Run ``input_ids`` (``[B, T]``) after a batched context ``kv`` of equal lengths (no padding).

    Returns:
        ``(logits [B, T, vocab] as float32, the extended batched context)``.
    """
    out = model(input_ids=input_ids, use_cache=True, **{_cache_kwarg(model): to_cache(model, kv)})
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return out["logits"].float(), from_cache(cache)


def length(kv: KV) -> int:
    """Sequence length of a context (0 when empty)."""
    return int(kv[0][0].shape[-2]) if kv else 0


def cat(kvs: list[KV]) -> KV:
    """Stack single-sequence contexts of equal length along the batch dimension."""
    return [(torch.cat([kv[i][0] for kv in kvs]), torch.cat([kv[i][1] for kv in kvs])) for i in range(len(kvs[0]))]


def split(kv: KV) -> list[KV]:
    """The single-sequence contexts of a batched context."""
    batch = kv[0][0].shape[0]
    return [[(k[b : b + 1], v[b : b + 1]) for k, v in kv] for b in range(batch)]


def add(kv: KV, delta: KV) -> KV:
    """``kv + delta`` layer by layer (delta may be float32 while kv is half)."""
    return [(k + dk.to(k.dtype), v + dv.to(v.dtype)) for (k, v), (dk, dv) in zip(kv, delta, strict=True)]


def zeros_like(kv: KV, requires_grad: bool = False) -> KV:
    """A float32 zero delta shaped like ``kv``."""
    return [
        (
            torch.zeros(k.shape, dtype=torch.float32, device=k.device, requires_grad=requires_grad),
            torch.zeros(v.shape, dtype=torch.float32, device=v.device, requires_grad=requires_grad),
        )
        for k, v in kv
    ]


def detach(kv: KV) -> KV:
    """A copy of ``kv`` cut from any autograd graph."""
    return [(k.detach(), v.detach()) for k, v in kv]

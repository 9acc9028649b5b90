"""transformers-format CLIP checkpoints (e.g. ``openai/clip-vit-base-patch32``) behind open_clip's interface.

:func:`ensemble.models.load.load_clip` returns ``(model, tokenizer, preprocess)`` with open_clip's call
shapes whatever the checkpoint format, so CLIP scorers need one code path. For a transformers CLIP the
model is wrapped to expose ``encode_image``, ``encode_text`` and ``logit_scale``; the tokenizer is
open_clip's BPE tokenizer (the same vocabulary as OpenAI CLIP, ids included) and the preprocessing is
open_clip's transform with the checkpoint's image size, mean and std.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPENAI_CLIP_VOCAB = 49408


class HFClipAdapter(nn.Module):
    """A ``transformers.CLIPModel`` with open_clip's ``encode_image`` / ``encode_text`` methods.

    Args:
        model: the transformers CLIP model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def visual(self) -> nn.Module:
        """The vision tower, carrying ``image_size`` and ``preprocess_cfg`` as open_clip's does."""
        return self.model.vision_model

    @property
    def logit_scale(self) -> torch.Tensor:
        """Log of the temperature multiplying cosine similarities (as in open_clip)."""
        return self.model.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` → embeddings ``[N, D]``."""
        out = self.model.visual_projection(self.model.vision_model(pixel_values=images).pooler_output)
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Token ids ``[N, L]`` (open_clip tokenizer output) → embeddings ``[N, D]``."""
        # No attention mask: the text tower is causal, so padding after the end token cannot change the
        # pooled end-token state (and id 0, open_clip's padding, is also the real token "!").
        out = self.model.text_model(input_ids=tokens).pooler_output
        out = self.model.text_projection(out)
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings and the logit scale, like ``open_clip.CLIP.forward``."""
        return (
            self.encode_image(images, normalize=True),
            self.encode_text(tokens, normalize=True),
            self.logit_scale.exp(),
        )


def load_hf_clip(path: Path, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, Any, Any]:
    """Load a transformers CLIP folder as ``(HFClipAdapter, tokenizer, preprocess)``.

    Raises:
        ValueError: the text tower does not use OpenAI CLIP's vocabulary, so open_clip's tokenizer would
            produce wrong ids (the message names the vocabulary size found).
    """
    import open_clip
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(path, dtype=dtype).to(device).eval()
    text = model.config.text_config
    if text.vocab_size != OPENAI_CLIP_VOCAB:
        raise ValueError(
            f"{path}: text vocabulary of {text.vocab_size} tokens; only OpenAI-vocabulary CLIPs "
            f"({OPENAI_CLIP_VOCAB} tokens) load through open_clip's tokenizer"
        )
    tokenizer = open_clip.SimpleTokenizer(context_length=text.max_position_embeddings)
    size = model.config.vision_config.image_size
    processor = _read_json(path / "preprocessor_config.json")
    mean = tuple(processor.get("image_mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(processor.get("image_std", open_clip.OPENAI_DATASET_STD))
    preprocess = open_clip.image_transform(size, is_train=False, mean=mean, std=std, interpolation="bicubic")
    model.vision_model.image_size = size
    model.vision_model.preprocess_cfg = {"mean": mean, "std": std, "interpolation": "bicubic"}
    return HFClipAdapter(model), tokenizer, preprocess


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

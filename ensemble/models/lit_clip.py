"""LiT-style CLIP: two frozen *pre-trained* towers and small trained heads (Zhai et al., "LiT: zero-shot
transfer with locked-image text tuning", with the text tower locked too).

* image tower: a timm image classifier (default: the ImageNet-pretrained EfficientNet-Lite0, offline);
  a frame's feature is its pooled pre-logits vector (``[N, Di]``, 1280-d for Lite0);
* text tower: a transformers sentence encoder (default: all-MiniLM-L6-v2, offline); a text's feature is
  the mean of its token states and the state of its last word piece (``[N, 2·Dt]``): the mean says what
  the text is about, the last piece keeps the final answer word salient ("… yes" against "… no");
* heads (the only trained weights): a *video head* over ``F`` frame slots — the slots' features and the
  difference of the first two, so a change between two frames is one linear map away — and a text head,
  both two-layer MLPs into a shared ``D``-d space, and a logit scale.

Frozen towers mean their features can be computed once per training image and text, so training is
minutes on a CPU. The model offers open_clip's interface where it applies: ``encode_text(tokens)``,
``encode_video(slots)``, ``logit_scale``, ``visual.image_size`` / ``visual.preprocess_cfg``; the
tokenizer maps ``list[str]`` to a padded ``LongTensor[N, L]``. A checkpoint folder holds
:data:`CONFIG_FILE` (the towers' names and the head sizes) and :data:`HEADS_FILE` (the heads' weights);
the towers are loaded by name through the resolver.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_FILE = "lit_clip_config.json"
"""A LiT CLIP checkpoint's config (its presence marks the format for the resolver)."""
HEADS_FILE = "lit_heads.safetensors"
"""The trained heads' weights (the towers are not copied)."""


@dataclass
class LitClipConfig:
    """The towers (by model name) and the heads of a :class:`LitClip`."""

    image_tower: str = "efficientnet-lite0"
    """A timm image classifier name for the resolver (frozen)."""
    text_tower: str = "all-minilm-l6-v2"
    """A transformers text encoder name for the resolver (frozen)."""
    image_size: int = 128
    """Frames are resized to this many pixels (EfficientNet-Lite0: 24 ms a frame at 128 px on one thread)."""
    slots: int = 4
    """Frames the video head reads (the video QA task: first, last and their two motion frames)."""
    embed_dim: int = 256
    """The shared embedding width ``D``."""
    hidden: int = 512
    """Hidden width of the heads."""
    dropout: float = 0.1
    """Dropout inside the heads (training only)."""
    max_length: int = 48
    """Word pieces per text."""

    def __post_init__(self) -> None:
        for name in ("image_size", "slots", "embed_dim", "hidden", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.slots < 2:
            raise ValueError(f"slots={self.slots} must be at least 2 (the head reads the first two slots' difference)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class LitTokenizer:
    """``list[str]`` → ``LongTensor[N, L]`` padded with the text tower's pad id (which marks the padding)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")["input_ids"]


class LitClip(nn.Module):
    """Frozen image and text towers + trained video / text heads (see the module docstring).

    Args:
        cfg: the configuration.
        image_tower: a timm model (``forward_features`` and ``forward_head(pre_logits=True)``).
        text_tower: a transformers encoder (``last_hidden_state``).
        pad_id: the text tokenizer's pad id.
        mean, std: the image tower's input normalisation.
    """

    def __init__(self, cfg: LitClipConfig, image_tower: nn.Module, text_tower: nn.Module, pad_id: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.cfg, self.pad_id = cfg, pad_id
        self.visual = image_tower
        self.visual.image_size = (cfg.image_size, cfg.image_size)
        self.visual.preprocess_cfg = {"mean": list(mean), "std": list(std)}
        self.text_tower = text_tower
        for p in [*self.visual.parameters(), *self.text_tower.parameters()]:
            p.requires_grad_(False)
        di, dt = int(image_tower.num_features), int(text_tower.config.hidden_size)
        self.image_dim, self.text_dim = di, 2 * dt
        self.video_head = _mlp(di * (cfg.slots + 1), cfg.hidden, cfg.embed_dim, cfg.dropout)
        self.text_head = _mlp(2 * dt, cfg.hidden, cfg.embed_dim, cfg.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(2.3026))  # log(10)

    def train(self, mode: bool = True) -> LitClip:
        """Train mode for the heads only: the frozen towers stay in eval mode (batch-norm statistics)."""
        super().train(mode)
        self.visual.eval()
        self.text_tower.eval()
        return self

    def head_state(self) -> dict[str, torch.Tensor]:
        """The trained weights (heads and logit scale) by name."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("visual.", "text_tower."))}

    # -- frozen tower features ---------------------------------------------------------------------------------
    def image_tower_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[N, 3, S, S]`` → pooled pre-logits features ``[N, Di]``."""
        with torch.no_grad():
            return self.visual.forward_head(self.visual.forward_features(x), pre_logits=True).float()

    def text_tower_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[N, L]`` → ``[N, 2·Dt]``: mean token state and the state of the last word piece."""
        mask = tokens != self.pad_id
        mask[:, 0] = True
        with torch.no_grad():
            hidden = self.text_tower(input_ids=tokens, attention_mask=mask.long()).last_hidden_state.float()
        m = mask.unsqueeze(-1).float()
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        last = (mask.sum(1) - 2).clamp(min=0)  # the piece before the closing [SEP]
        return torch.cat([mean, hidden[torch.arange(len(tokens)), last]], -1)

    # -- heads --------------------------------------------------------------------------------------------------
    def video_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Slot features ``[B, F, Di]`` → video embeddings ``[B, D]`` (not normalised)."""
        if feats.dim() != 3 or feats.shape[1] != self.cfg.slots:
            raise ValueError(f"slot features must be [B, {self.cfg.slots}, {self.image_dim}], got {tuple(feats.shape)}")
        return self.video_head(torch.cat([feats.flatten(1), feats[:, 1] - feats[:, 0]], -1))

    def text_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Text tower features ``[N, 2·Dt]`` → text embeddings ``[N, D]`` (not normalised)."""
        return self.text_head(feats)

    # -- open_clip-style interface ------------------------------------------------------------------------------
    def encode_video(self, slots: torch.Tensor) -> torch.Tensor:
        """Normalised frame slots ``[B, F, 3, S, S]`` → video embeddings ``[B, D]``."""
        b, f = slots.shape[:2]
        return self.video_from_features(self.image_tower_features(slots.flatten(0, 1)).view(b, f, -1))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[N, L]`` (from the :class:`LitTokenizer`) → text embeddings ``[N, D]``."""
        return self.text_from_features(self.text_tower_features(tokens))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Not offered: the head rates videos of :attr:`LitClipConfig.slots` frames (use :meth:`encode_video`)."""
        raise NotImplementedError(
            f"a LiT video CLIP embeds videos of {self.cfg.slots} frame slots with encode_video(); it has no "
            "single-image embedding (use it through the video_clip scorer)")


def build_lit_clip(cfg: LitClipConfig, device: Any = "cpu", seed: int = 0) -> tuple[LitClip, LitTokenizer]:
    """Load the two towers by name and attach freshly initialised heads (seeded)."""
    from ensemble.models.load import load_image_classifier, load_text_encoder

    image_tower, info = load_image_classifier(cfg.image_tower, device=device)
    text_tower, tokenizer = load_text_encoder(cfg.text_tower, device=device)
    torch.manual_seed(seed)
    tok = LitTokenizer(tokenizer, cfg.max_length)
    model = LitClip(cfg, image_tower, text_tower, tok.pad_id, tuple(info["mean"]), tuple(info["std"]))
    return model.to(device).eval(), tok


def save_lit_clip(model: LitClip, out: Path, record: dict[str, Any] | None = None) -> None:
    """Write the config (+ a training ``record``) and the heads' weights into the folder ``out``."""
    import safetensors.torch

    safetensors.torch.save_file({k: v.contiguous() for k, v in model.head_state().items()}, str(Path(out) / HEADS_FILE))
    (Path(out) / CONFIG_FILE).write_text(json.dumps({"lit_clip": asdict(model.cfg), "trained": record or {}}, indent=2))


def load_lit_clip(path: Path, device: Any = "cpu") -> tuple[LitClip, LitTokenizer, None]:
    """A saved LiT CLIP folder → ``(model, tokenizer, None)`` (no PIL preprocess: frames are tensors)."""
    import safetensors.torch

    cfg = LitClipConfig(**json.loads((Path(path) / CONFIG_FILE).read_text())["lit_clip"])
    model, tok = build_lit_clip(cfg, device=device)
    missing = model.load_state_dict(safetensors.torch.load_file(str(Path(path) / HEADS_FILE)), strict=False).missing_keys
    heads = [k for k in missing if not k.startswith(("visual.", "text_tower."))]
    if heads:
        raise ValueError(f"{path / HEADS_FILE} lacks head weights {heads[:3]}; retrain the checkpoint")
    return model.eval(), tok, None

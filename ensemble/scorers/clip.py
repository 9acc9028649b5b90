"""CLIP scorer: cosine similarity between images and a text prompt, differentiable w.r.t. the images."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer(Scorer):
    """Rates images ``[N, 3, H, W]`` against the context's text with an open_clip model.

    Args:
        model: an open_clip name ("ViT-B-32/openai", a project checkpoint …) or a loaded model.
        tokenizer: its tokenizer, when ``model`` is an object.
        device: torch device ("cpu", "cuda:0" …).
        input_range: value range of the candidate images, (-1, 1) for diffusion samples.
        scale: multiplier of the cosine similarity (CLIP's logit scale is 100).
        template: format string applied to a class-name context, e.g. "a photo of a {}.".
    """

    differentiable = True
    modality = "image"

    def __init__(
        self,
        model: str | Any = "ViT-B-32/openai",
        tokenizer: Any = None,
        device: str = "cpu",
        input_range: tuple[float, float] = (-1.0, 1.0),
        scale: float = 100.0,
        template: str = "{}",
    ) -> None:
        if isinstance(model, str):
            from ensemble.models import load_clip

            model, tokenizer, _ = load_clip(model, device=device)
        if tokenizer is None:
            raise ValueError("a loaded CLIP model needs its tokenizer (tokenizer=...)")
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.input_range = input_range
        self.scale = scale
        self.template = template
        size = getattr(self.model.visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, tuple | list) else (size, size)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", OPENAI_MEAN), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", OPENAI_STD), device=self.device).view(1, 3, 1, 1)
        self._text_cache: dict[str, torch.Tensor] = {}

    def text_features(self, text: str) -> torch.Tensor:
        """L2-normalised ``[1, D]`` embedding of ``text`` (cached)."""
        if text not in self._text_cache:
            with torch.no_grad():
                tokens = self.tokenizer([self.template.format(text)]).to(self.device)
                self._text_cache[text] = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return self._text_cache[text]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` images in ``input_range`` → the model's input: resized, normalised, its dtype."""
        lo, hi = self.input_range
        x = (images - lo) / (hi - lo)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return x.to(next(self.model.parameters()).dtype)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``[N, D]`` embeddings of ``[N, 3, H, W]`` images in ``input_range``."""
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``scale · cos(image, text)`` per image; the text is ``context`` or ``context["prompt"]``."""
        self.check_grad_request(need_grad)
        text = context["prompt"] if isinstance(context, dict) else str(context)
        x = torch.as_tensor(candidates).to(self.device, torch.float32).detach()
        with torch.enable_grad() if need_grad else torch.no_grad():
            x.requires_grad_(need_grad)
            scores = self.scale * (self.image_features(x) @ self.text_features(text).T).squeeze(-1)
            grad = torch.autograd.grad(scores.sum(), x)[0] if need_grad else None
        return ScoreOutput(scores=scores.detach().cpu(), grad=grad)

"""Image classifier scorer: log p(class | image), differentiable w.r.t. the image."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer


class ClassifierScorer(Scorer):
    """Rates images ``[N, 3, H, W]`` by the log-probability of the context's class.

    Args:
        model: an image classifier name ("efficientnet-lite0", a timm name …) or a loaded module.
        device: torch device.
        mean, std, size: preprocessing of the classifier (taken from the loader for names).
        input_range: value range of the candidate images.
        class_names: names of the classes, so a context may name its class instead of its index.
    """

    differentiable = True
    modality = "image"

    def __init__(
        self,
        model: str | Any = "efficientnet-lite0",
        device: str = "cpu",
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        size: int | None = 224,
        input_range: tuple[float, float] = (-1.0, 1.0),
        class_names: list[str] | None = None,
    ) -> None:
        if isinstance(model, str):
            from ensemble.models import load_image_classifier

            model, info = load_image_classifier(model, device=device)
            mean, std = info.get("mean", mean), info.get("std", std)
            size = info.get("size", size)
            class_names = class_names or info.get("class_names")
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.size = size
        self.input_range = input_range
        self.class_names = list(class_names) if class_names else None

    def label(self, context: Any) -> int:
        """The class index named by ``context`` (an int, a class name, or a dict with "label")."""
        label = context.get("label") if isinstance(context, dict) else context
        if isinstance(label, str):
            if not self.class_names or label not in self.class_names:
                known = f"; known classes start {self.class_names[:5]}" if self.class_names else ""
                raise ValueError(f"class {label!r} is not a class of this classifier{known}")
            return self.class_names.index(label)
        if label is None:
            raise ValueError("the classifier scorer needs a class: context {'label': int | name}")
        return int(label)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, classes]`` logits of images in ``input_range``."""
        lo, hi = self.input_range
        x = (images - lo) / (hi - lo)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        return self.model(x.to(dtype)).float()

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``log p(label | image)`` per image."""
        self.check_grad_request(need_grad)
        label = self.label(context)
        x = torch.as_tensor(candidates).to(self.device, torch.float32).detach()
        with torch.enable_grad() if need_grad else torch.no_grad():
            x.requires_grad_(need_grad)
            logits = self.logits(x)
            if not 0 <= label < logits.shape[-1]:
                raise ValueError(f"label {label} is outside [0, {logits.shape[-1] - 1}]")
            scores = F.log_softmax(logits, -1)[:, label]
            grad = torch.autograd.grad(scores.sum(), x)[0] if need_grad else None
        return ScoreOutput(scores=scores.detach().cpu(), grad=grad)

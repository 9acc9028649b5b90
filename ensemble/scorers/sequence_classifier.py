"""Question–solution classifier (verifier) scorer on any transformers sequence-classification model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer


class SequenceClassifierScorer(Scorer):
    """Rates (question, partial or complete solution) pairs by log p(correct).

    Args:
        model: a sequence-classification model name (hub, local or project checkpoint) or a loaded one.
        tokenizer: its tokenizer, when ``model`` is an object.
        device: torch device.
        positive_label: index of the "correct" class.
        batch_size: candidates per forward pass.
        max_length: truncation length of question + solution.
    """

    modality = "text"

    def __init__(
        self,
        model: str | Any,
        tokenizer: Any = None,
        device: str = "cpu",
        positive_label: int = 1,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        if isinstance(model, str):
            from ensemble.models import load_sequence_classifier

            model, tokenizer = load_sequence_classifier(model, device=device)
        if tokenizer is None:
            raise ValueError("a loaded classifier needs its tokenizer (tokenizer=...)")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.positive_label = positive_label
        self.batch_size = batch_size
        self.max_length = max_length

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``log p(correct | question, solution)`` per candidate solution text."""
        self.check_grad_request(need_grad)
        question = context["question"] if isinstance(context, dict) else str(context)
        out = []
        for i in range(0, len(candidates), self.batch_size):
            chunk = list(candidates[i : i + self.batch_size])
            enc = self.tokenizer(
                [question] * len(chunk), chunk, truncation=True, max_length=self.max_length,
                padding=True, return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            out.append(F.log_softmax(logits, -1)[:, self.positive_label].cpu())
        return ScoreOutput(scores=torch.cat(out) if out else torch.zeros(0))

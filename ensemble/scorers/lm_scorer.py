"""A second causal LM as a scorer: the product of experts over candidate texts.

The generator proposes candidate continuations as texts (solution so far + one candidate token of *its*
tokenizer). This scorer rates each candidate by another causal LM's log-probability of the candidate's
text given the prompt, so the tokenizers need not match: the candidates' common text is the scorer LM's
context (run once, its key/value cache kept and extended from round to round), and what differs — each
candidate's *suffix*, decoded text re-tokenised by the scorer's tokenizer — is scored in one padded batch.
Since every candidate shares the context, ``log p(context) + log p(suffix | context)`` ranks them as the
scorer LM's log-probability of the whole text would. The context is cut at the last whitespace of the
common text, where both tokenizers start a new token, so no word is split between context and suffix.

Abstention: when the scorer LM's distribution over the candidates is nearly flat (normalised entropy at
least ``abstain_entropy``), it has nothing to say, and :attr:`~ensemble.contracts.ScoreOutput.abstain`
tells the ensemble to combine only the scorers that spoke.

Any causal LM the project resolves by name works (a catalog name, a project checkpoint, a hub id, a local
folder); ``gemma-3-270m`` is the real one that installs offline (an optional extra, Gemma terms of use).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.generators import kv as kvlib

DEFAULT_PROMPT = "Question: {question}\nAnswer:\n"
"""The scorer LM's prompt; ``{question}`` (any key of a dict context) is filled in, the candidate text follows."""

SPLIT_CHARS = " \n\t"
"""Characters at which the common text is cut into context and suffixes."""


def split_point(texts: list[str]) -> int:
    """Where the candidates' common text is cut: after the last line break or before the last space of it
    (``0`` when it holds neither). Everything before is the scorer's context, the rest each one's suffix."""
    common = texts[0]
    for t in texts[1:]:
        n = 0
        for a, b in zip(common, t, strict=False):
            if a != b:
                break
            n += 1
        common = common[:n]
    for i in range(len(common) - 1, -1, -1):
        if common[i] == "\n":
            return i + 1
        if common[i] in SPLIT_CHARS:
            return i
    return 0


class LMScorer(Scorer):
    """Rates candidate texts by a causal LM's ``log p(candidate | prompt)`` (product of experts).

    Args:
        model: a causal LM name (resolved through :mod:`ensemble.models`: catalog, project checkpoint, hub,
            local folder), or a loaded model (then ``tokenizer`` too).
        tokenizer: the tokenizer of a loaded model.
        prompt: the prompt template, formatted with the context's keys (a plain string context fills
            ``{question}``); the candidate text is appended to it.
        abstain_entropy: abstain when the entropy of ``softmax(scores)`` over the candidates, divided by
            ``log N``, is at least this (a flat distribution); ``None`` never abstains.
        max_batch: candidates per forward pass.
        device: torch device.
    """

    modality = "text"

    def __init__(self, model: str | Any = "gemma-3-270m", tokenizer: Any = None, prompt: str = DEFAULT_PROMPT,
                 abstain_entropy: float | None = 0.97, max_batch: int = 32, device: str = "cpu") -> None:
        if abstain_entropy is not None and not 0.0 < abstain_entropy <= 1.0:
            raise ValueError(f"abstain_entropy={abstain_entropy} must be in (0, 1] (or None: never abstain)")
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be at least 1")
        if isinstance(model, str):
            from ensemble.models import load_causal_lm

            model, tokenizer = load_causal_lm(model, device=device)
        if tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer (tokenizer=...)")
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.prompt, self.abstain_entropy, self.max_batch = prompt, abstain_entropy, max_batch
        self._cache: tuple[list[int], kvlib.KV, torch.Tensor] | None = None
        self.eos_id = tokenizer.eos_token_id

    def prompt_text(self, context: Any) -> str:
        """The prompt for ``context`` (a dict's keys fill the template; a string is the question)."""
        fields = context if isinstance(context, dict) else {"question": str(context)}
        return self.prompt.format(**fields)

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``log p(candidate text | prompt)`` up to a constant shared by all candidates, ``[N]``."""
        self.check_grad_request(need_grad)
        texts = [str(c) for c in candidates]
        if not texts:
            return ScoreOutput(scores=torch.zeros(0))
        cut = split_point(texts)
        scores = self.suffix_logprobs(self.prompt_text(context) + texts[0][:cut], [t[cut:] for t in texts])
        return ScoreOutput(scores=scores, abstain=self.is_flat(scores))

    def is_flat(self, scores: torch.Tensor) -> bool:
        """Whether ``softmax(scores)`` is flat enough to abstain (never for a single candidate)."""
        if self.abstain_entropy is None or scores.numel() < 2:
            return False
        p = F.softmax(scores.double(), -1)
        entropy = float(-(p * p.clamp_min(1e-300).log()).sum())
        return entropy / math.log(scores.numel()) >= self.abstain_entropy

    @torch.no_grad()
    def suffix_logprobs(self, context: str, suffixes: list[str]) -> torch.Tensor:
        """``[len(suffixes)]`` summed log-probabilities of each suffix after ``context``, batched over the
        suffixes on one key/value cache of the context. An empty suffix (a candidate that adds no text,
        e.g. the generator's end-of-text token) is rated as the scorer's own end of text."""
        ctx_ids, past, last = self._context(context)
        rows = [list(self.tokenizer(s, add_special_tokens=False)["input_ids"]) if s else [] for s in suffixes]
        rows = [r if r else ([self.eos_id] if self.eos_id is not None else []) for r in rows]
        out = torch.zeros(len(rows))
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start : start + self.max_batch]
            out[start : start + len(chunk)] = self._batch(past, last, chunk)
        return out

    def _batch(self, past: kvlib.KV, last: torch.Tensor, rows: list[list[int]]) -> torch.Tensor:
        """Summed log-probabilities of token rows after a context (``last``: its next-token log-probs).

        Each row's first token is rated by ``last``; the others by one forward pass of all rows but their
        last tokens, right-padded: a real token attends only to the context and the tokens before it, so
        the padding changes nothing."""
        total = torch.tensor([float(last[r[0]]) if r else 0.0 for r in rows])
        width = max(len(r) for r in rows) - 1
        if width < 1:
            return total
        ids = torch.tensor([r[:-1] + [0] * (width + 1 - len(r)) if r else [0] * width for r in rows], device=self.device)
        batched = [(k.expand(len(rows), -1, -1, -1).contiguous(), v.expand(len(rows), -1, -1, -1).contiguous())
                   for k, v in past]
        logits, _ = kvlib.forward_batch(self.model, ids, batched)
        logp = F.log_softmax(logits, -1)
        for i, r in enumerate(rows):
            if len(r) > 1:
                target = torch.tensor(r[1:], device=self.device)
                total[i] += float(logp[i, torch.arange(len(r) - 1, device=self.device), target].sum())
        return total

    def _context(self, text: str) -> tuple[list[int], kvlib.KV, torch.Tensor]:
        """The context's token ids, key/value cache and next-token log-probabilities; the cache of the
        previous context is extended when the new one starts with it (one solution, round after round)."""
        ids = list(self.tokenizer(text)["input_ids"])
        if not ids:
            raise ValueError("the scorer's prompt encodes to no tokens; give a non-empty prompt template")
        if self._cache is not None and self._cache[0] == ids:
            return self._cache
        common = 0
        if self._cache is not None:
            for a, b in zip(self._cache[0], ids, strict=False):
                if a != b:
                    break
                common += 1
        common = min(common, len(ids) - 1)  # at least the last token runs, for its distribution
        past = [(k[:, :, :common], v[:, :, :common]) for k, v in self._cache[1]] if common else None
        logits, new_past = kvlib.forward(self.model, torch.tensor([ids[common:]], device=self.device), past)
        self._cache = (ids, kvlib.detach(new_past), F.log_softmax(logits[-1], -1))
        return self._cache

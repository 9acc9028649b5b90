"""Sentence-embedding verifier: a frozen MiniLM encoder and a trained MLP head.

The question and the *tail* of the (partial) solution — its last ``window`` characters, i.e. the step
being written — are embedded separately by all-MiniLM-L6-v2 (mean pooling); the question's *token*
embeddings are attention-pooled with the tail as the query (which part of the question the step is
about), and a few dense features of the last step (is the number being typed in the question or an
earlier result? arithmetic slips? final answer consistent?) join them. The head is an MLP over
``[q, t, a, q·t, |q−t|, a·t, step]``. The question's embeddings are cached, so each round encodes only
short tails, in one batch for all candidates. Different features (semantic embeddings + a handful of
step features, no n-grams), architecture (transformer + MLP), training problems and data mix (LM
samples weigh in) from the numeric verifier. Scores are ``log p(correct)``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.tasks.math.verifiers.checkpoint import DEFAULT_CHECKPOINTS, load_checkpoint

STEP_FEATURES = ("partial_q", "partial_r", "partial_u", "partial_too_long", "arith_errors", "has_final",
                 "final_is_last_result", "final_explained", "frac_unexplained", "repeated_lines")
"""Dense features of the step being written (from :mod:`ensemble.tasks.math.verifiers.numeric_features`) the head
also reads: whether the number being typed comes from the question or an earlier result, arithmetic
slips, the final answer's consistency. Embeddings alone cannot see a wrong digit."""


def step_features(question: str, solutions: list[str]) -> torch.Tensor:
    """``[len(solutions), len(STEP_FEATURES)]`` last-step features."""
    from ensemble.tasks.math.verifiers.numeric_features import DENSE_NAMES, N_HASH, features, question_numbers

    idx = [N_HASH + DENSE_NAMES.index(n) for n in STEP_FEATURES]
    qnums = question_numbers(question)
    if not solutions:
        return torch.zeros(0, len(STEP_FEATURES))
    return torch.stack([features(question, s, qnums)[idx] for s in solutions])


class PairHead(torch.nn.Module):
    """MLP over ``[q, t, a, q·t, |q−t|, a·t, step]`` → one logit.

    ``q`` is the question's embedding, ``t`` the solution tail's, ``a`` the question's *token*
    embeddings attention-pooled with ``t`` as the query (the part of the question the step uses), and
    ``step`` the :data:`STEP_FEATURES`.
    """

    def __init__(self, dim: int = 384, hidden: int = 256, dropout: float = 0.1, n_step: int = len(STEP_FEATURES),
                 attn_temperature: float = 0.1) -> None:
        super().__init__()
        self.dim, self.n_step, self.attn_temperature = dim, n_step, attn_temperature
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6 * dim + n_step, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, 1)
        )

    def attend(self, q_tokens: torch.Tensor, q_mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Attention-pool question tokens ``[B, L, dim]`` (mask ``[B, L]``) with queries ``t [B, dim]``."""
        logits = torch.einsum("bld,bd->bl", q_tokens, t) / self.attn_temperature
        logits = logits.masked_fill(q_mask <= 0, -1e4)
        return F.normalize(torch.einsum("bl,bld->bd", logits.softmax(-1), q_tokens), dim=-1)

    def forward(self, q: torch.Tensor, t: torch.Tensor, a: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``q, t, a``: ``[B, dim]``, ``step``: ``[B, n_step]`` → ``[B]`` logits."""
        return self.net(torch.cat([q, t, a, q * t, (q - t).abs(), a * t, step], -1)).squeeze(-1)


def tail(solution: str, window: int) -> str:
    """The last ``window`` characters of ``solution`` (the step being written); ``"(start)"`` if empty."""
    text = solution[-window:].strip()
    return text or "(start)"


class TextEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings with a small cache for repeated texts."""

    def __init__(self, encoder: str | Any = "all-minilm-l6-v2", tokenizer: Any = None, device: str = "cpu",
                 max_length: int = 128) -> None:
        if isinstance(encoder, str):
            from ensemble.models import load_text_encoder

            encoder, tokenizer = load_text_encoder(encoder, device=device)
        if tokenizer is None:
            raise ValueError("a loaded encoder needs its tokenizer (tokenizer=...)")
        self.model, self.tokenizer = encoder.eval(), tokenizer
        self.device = torch.device(device)
        self.max_length = max_length
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 64, cache: bool = False) -> torch.Tensor:
        """``[len(texts), dim]`` embeddings."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache] if cache else list(dict.fromkeys(texts))
        fresh: dict[str, torch.Tensor] = {}
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1).float().cpu()
            fresh.update(zip(chunk, pooled, strict=True))
        lookup = {**self._cache, **fresh} if cache else fresh
        out = torch.stack([lookup[t] for t in texts]) if texts else torch.zeros(0)
        if cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache.update(fresh)
        return out


    @torch.no_grad()
    def tokens(self, text: str) -> torch.Tensor:
        """``[L, dim]`` L2-normalised token embeddings of ``text`` (cached; padding-free)."""
        key = "\x00tok:" + text
        if key not in self._cache:
            enc = self.tokenizer([text], truncation=True, max_length=256, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state[0].float().cpu()
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = F.normalize(hidden, dim=-1)
        return self._cache[key]


def question_tokens(embedder: TextEmbedder, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token embeddings ``[B, L, dim]`` and mask ``[B, L]`` of ``questions``."""
    toks = [embedder.tokens(q) for q in questions]
    length = max(t.shape[0] for t in toks)
    out = torch.zeros(len(toks), length, toks[0].shape[1])
    mask = torch.zeros(len(toks), length)
    for i, t in enumerate(toks):
        out[i, : t.shape[0]], mask[i, : t.shape[0]] = t, 1.0
    return out, mask


class MiniLMVerifier(Scorer):
    """Rates (question, partial solution) pairs by ``log p(correct)`` from sentence embeddings.

    Args:
        checkpoint: a project checkpoint name or directory (default ``verifiers/gsm-minilm``); its
            ``config.json`` names the encoder, window and head size. ``None`` builds an *untrained*
            head (seeded) on ``encoder`` — for contract tests and smoke runs.
        encoder: text encoder of an untrained verifier (``checkpoint=None``).
        device: torch device of the encoder.
        embedder, head, window: already built parts (tests, training); override ``checkpoint``.
    """

    modality = "text"

    def __init__(
        self, checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINTS["minilm_verifier"], device: str = "cpu",
        embedder: TextEmbedder | None = None, head: PairHead | None = None, window: int = 96,
        encoder: str = "all-minilm-l6-v2",
    ) -> None:
        if head is None and checkpoint is None:
            embedder = embedder or TextEmbedder(encoder, device=device)
            dim = int(embedder(["x"]).shape[-1])
            torch.manual_seed(0)
            head = PairHead(dim, hidden=32)
        if head is None:
            config, state, _ = load_checkpoint(checkpoint, "minilm_verifier")
            head = PairHead(int(config["dim"]), int(config["hidden"]), n_step=int(config.get("n_step", len(STEP_FEATURES))))
            head.load_state_dict(state)
            window = int(config["window"])
            embedder = embedder or TextEmbedder(config["encoder"], device=device)
        if embedder is None:
            raise ValueError("MiniLMVerifier built from parts needs embedder=")
        self.embedder, self.head, self.window = embedder, head.eval(), window

    def logits(self, questions: list[str], solutions: list[str]) -> torch.Tensor:
        """``[N]`` logits for paired questions and solutions."""
        return self.head_logits(self.head, self.embedder, questions, solutions, self.window)

    @staticmethod
    def inputs(embedder: TextEmbedder, questions: list[str], solutions: list[str], window: int,
               head: PairHead) -> tuple[torch.Tensor, ...]:
        """The head's inputs ``(q, t, a, step)`` for paired questions and solutions."""
        q = embedder(questions, cache=True)
        t = embedder([tail(s, window) for s in solutions])
        qt, mask = question_tokens(embedder, questions)
        with torch.no_grad():
            a = head.attend(qt, mask, t)
        step = torch.cat([step_features(qq, [s]) for qq, s in zip(questions, solutions, strict=True)]) \
            if len(set(questions)) > 1 else step_features(questions[0], solutions)
        return q, t, a, step

    @classmethod
    def head_logits(cls, head: PairHead, embedder: TextEmbedder, questions: list[str], solutions: list[str],
                    window: int) -> torch.Tensor:
        """``[N]`` logits of ``head`` (no gradient)."""
        with torch.no_grad():
            return head(*cls.inputs(embedder, questions, solutions, window, head))

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``log p(correct | question, solution)`` per candidate solution text, ``[N]``."""
        self.check_grad_request(need_grad)
        question = context["question"] if isinstance(context, dict) else str(context)
        candidates = list(candidates)
        if not candidates:
            return ScoreOutput(scores=torch.zeros(0))
        return ScoreOutput(scores=F.logsigmoid(self.logits([question] * len(candidates), candidates)))

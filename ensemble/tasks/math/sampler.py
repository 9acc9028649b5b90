"""Batched sampling of K complete solutions from one causal LM, with the calculator.

The prompt runs once; its key/value context is repeated for ``K`` rows, and every step runs all rows in one
``[K, 1]`` forward pass. Each row advances exactly one token per step, so the batched context stays
rectangular without padding: a row either takes the next token of text forced on it (the calculator's value
after ``3*8=``, queued as tokens) or samples one from the LM (temperature, optional top-p; temperature 0 =
greedy). A finished row (end-of-text, a stop string, ``stop_fn``, the token budget) leaves the batch (its
context rows are dropped), so a long solution does not keep the short ones' compute. Row 0 can be the LM's greedy solution (``greedy_first``), so a pick among the K
can always fall back on the LM's own answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ensemble.generators import kv as kvlib


@dataclass
class SampleConfig:
    """How the K solutions are drawn.

    Attributes:
        k: solutions per problem (rows of the batch).
        temperature: sampling temperature (> 0) of the sampled rows.
        top_p: nucleus sampling mass (1.0: off).
        greedy_first: row 0 is the greedy solution (the LM alone's), the other ``k - 1`` are sampled.
        max_new_tokens: token budget per solution.
    """

    k: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    greedy_first: bool = True
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        bad = {name: getattr(self, name) for name, ok in {
            "k": self.k >= 1, "temperature": self.temperature > 0, "top_p": 0.0 < self.top_p <= 1.0,
            "max_new_tokens": self.max_new_tokens >= 1}.items() if not ok}
        if bad:
            raise ValueError(f"invalid SampleConfig value(s) {bad}: k, max_new_tokens >= 1; temperature > 0; "
                             "top_p in (0, 1]")


class BatchSampler:
    """Draws K solutions per prompt in one batch (see the module docstring).

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        prompt_fn: context → prompt text.
        force_fn: solution text → text to force next (``""``: none), e.g. the calculator.
        stop_fn: solution text → finished.
        stop_strings: a solution also ends once its text holds one of these.
        device: torch device.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt_fn: Callable[[Any], str],
                 force_fn: Callable[[str], str] | None = None, stop_fn: Callable[[str], bool] | None = None,
                 stop_strings: tuple[str, ...] = (), device: str = "cpu") -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.prompt_fn, self.force_fn, self.stop_fn = prompt_fn, force_fn, stop_fn
        self.stop_strings = tuple(stop_strings)
        self.device = torch.device(device)
        self.eos_id = tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text(self, ids: list[int]) -> str:
        """Decoded solution text."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _stops(self, text: str) -> bool:
        return any(s in text for s in self.stop_strings) or bool(self.stop_fn and self.stop_fn(text))

    def clean(self, text: str) -> str:
        """The solution without a trailing stop string (``"\\nQuestion:"`` …)."""
        for s in self.stop_strings:
            if s in text:
                text = text[: text.index(s)]
        return text.rstrip()

    def _pick(self, logits: torch.Tensor, config: SampleConfig, gen: torch.Generator, greedy_row: bool) -> torch.Tensor:
        """``[B]`` next tokens from ``[B, vocab]`` logits; the first row is greedy when ``greedy_row`` and
        ``greedy_first`` (it is row 0, which stays first while it is live)."""
        probs = torch.softmax(logits / config.temperature, -1)
        if config.top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > config.top_p
            probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        tokens = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        if config.greedy_first and greedy_row:
            tokens[0] = logits[0].argmax()
        return tokens

    @torch.no_grad()
    def sample(self, context: Any, config: SampleConfig, seed: int = 0) -> list[str]:
        """``config.k`` solution texts for ``context`` (deterministic in ``seed``)."""
        gen = torch.Generator().manual_seed(int(seed))
        prompt = self._ids(self.prompt_fn(context))
        if not prompt:
            raise ValueError("the prompt encodes to no tokens")
        k = config.k
        logits, past = kvlib.forward(self.model, torch.tensor([prompt], device=self.device), None)
        past = [(key.expand(k, *key.shape[1:]).contiguous(), v.expand(k, *v.shape[1:]).contiguous()) for key, v in past]
        last = logits[-1].expand(k, -1)
        ids: list[list[int]] = [[] for _ in range(k)]
        queues: list[list[int]] = [[] for _ in range(k)]
        done = [False] * k
        live = list(range(k))  # rows still in the batch, in batch order
        for _ in range(config.max_new_tokens):
            sampled = self._pick(last, config, gen, greedy_row=0 in live).tolist()
            feed = []
            for j, r in enumerate(live):
                tok = queues[r].pop(0) if queues[r] else sampled[j]
                ids[r].append(tok)
                feed.append(tok)
                self._after(r, tok, ids, queues, done, config)
            keep = [j for j, r in enumerate(live) if not done[r]]
            if not keep:
                break
            if len(keep) < len(live):  # finished rows leave the batch
                index = torch.tensor(keep, device=self.device)
                past = [(key.index_select(0, index), v.index_select(0, index)) for key, v in past]
                feed = [feed[j] for j in keep]
                live = [live[j] for j in keep]
            step, past = kvlib.forward_batch(self.model, torch.tensor(feed, device=self.device)[:, None], past)
            last = step[:, -1]
        return [self.clean(self.text(row)) for row in ids]

    def _after(self, r: int, tok: int, ids: list[list[int]], queues: list[list[int]], done: list[bool],
               config: SampleConfig) -> None:
        """Row ``r`` took ``tok``: is it finished, and does the calculator force text after it?"""
        if tok == self.eos_id or len(ids[r]) >= config.max_new_tokens:
            done[r] = True
            return
        text = self.text(ids[r])
        if self._stops(text):
            done[r] = True
            return
        if not queues[r] and self.force_fn is not None:
            forced = self.force_fn(text)
            queues[r] = self._ids(forced) if forced else []

"""Video CLIP scorer: rates answer texts against a video's frames with any open_clip model.

For the token rule, a candidate is the answer so far plus one candidate token; the scorer embeds
``template.format(question=…, answer=candidate)`` and every frame of the video, and a candidate's score
is ``scale · agg_k cos(frame_k, text)`` with ``agg`` the mean over frames (the default) or the max.
With ``motion=True`` the frames also include *motion frames* (:func:`motion_frames`: each frame kept
only where it differs from the one before), so a per-frame model can see what changed — the questions
whose answers need more than one frame. A *video model* (one with ``encode_video``, such as the LiT CLIP
of :mod:`ensemble.models.lit_clip`) instead embeds the whole video once from its :func:`video_slots` (first
and last frame and their motion frames), and a candidate's score is ``scale · cos(video, text)``.

Scores are not differentiable (the token rule needs ratings of text candidates, not gradients).

New candidate texts are embedded by :func:`encode_texts`: grouped by length, each group trimmed to its length, in
chunks of :data:`TEXT_CHUNK` — the same embeddings as one padded batch (up to float rounding), at a fraction of the
cost (at beam 5 with 512 candidates a question is ~5,000 new texts per CLIP, nearly all of its time).
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.tasks.video_qa.data import ANSWER_END_RE

AGGREGATIONS = ("mean", "max")
TEXT_CHUNK = 64
"""Texts per text-tower call of :func:`encode_texts` (one thread: 64 was faster than 256 or all at once)."""
TEXT_CACHE = 200_000
"""Text embeddings a scorer keeps (the oldest go first): the questions of a set share most candidate texts."""
DEFAULT_TEMPLATE = "{question} {answer}"
"""How a question and a (partial) answer become the CLIP text; the trained CLIPs see this format."""


def motion_frames(frames: torch.Tensor, threshold: float = 0.08, fill: float = 0.5) -> torch.Tensor:
    """``[K, 3, H, W]`` frames in [0, 1] → ``[2(K-1), 3, H, W]``: for each consecutive pair, the earlier
    and the later frame kept only where the two differ by more than ``threshold`` (elsewhere ``fill``
    grey). What moved appears in its own colours, at its old and at its new place; nothing else does."""
    if frames.shape[0] < 2:
        return frames[:0]
    before, after = frames[:-1], frames[1:]
    changed = ((after - before).abs().amax(1, keepdim=True) > threshold).float()
    grey = torch.full_like(before, fill)
    return torch.cat([before * changed + grey * (1 - changed), after * changed + grey * (1 - changed)])


def video_inputs(frames: torch.Tensor, motion: bool) -> torch.Tensor:
    """The frames a video scorer embeds: the sampled frames, plus their motion frames if asked."""
    return torch.cat([frames, motion_frames(frames)]) if motion else frames


def video_slots(frames: torch.Tensor) -> torch.Tensor:
    """``[K, 3, H, W]`` → the ``[4, 3, H, W]`` slots a video model (``encode_video``) reads: the first and the
    last frame and their two motion frames (for a one-frame video: the frame twice and two grey frames)."""
    ends = torch.cat([frames[:1], frames[-1:]])
    return torch.cat([ends, motion_frames(ends)])


def _causal_clip(model: Any) -> bool:
    """True for an open_clip ``CLIP`` whose text tower is causal and pools one token (argmax / eos): its text
    embedding depends only on the tokens up to the pooled one, so padding after it can be cut off."""
    mask = getattr(model, "attn_mask", None)
    if (mask is None or getattr(model, "text_pool_type", None) not in ("argmax", "eos")
            or not hasattr(model, "positional_embedding") or not hasattr(model, "token_embedding")):
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all())


def text_lengths(model: Any, tokens: torch.Tensor) -> torch.Tensor | None:
    """``[N]``: per padded token row, the prefix the model's text embedding depends on (``None``: all of it).

    A LiT CLIP (:mod:`ensemble.models.lit_clip`) masks out its padding: the tokens before it. A causal open_clip
    CLIP: the tokens up to the pooled one (the end-of-text token)."""
    if hasattr(model, "text_tower_features") and isinstance(getattr(model, "pad_id", None), int):
        return (tokens != model.pad_id).sum(1).clamp(min=1)
    if _causal_clip(model):
        eos = getattr(model, "text_eos_id", None)
        pooled = tokens.argmax(-1) if model.text_pool_type == "argmax" else (tokens == eos).int().argmax(-1)
        return pooled + 1
    return None


def _causal_clip_text(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip ``CLIP.encode_text`` on ``[N, L]`` tokens with ``L`` at most the context length (the positional
    embedding and the causal mask cut to ``L``); equal to the full-length call where the pooled token is within ``L``."""
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return x


def encode_texts(model: Any, tokens: torch.Tensor, chunk: int = TEXT_CHUNK) -> torch.Tensor:
    """``model.encode_text`` of padded ``[N, L]`` tokens → ``[N, D]``, computed length-grouped: rows of one
    length (:func:`text_lengths`) run together, cut to that length, ``chunk`` rows per call (a model whose
    lengths are unknown: chunks of the padded rows); equal token rows are embedded once. Equal to one call on all
    rows up to float rounding."""
    unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    if len(unique) < len(tokens):  # texts the tokenizer cannot tell apart ("Yellow", "yellow") share one embedding
        return encode_texts(model, unique, chunk)[inverse]
    lengths = text_lengths(model, tokens)
    if lengths is not None and _causal_clip(model):
        def encode(rows: torch.Tensor) -> torch.Tensor:
            return _causal_clip_text(model, rows)
    else:
        encode = model.encode_text
    if lengths is None:
        order, lengths = torch.arange(len(tokens)), torch.full((len(tokens),), tokens.shape[1])
    else:
        order = torch.argsort(lengths, stable=True)
    parts, rows = [], []
    start = 0
    while start < len(order):
        n = int(lengths[order[start]])
        end = start + 1
        while end < len(order) and end - start < chunk and int(lengths[order[end]]) == n:
            end += 1
        idx = order[start:end]
        parts.append(encode(tokens[idx, :n]).float())
        rows.append(idx)
        start = end
    out = torch.empty(len(tokens), parts[0].shape[-1], dtype=parts[0].dtype, device=parts[0].device)
    out[torch.cat(rows).to(out.device)] = torch.cat(parts)
    return out


class VideoClipScorer(Scorer):
    """Rates texts (question + answer so far + candidate token) by CLIP similarity to a video's frames.

    Args:
        model: an open_clip name (``"ViT-B-32/openai"``, ``"ViT-L-14/openai"``, a project checkpoint such as
            ``"video_qa/clip-vit"`` or the LiT video CLIP ``"video_qa/clip-lit"``, ``"tiny-clip"``) or a loaded model.
        tokenizer: its tokenizer, when ``model`` is an object.
        device: torch device.
        aggregate: ``"mean"`` or ``"max"`` of the per-frame similarities.
        scale: multiplier of the cosine similarity (CLIP's logit scale is 100).
        template: format string with ``{question}`` and ``{answer}``.
        motion: also embed the motion frames (:func:`motion_frames`; a video model always reads them).
        answer_end: rate each candidate as the answer it would leave: its text up to the mark that ends an
            answer (:data:`~ensemble.tasks.video_qa.data.ANSWER_END_RE`: a line break or punctuation). A
            candidate token that ends the answer ("," "." a line break; the end-of-text token decodes to
            nothing) is then rated as the answer as it is, and competes on equal terms with a continuation
            ("yes" against "yes yes"), instead of as a text ending in punctuation the CLIP never saw.
        grouped_text: embed new texts with :func:`encode_texts` (length-grouped, trimmed, chunked); False: one padded
            batch (the reference path; the same embeddings up to float rounding, slower).

    The context is ``{"question": str, "frames": Tensor[K, 3, H, W] in [0, 1]}``; candidates a list of
    ``N`` answer texts; scores ``[N]``.
    """

    differentiable = False
    modality = "video"

    def __init__(self, model: str | Any = "ViT-B-32/openai", tokenizer: Any = None, device: str = "cpu",
                 aggregate: str = "mean", scale: float = 100.0, template: str = DEFAULT_TEMPLATE,
                 motion: bool = False, answer_end: bool = False, grouped_text: bool = True) -> None:
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate={aggregate!r} must be one of {', '.join(AGGREGATIONS)}")
        if "{answer}" not in template:
            raise ValueError(f"template {template!r} must contain {{answer}} (and may contain {{question}})")
        from ensemble.scorers.clip import ClipScorer

        self.clip = ClipScorer(model, tokenizer, device=device, input_range=(0.0, 1.0), scale=scale)
        self.aggregate, self.scale, self.template, self.motion = aggregate, scale, template, motion
        self.answer_end, self.grouped_text = answer_end, grouped_text
        self.device = self.clip.device
        self._texts: dict[str, torch.Tensor] = {}
        self._frames: tuple[Any, torch.Tensor] | None = None

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised ``[N, D]`` embeddings of ``texts`` (new ones batched; the last :data:`TEXT_CACHE` cached
        per text)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            with torch.no_grad():
                tokens = self.clip.tokenizer(new).to(self.device)
                model = self.clip.model
                feats = encode_texts(model, tokens) if self.grouped_text else model.encode_text(tokens).float()
                feats = F.normalize(feats, dim=-1)
            self._texts.update(zip(new, feats, strict=True))
        out = torch.stack([self._texts[t] for t in texts])
        if len(self._texts) > TEXT_CACHE:  # the oldest go (dicts keep insertion order)
            for old in list(islice(self._texts, len(self._texts) - TEXT_CACHE)):
                del self._texts[old]
        return out

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``[K', D]`` embeddings of a video's frames (+ motion frames); the last video's are cached."""
        if self._frames is not None and self._frames[0] is frames:
            return self._frames[1]
        x = torch.as_tensor(frames, dtype=torch.float32).to(self.device)
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"frames must be [K, 3, H, W] in [0, 1], got shape {tuple(x.shape)}")
        with torch.no_grad():
            if hasattr(self.clip.model, "encode_video"):  # a video model (LiT CLIP): one embedding per video
                slots = self.clip.preprocess(video_slots(x))[None]
                feats = F.normalize(self.clip.model.encode_video(slots).float(), dim=-1)
            else:
                feats = self.clip.image_features(video_inputs(x, self.motion))
        self._frames = (frames, feats)
        return feats

    def texts(self, context: dict[str, Any], candidates: list[str]) -> list[str]:
        """The CLIP texts of ``candidates`` for ``context``'s question."""
        question = str(context.get("question", ""))
        answers = [str(c).strip() for c in candidates]
        if self.answer_end:
            answers = [ANSWER_END_RE.split(a, maxsplit=1)[0].strip() for a in answers]
        return [self.template.format(question=question, answer=a).strip() for a in answers]

    def similarity(self, context: dict[str, Any], candidates: list[str]) -> torch.Tensor:
        """``[N, K']`` cosine similarities of every candidate text with every frame."""
        return self.text_features(self.texts(context, candidates)) @ self.frame_features(context["frames"]).T

    def score(self, context: Any, candidates: Any, *, need_grad: bool = False) -> ScoreOutput:
        """``scale · agg_k cos(frame_k, text)`` per candidate: ``[N]``."""
        self.check_grad_request(need_grad)
        if not isinstance(context, dict) or "frames" not in context:
            raise ValueError("the video CLIP scorer needs a context {'question': …, 'frames': Tensor[K, 3, H, W]}")
        sims = self.similarity(context, list(candidates))
        agg = sims.mean(-1) if self.aggregate == "mean" else sims.amax(-1)
        return ScoreOutput(scores=(self.scale * agg).cpu())

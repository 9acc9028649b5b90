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
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import ScoreOutput, Scorer
from ensemble.tasks.video_qa.data import ANSWER_END_RE

AGGREGATIONS = ("mean", "max")
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

    The context is ``{"question": str, "frames": Tensor[K, 3, H, W] in [0, 1]}``; candidates a list of
    ``N`` answer texts; scores ``[N]``.
    """

    differentiable = False
    modality = "video"

    def __init__(self, model: str | Any = "ViT-B-32/openai", tokenizer: Any = None, device: str = "cpu",
                 aggregate: str = "mean", scale: float = 100.0, template: str = DEFAULT_TEMPLATE,
                 motion: bool = False, answer_end: bool = False) -> None:
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate={aggregate!r} must be one of {', '.join(AGGREGATIONS)}")
        if "{answer}" not in template:
            raise ValueError(f"template {template!r} must contain {{answer}} (and may contain {{question}})")
        from ensemble.scorers.clip import ClipScorer

        self.clip = ClipScorer(model, tokenizer, device=device, input_range=(0.0, 1.0), scale=scale)
        self.aggregate, self.scale, self.template, self.motion = aggregate, scale, template, motion
        self.answer_end = answer_end
        self.device = self.clip.device
        self._texts: dict[str, torch.Tensor] = {}
        self._frames: tuple[Any, torch.Tensor] | None = None

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised ``[N, D]`` embeddings of ``texts`` (batched; cached per text)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            with torch.no_grad():
                tokens = self.clip.tokenizer(new).to(self.device)
                feats = F.normalize(self.clip.model.encode_text(tokens).float(), dim=-1)
            if len(self._texts) > 100_000:
                self._texts.clear()
            self._texts.update(zip(new, feats, strict=True))
        return torch.stack([self._texts[t] for t in texts])

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

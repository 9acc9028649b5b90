"""Train the LiT video CLIP ``video_qa/clip-lit``: pre-trained frozen towers, trained heads, minutes on a CPU.

The member differs from the two ViT CLIPs in what it is built from (the paper composes *pre-trained*
models): the image tower is the ImageNet-pretrained EfficientNet-Lite0, the text tower the pre-trained
all-MiniLM-L6-v2 sentence encoder, both frozen (:mod:`ensemble.models.lit_clip`); only the video head
(first / last frame, their two motion frames and the frames' difference), the text head and a logit scale
are trained, on the **train splits only** (the same easy-VQA images and tabletop clips as the ViTs, the
same held-out images and clips). Frozen towers mean every training frame and text is embedded once
(cached under ``<cache>/video_qa/``), and a step is a few milliseconds.

The objective is the ViTs' (multi-positive cross-entropy over an answer's kind + 3 random answers) with
three changes for the token rule, which rates partial answers and whatever tokens the LM proposes:

* every term has one positive, so a two-word answer ("red mug") is matched by nothing shorter: it ranks above
  its first word ("red") and its cut after the LM's token " m" ("red m"); a second term ranks that cut above the
  first word and the other objects' cuts (the round after the colour), a third the first word among first words
  ("red" above "blue", "yellow"; the first token's round). (Round 4's objective had the cut as a second positive
  of the first term, which the heads satisfied by rating "red m" high and "red mug" low, so the answer stopped
  at "red m"; README, round 5.)
* every question also contrasts :data:`JUNK` words (tokens the LM proposes that are no answer: "the",
  "if", the empty answer …), so off-answer tokens score low;
* a killed run resumes from ``<cache>/resume/video_qa/clip-lit/state.pt`` (saved every ``save_every`` steps).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ensemble.models.lit_clip import LitClipConfig
from ensemble.tasks.video_qa.models import (
    JUNK,
    TABLETOP_OBJECTS,
    VOCABULARY,
    _clip_qas,
    _easy_vqa_tensors,
    candidate_answers,
    loss_terms,
    partial,
    tabletop_training_clips,
)
from ensemble.tasks.video_qa.video_clip import DEFAULT_TEMPLATE

LIT_CHECKPOINT = "video_qa/clip-lit"
"""The LiT video CLIP's project checkpoint name."""
ALL_ANSWERS = tuple(dict.fromkeys((*VOCABULARY, *JUNK, *(partial(o) for o in TABLETOP_OBJECTS))))
"""Every answer text the training contrasts (the text features are computed for each question × these)."""


@dataclass
class LitTrainConfig:
    """Budgets of :func:`train_lit_clip` (defaults: ~5 min of feature extraction, once, + ~5 min of training, 1 thread)."""

    steps: int = 500
    """Optimiser steps (heads only; the held-out tabletop accuracy was flat from 250 to 500 steps: README)."""
    batch_size: int = 256
    """easy-VQA questions per step (and half as many tabletop questions)."""
    tabletop_clips: int = 1000
    """Tabletop training clips (train scene seeds; the last 10 % held out), three question kinds each."""
    lr: float = 1e-3
    """Peak learning rate (one-cycle)."""
    seed: int = 5
    """Training seed (head initialisation and batches)."""
    eval_every: int = 0
    """Log the held-out accuracy every this many steps (0: only at the end)."""
    save_every: int = 250
    """Write the resume state every this many steps (0: never)."""
    overwrite: bool = True
    """Replace an existing checkpoint."""
    lit: LitClipConfig = field(default_factory=LitClipConfig)
    """The towers and heads."""

    def __post_init__(self) -> None:
        if self.steps < 4:
            raise ValueError(f"steps={self.steps} must be at least 4 (the one-cycle schedule's warm-up and decay)")
        for name in ("batch_size", "tabletop_clips"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 2")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be 0 (off) or a positive number of steps")

    def resume_key(self) -> dict[str, Any]:
        """The settings a resume state must match."""
        return {k: v for k, v in asdict(self).items() if k not in ("eval_every", "save_every", "overwrite")}


# -- frozen features, computed once ----------------------------------------------------------------------------
def tower_features(model: Any, scorer: Any, frames: Any, batch: int = 64, desc: str = "frames") -> Any:
    """Image tower features ``[N, Di]`` (float16) of frames ``[N, 3, H, W]`` in [0, 1], preprocessed as the
    scorer does."""
    import torch
    from tqdm import tqdm

    out = [model.image_tower_features(scorer.clip.preprocess(frames[s:s + batch]))
           for s in tqdm(range(0, len(frames), batch), desc=f"embed {desc}", leave=False)]
    return torch.cat(out).half()


def training_features(model: Any, tokenizer: Any, cfg: LitTrainConfig, log=print) -> dict[str, Any]:
    """easy-VQA and tabletop slot features, the training / held-out questions and every training text's tower
    features, cached under ``<cache>/video_qa/lit-features-*.pt`` (keyed by towers, size and clips)."""
    import numpy as np
    import torch

    from ensemble.models import cache_dir
    from ensemble.tasks.video_qa.video_clip import VideoClipScorer, video_slots

    lit = cfg.lit
    path = cache_dir() / "video_qa" / f"lit-features-{lit.image_tower}-{lit.text_tower}-{lit.image_size}-{cfg.tabletop_clips}.pt"
    easy = _easy_vqa_tensors(size=64)
    clips = tabletop_training_clips(cfg.tabletop_clips, log=log)
    n_train = int(len(clips) * 0.9)
    qas = _clip_qas(clips)
    data = {"easy_train": easy["train"], "easy_held": easy["held"],
            "clip_train": [qa for qa in qas if qa[0] < n_train], "clip_held": [qa for qa in qas if qa[0] >= n_train]}
    if path.is_file():
        return {**data, **torch.load(path)}
    scorer = VideoClipScorer(model, tokenizer)
    images = easy["images"]
    grey = video_slots(images[:1])[2:3]
    easy_feats = tower_features(model, scorer, torch.cat([images, grey]), desc="easy-VQA images")
    frames = torch.from_numpy(np.stack([c["frames"] for c in clips])).permute(0, 1, 4, 2, 3).float() / 255
    slots = torch.stack([video_slots(f) for f in frames])  # [C, 4, 3, H, W]
    clip_feats = tower_features(model, scorer, slots.flatten(0, 1), desc="tabletop slots").view(len(clips), 4, -1)
    questions = sorted({q for _, q, _ in easy["train"] + easy["held"]} | {q for _, q, _ in qas})
    texts = [DEFAULT_TEMPLATE.format(question=q, answer=a).strip() for q in questions for a in ALL_ANSWERS]
    with torch.no_grad():
        text_feats = torch.cat([model.text_tower_features(tokenizer(texts[s:s + 128])) for s in range(0, len(texts), 128)])
    feats = {"easy_feats": easy_feats, "clip_feats": clip_feats, "text_feats": text_feats.half(),
             "text_index": {t: i for i, t in enumerate(texts)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(feats, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    log(f"cached the frozen towers' features at {path}")
    return {**data, **feats}


def slot_features(data: dict[str, Any], source: str, ids: list[int]) -> Any:
    """``[B, 4, Di]`` slot features: an easy-VQA image is a still video (image, image, grey, grey)."""
    import torch

    if source == "tabletop":
        return data["clip_feats"][ids].float()
    f, grey = data["easy_feats"][ids].float(), data["easy_feats"][-1].float()
    return torch.stack([f, f, grey.expand_as(f), grey.expand_as(f)], 1)


def contrast(model: Any, data: dict[str, Any], video: Any, questions: list[str],
             terms: list[list[tuple[list[str], list[str]]]]) -> tuple[Any, Any]:
    """Mean multi-positive cross-entropy of the terms of every question, and per term whether the top
    candidate is its first positive. ``video``: ``[B, D]`` normalised embeddings."""
    import torch
    import torch.nn.functional as F

    flat = [(b, c, p) for b, ts in enumerate(terms) for c, p in ts]
    keys = [[data["text_index"][DEFAULT_TEMPLATE.format(question=questions[b], answer=a).strip()] for a in c] for b, c, _ in flat]
    uniq = sorted({k for ks in keys for k in ks})
    pos_of = {k: i for i, k in enumerate(uniq)}
    txt = F.normalize(model.text_from_features(data["text_feats"][uniq].float()), dim=-1)
    width = max(len(k) for k in keys)
    rows = torch.tensor([[pos_of[k] for k in ks] + [0] * (width - len(ks)) for ks in keys])
    valid = torch.tensor([[True] * len(ks) + [False] * (width - len(ks)) for ks in keys])
    pos = torch.tensor([[a in p for a in c] + [False] * (width - len(c)) for _, c, p in flat])
    rowvid = video[torch.tensor([b for b, _, _ in flat])]
    logits = (model.logit_scale.exp() * torch.einsum("td,tad->ta", rowvid, txt[rows])).masked_fill(~valid, -1e9)
    loss = -(torch.logsumexp(logits.masked_fill(~pos, -1e9), -1) - torch.logsumexp(logits, -1)).mean()
    correct = logits.argmax(-1) == torch.tensor([c.index(p[0]) for _, c, p in flat])
    return loss, correct


def evaluate_lit(model: Any, data: dict[str, Any], n: int = 1000) -> dict[str, float]:
    """Held-out accuracy as the ViTs report it (:func:`~ensemble.tasks.video_qa.models.evaluate_clip`): the
    answer ranks first among its kind (+ its first word) and three random answers."""
    import torch
    import torch.nn.functional as F

    out, rng = {}, random.Random(0)
    model.eval()
    with torch.no_grad():
        for name, source, qas in (("easyvqa", "easyvqa", data["easy_held"][:n]), ("tabletop", "tabletop", data["clip_held"][:n])):
            video = F.normalize(model.video_from_features(slot_features(data, source, [i for i, _, _ in qas])), dim=-1)
            terms = [[(candidate_answers(a, rng), [a])] for _, _, a in qas]
            _, correct = contrast(model, data, video, [q for _, q, _ in qas], terms)
            out[name] = round(float(correct.float().mean()), 4)
    return out


def _resume_path() -> Any:
    from ensemble.models import cache_dir

    return cache_dir() / "resume" / LIT_CHECKPOINT / "state.pt"


def _save_resume(path: Any, state: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def train_lit_clip(cfg: LitTrainConfig | None = None, log=print) -> dict[str, Any]:
    """Train the LiT video CLIP's heads on the train splits; save it as :data:`LIT_CHECKPOINT`; the report.

    A run killed after a resume save continues from it (same settings: :meth:`LitTrainConfig.resume_key`),
    with the batches the uninterrupted run would have drawn."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from ensemble.models import save_project_checkpoint
    from ensemble.models.lit_clip import build_lit_clip, save_lit_clip

    cfg = cfg or LitTrainConfig()
    t0 = time.perf_counter()
    model, tokenizer = build_lit_clip(cfg.lit, seed=cfg.seed)
    data = training_features(model, tokenizer, cfg, log=log)
    features_s = time.perf_counter() - t0
    heads = [p for n, p in model.named_parameters() if not n.startswith(("visual.", "text_tower."))]
    for p in heads:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(heads, lr=cfg.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    rng, start, saved_at = random.Random(cfg.seed), 0, _resume_path()
    if saved_at.is_file():
        state = torch.load(saved_at, weights_only=False)
        if state.get("key") == cfg.resume_key():
            model.load_state_dict(state["heads"], strict=False)
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            rng.setstate(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            start = state["step"]
            log(f"resuming {LIT_CHECKPOINT} at step {start}/{cfg.steps} from {saved_at}")
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=f"train {LIT_CHECKPOINT}", initial=start, total=cfg.steps)
    for step in bar:
        e = rng.sample(data["easy_train"], cfg.batch_size)
        c = rng.sample(data["clip_train"], cfg.batch_size // 2)
        feats = torch.cat([slot_features(data, "easyvqa", [i for i, _, _ in e]), slot_features(data, "tabletop", [i for i, _, _ in c])])
        video = F.normalize(model.video_from_features(feats), dim=-1)
        qas = e + c
        loss, _ = contrast(model, data, video, [q for _, q, _ in qas], [loss_terms(a, rng) for _, _, a in qas])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            _save_resume(saved_at, {"key": cfg.resume_key(), "step": done, "heads": model.head_state(), "opt": opt.state_dict(),
                                    "sched": sched.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state()})
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            log(f"{LIT_CHECKPOINT} step {done}/{cfg.steps} ({time.perf_counter() - t0:.0f} s): held-out (train split) "
                f"answer accuracy {evaluate_lit(model, data)}")
            model.train()
    heldout = evaluate_lit(model, data)
    seconds = time.perf_counter() - t0
    log(f"{LIT_CHECKPOINT}: held-out (train split) answer accuracy {heldout}")
    record = {"steps": cfg.steps, "seed": cfg.seed, "heldout_accuracy": heldout, "lr": cfg.lr, "batch_size": cfg.batch_size,
              "data": "easy-VQA train (90 % of images) + tabletop train-seed clips (90 %)"}
    path = save_project_checkpoint(LIT_CHECKPOINT, lambda out: save_lit_clip(model, out, record), overwrite=cfg.overwrite)
    saved_at.unlink(missing_ok=True)
    return {"name": LIT_CHECKPOINT, "path": str(path), "heldout": heldout, "steps": cfg.steps, "seconds": seconds,
            "feature_seconds": features_s}

"""Train the video QA CLIPs offline, on a CPU, in minutes: ``ensemble train video-clips``.

No pretrained CLIP weights exist offline, so the task trains small open_clip CLIPs that err differently
(another image tower, another seed); the default ensemble is the two ViTs (the ResNet stayed weak on the
tabletop clips):

* ``video_qa/clip-vit``: a 32 px ViT image tower (patch 8, width 96, 3 layers), seed ``seed``;
* ``video_qa/clip-resnet``: a 32 px ModifiedResNet image tower, seed ``seed + 1``;
* ``video_qa/clip-vit4``: a 32 px ViT image tower with finer patches (patch 4, width 64, 2 layers), seed ``seed + 2``.

A fourth member is built from *pre-trained* models instead (:mod:`ensemble.tasks.video_qa.lit_train`:
``video_qa/clip-lit``, frozen EfficientNet-Lite0 and MiniLM towers with trained heads).

All see the **train splits only**: easy-VQA train images (one-frame videos; every tenth image is held out
to report a train-split accuracy) and tabletop clips rendered from train scene seeds (two frames + their
motion frames). The objective is the scorer's own use: for a video and a question, the score of each
answer text ``"{question} {answer}"`` is ``scale · mean over frames of cos(frame, text)`` (the
:class:`~ensemble.tasks.video_qa.video_clip.VideoClipScorer` with ``motion=True``), and cross-entropy
over the answers of the question's kind (:func:`loss_terms`: one positive per term) ranks the right answer
first, and — because the token rule rates partial answers — for a two-word answer also its cut after the LM's
token (``"red m"`` among ``"red"``, ``"red b"`` …) and its first word among the first words, but never a shorter
text above the whole answer (round 4's objective took the first word as a second positive, which the CLIPs
satisfied by rating ``"red"`` high and ``"red mug"`` low, so no answer went on after the colour: README).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble.tasks.video_qa.data import EASY_VQA_ANSWERS, HELD_OUT_EVERY, easy_vqa_all, render_clips
from ensemble.tasks.video_qa.video_clip import DEFAULT_TEMPLATE, video_inputs

CHECKPOINTS = {"vit": "video_qa/clip-vit", "resnet": "video_qa/clip-resnet", "vit4": "video_qa/clip-vit4"}
"""Architecture → project checkpoint name."""
SEED_OFFSETS = {"vit": 0, "resnet": 1, "vit4": 2}
"""Architecture → offset of its training seed from ``VideoClipTrainConfig.seed``."""
IMAGE_SIZE = 32
TEXT_CFG = {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
VISION_CFGS: dict[str, dict[str, Any]] = {
    "vit": {"image_size": IMAGE_SIZE, "layers": 3, "width": 96, "head_width": 32, "patch_size": 8},
    "resnet": {"image_size": IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "vit4": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "head_width": 32, "patch_size": 4},
}
EMBED_DIM = 64
MEAN_STD = (0.5, 0.5)
TABLETOP_OBJECTS = tuple(f"{c} {k}" for c in ("red", "green", "blue", "yellow") for k in ("bowl", "mug"))
"""The tabletop's object names (colours × kinds), for the answer vocabulary."""
VOCABULARY = tuple(dict.fromkeys((*EASY_VQA_ANSWERS, *TABLETOP_OBJECTS)))
"""Answers the CLIPs are trained to tell apart (first words of multi-word answers are in it too)."""


@dataclass
class VideoClipTrainConfig:
    """Budgets of :func:`train_video_clips` (defaults: a few minutes per CLIP on 2 CPU threads)."""

    steps: int = 2000
    """Optimiser steps per CLIP (held-out accuracy still rose from 1500 to 2000 steps: README)."""
    batch_size: int = 32
    """easy-VQA questions per step (and half as many tabletop questions)."""
    tabletop_clips: int = 1000
    """Tabletop training clips (train scene seeds), three questions each."""
    lr: float = 2e-3
    """Peak learning rate (one-cycle)."""
    seed: int = 0
    """Training seed (each CLIP adds its :data:`SEED_OFFSETS` entry)."""
    overwrite: bool = True
    """Replace existing checkpoints."""
    eval_every: int = 0
    """Log the held-out accuracy every this many steps (0: only at the end), to see where training plateaus."""
    finetune: bool = False
    """Start from the CLIP's existing checkpoint (its weights, not a random initialisation) and train ``steps``
    more steps with the current objective; the checkpoint records both runs' steps. An error if there is none."""

    def __post_init__(self) -> None:
        if self.steps < 4:
            raise ValueError(f"steps={self.steps} must be at least 4 (the one-cycle schedule's warm-up and decay)")
        if self.eval_every < 0:
            raise ValueError(f"eval_every={self.eval_every} must be 0 (off) or a positive number of steps")
        for name in ("batch_size", "tabletop_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


def build_clip(arch: str, seed: int) -> tuple[Any, Any]:
    """An untrained open_clip CLIP of ``arch`` (a :data:`VISION_CFGS` key) and its tokenizer."""
    import open_clip
    import torch
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if arch not in VISION_CFGS:
        raise ValueError(f"arch={arch!r} must be one of {', '.join(VISION_CFGS)}")
    torch.manual_seed(seed)
    model = open_clip.CLIP(EMBED_DIM, CLIPVisionCfg(**VISION_CFGS[arch]), CLIPTextCfg(**TEXT_CFG))
    return model, open_clip.SimpleTokenizer(context_length=TEXT_CFG["context_length"])


def _embed_frames(model: Any, x: Any) -> Any:
    """``[N, 3, H, W]`` in [0, 1] → L2-normalised ``[N, D]`` (resize to 32 px, normalise as saved)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    mean, std = MEAN_STD
    return F.normalize(model.encode_image((x - mean) / std), dim=-1)


def tabletop_training_clips(n: int, log=print) -> list[dict[str, Any]]:
    """``n`` clips from train scene seeds (cached under the cache dir: rendering takes ~30 ms each)."""
    import numpy as np

    from ensemble.models import cache_dir
    from ensemble.tasks.video_qa.data import TRAIN_SEED_OFFSET

    path = cache_dir() / "video_qa" / f"tabletop-train-{n}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return [{"frames": f, "names": list(nm), "moved": int(m)} for f, nm, m in zip(z["frames"], z["names"], z["moved"], strict=True)]
    log(f"rendering {n} tabletop train clips …")
    clips = render_clips([TRAIN_SEED_OFFSET + 500_000 + i for i in range(n)])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, frames=np.stack([c["frames"] for c in clips]), names=np.array([c["names"] for c in clips]),
                        moved=np.array([c["moved"] for c in clips]))
    log(f"cached {n} clips at {path}")
    return clips


def _clip_qas(clips: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(clip index, question, answer) for every clip and every question kind (both answers of "did …")."""
    out = []
    for i, c in enumerate(clips):
        names, moved = c["names"], c["moved"]
        out.append((i, "which object moved?", names[moved]))
        out.append((i, "what color is the object that moved?", names[moved].split()[0]))
        for j, name in enumerate(names):
            out.append((i, f"did the {name} move?", "yes" if j == moved else "no"))
    return out


def _easy_vqa_tensors(held_every: int = HELD_OUT_EVERY, size: int = IMAGE_SIZE) -> dict[str, Any]:
    """easy-VQA train images ``[4000, 3, size, size]`` and questions split into training / held-out by image id."""
    import numpy as np
    import torch
    from PIL import Image

    questions, answers, image_ids, paths = easy_vqa_all("train")
    images = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                                        for p in paths])).permute(0, 3, 1, 2).float() / 255
    train = [(i, q, a) for q, a, i in zip(questions, answers, image_ids, strict=True) if i % held_every]
    held = [(i, q, a) for q, a, i in zip(questions, answers, image_ids, strict=True) if not i % held_every]
    return {"images": images, "train": train, "held": held}


ANSWER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("yes", "no"),
    ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow"),
    ("circle", "rectangle", "triangle"),
    (*TABLETOP_OBJECTS, "red", "green", "blue", "yellow"),
)
"""Answers of one kind of question: an answer's group and a few random answers are its negatives."""


JUNK = ("", "the", "a", "it", "if", "you", "i", "is", "this", "that", "there", "what", "which", "object",
        "shape", "color", "answer", "one", "both", "none", "image", "mentioned")
"""Negatives for every question: words an LM proposes that answer nothing (the empty answer first)."""
FIRST_WORDS = tuple(dict.fromkeys(o.split()[0] for o in TABLETOP_OBJECTS))
"""First words of the two-word answers (the colours)."""


def partial(answer: str) -> str | None:
    """A two-word answer cut after the first letter of its second word ("red mug" → "red m"), else ``None``."""
    words = answer.split()
    return f"{words[0]} {words[1][0]}" if len(words) == 2 else None


def loss_terms(answer: str, rng: random.Random, junk: int = 4) -> list[tuple[list[str], list[str]]]:
    """The ``(candidates, positives)`` terms of one question, each with one positive, so that no shorter text can
    stand in for the answer (a term with several positives is satisfied by rating any one of them high).

    1. The answer among its kind, the first words, the partial answers (:func:`partial`), 3 random answers and
       ``junk`` junk words: the whole answer ("red mug") above its cut ("red m") and its first word ("red"), which
       is what the token rule's last round compares (one more token, or end the answer).
    2. For a two-word answer, its partial answer among the first word, the other objects' partial answers and
       the other answers of its kind: what the round after the colour compares ("red m" above "red" and "red b").
    3. For a two-word answer, its first word among the first words: what the first token's round compares."""
    group = next(g for g in ANSWER_GROUPS if answer in g)
    cands = list(dict.fromkeys((*group, answer.split()[0])))
    cut = partial(answer)
    if cut:
        cands += [partial(a) for a in group if partial(a)]
    cands += rng.sample([a for a in VOCABULARY if a not in cands], 3) + rng.sample(JUNK, junk)
    terms = [(list(dict.fromkeys(cands)), [answer])]
    if cut:
        first = answer.split()[0]
        others = [a for a in group if a != answer and partial(a)]
        terms.append((list(dict.fromkeys([cut, first, *(partial(a) for a in others), *others, *rng.sample(JUNK, junk)])), [cut]))
        terms.append(([*FIRST_WORDS, *rng.sample([a for a in VOCABULARY if " " not in a and a not in FIRST_WORDS], 2),
                       *rng.sample(JUNK, junk)], [first]))
    return terms


def candidate_answers(answer: str, rng: Any, extra: int = 3) -> list[str]:
    """The answers a training question is contrasted over: its answer's group (+ first word) and ``extra``
    random others from :data:`VOCABULARY` (so off-kind words score low too)."""
    group = next(g for g in ANSWER_GROUPS if answer in g)
    out = list(dict.fromkeys((*group, answer.split()[0])))
    out += rng.sample([a for a in VOCABULARY if a not in out], extra)
    return out


def _loss_and_correct(model: Any, tokenizer: Any, feats: Any, questions: list[str],
                      terms: list[list[tuple[list[str], list[str]]]]) -> tuple[Any, Any]:
    """Mean multi-positive cross-entropy over every question's ``(candidates, positives)`` terms, and per term
    whether the top candidate is its first positive.

    ``feats``: ``[B, K, D]`` frame features; a candidate's score is the mean over K of its cosine with the
    frames times CLIP's logit scale."""
    import torch
    import torch.nn.functional as F

    flat = [(b, c, p) for b, ts in enumerate(terms) for c, p in ts]
    texts = list(dict.fromkeys(DEFAULT_TEMPLATE.format(question=questions[b], answer=a).strip() for b, c, _ in flat for a in c))
    txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    index = {t: i for i, t in enumerate(texts)}
    width = max(len(c) for _, c, _ in flat)
    rows = torch.tensor([[index[DEFAULT_TEMPLATE.format(question=questions[b], answer=a).strip()] for a in c] + [0] * (width - len(c))
                         for b, c, _ in flat])
    valid = torch.tensor([[True] * len(c) + [False] * (width - len(c)) for _, c, _ in flat])
    sims = torch.einsum("tkd,tad->tka", feats[torch.tensor([b for b, _, _ in flat])], txt[rows]).mean(1)  # [T, A]
    logits = (model.logit_scale.exp() * sims).masked_fill(~valid, -1e9)
    pos = torch.tensor([[a in p for a in c] + [False] * (width - len(c)) for _, c, p in flat])
    loss = -(torch.logsumexp(logits.masked_fill(~pos, -1e9), -1) - torch.logsumexp(logits, -1)).mean()
    correct = logits.argmax(-1) == torch.tensor([c.index(p[0]) for _, c, p in flat])
    return loss, correct


def _clip_frames(clips: list[dict[str, Any]], idx: list[int]) -> Any:
    """``[B, 4, 3, H, W]``: each clip's two frames and two motion frames, in [0, 1]."""
    import numpy as np
    import torch

    frames = torch.from_numpy(np.stack([clips[i]["frames"] for i in idx])).permute(0, 1, 4, 2, 3).float() / 255
    return torch.stack([video_inputs(f, motion=True) for f in frames])


def train_clip(arch: str, cfg: VideoClipTrainConfig, easy: dict[str, Any], clips: list[dict[str, Any]],
               log=print) -> dict[str, Any]:
    """Train one CLIP on both train splits; save it as ``CHECKPOINTS[arch]``; report held-out accuracy."""
    import random

    import safetensors.torch
    import torch
    from tqdm import tqdm

    from ensemble.models import save_project_checkpoint

    seed = cfg.seed + SEED_OFFSETS[arch]
    model, tokenizer = build_clip(arch, seed)
    before = _load_for_finetune(arch, model) if cfg.finetune else None
    rng = random.Random(seed)
    n_train_clips = int(len(clips) * 0.9)
    clip_train = [qa for qa in _clip_qas(clips) if qa[0] < n_train_clips]
    clip_held = [qa for qa in _clip_qas(clips) if qa[0] >= n_train_clips]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=min(0.5, max(0.1, 3 / cfg.steps)))
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"train {CHECKPOINTS[arch]}")
    for step in bar:
        e = rng.sample(easy["train"], cfg.batch_size)
        c = rng.sample(clip_train, max(1, cfg.batch_size // 2))
        imgs = easy["images"][[i for i, _, _ in e]]
        imgs = torch.where(torch.rand(len(e), 1, 1, 1) < 0.5, imgs, imgs.flip(-1))
        fe = _embed_frames(model, imgs)[:, None]
        cf = _clip_frames(clips, [i for i, _, _ in c])
        fc = _embed_frames(model, cf.flatten(0, 1)).view(len(c), cf.shape[1], -1)
        loss_e, _ = _loss_and_correct(model, tokenizer, fe, [q for _, q, _ in e], [loss_terms(a, rng) for _, _, a in e])
        loss_c, _ = _loss_and_correct(model, tokenizer, fc, [q for _, q, _ in c], [loss_terms(a, rng) for _, _, a in c])
        loss = loss_e + loss_c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        bar.set_postfix(easy=f"{loss_e.item():.3f}", tabletop=f"{loss_c.item():.3f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            model.eval()
            log(f"{CHECKPOINTS[arch]} step {step + 1}/{cfg.steps} ({time.perf_counter() - t0:.0f} s): held-out "
                f"(train split) answer accuracy {evaluate_clip(model, tokenizer, easy, clips, clip_held)}")
            model.train()
    model.eval()
    heldout = evaluate_clip(model, tokenizer, easy, clips, clip_held)
    log(f"{CHECKPOINTS[arch]}: held-out (train split) answer accuracy {heldout}")

    def save(out: Path) -> None:
        safetensors.torch.save_file(model.state_dict(), str(out / "open_clip_model.safetensors"))
        model_cfg = {"embed_dim": EMBED_DIM, "vision_cfg": VISION_CFGS[arch], "text_cfg": TEXT_CFG}
        config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [MEAN_STD[0]] * 3, "std": [MEAN_STD[1]] * 3},
                  "trained": {"steps": cfg.steps, "seed": seed, "heldout_accuracy": heldout,
                              "data": "easy-VQA train (90 % of images) + tabletop train-seed clips (90 %)",
                              **({"finetuned_from": before} if before is not None else {})}}
        (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))

    path = save_project_checkpoint(CHECKPOINTS[arch], save, overwrite=cfg.overwrite)
    return {"name": CHECKPOINTS[arch], "path": str(path), "heldout": heldout, "steps": cfg.steps,
            "seconds": time.perf_counter() - t0}


def _load_for_finetune(arch: str, model: Any) -> dict[str, Any]:
    """Load ``CHECKPOINTS[arch]``'s weights into ``model``; the ``trained`` record of that checkpoint."""
    import safetensors.torch

    from ensemble.models import find_project_checkpoint

    path = find_project_checkpoint(CHECKPOINTS[arch])
    if path is None:
        raise FileNotFoundError(f"finetune: no checkpoint {CHECKPOINTS[arch]!r} to start from; train it first "
                                f"(ensemble train video-clips --video-clips {arch})")
    model.load_state_dict(safetensors.torch.load_file(str(path / "open_clip_model.safetensors")))
    return json.loads((path / "open_clip_config.json").read_text()).get("trained", {})


def evaluate_clip(model: Any, tokenizer: Any, easy: dict[str, Any], clips: list[dict[str, Any]],
                  clip_held: list[tuple[int, str, str]], n: int = 1000) -> dict[str, float]:
    """Accuracy on held-out train-split questions (easy-VQA, tabletop): the right answer scores highest among
    its group and three random other answers (as in training)."""
    import random

    import torch

    out, rng = {}, random.Random(0)
    with torch.no_grad():
        for name, qas in (("easyvqa", easy["held"][:n]), ("tabletop", clip_held[:n])):
            hits = []
            for s in range(0, len(qas), 100):
                chunk = qas[s:s + 100]
                if name == "easyvqa":
                    feats = _embed_frames(model, easy["images"][[i for i, _, _ in chunk]])[:, None]
                else:
                    cf = _clip_frames(clips, [i for i, _, _ in chunk])
                    feats = _embed_frames(model, cf.flatten(0, 1)).view(len(chunk), cf.shape[1], -1)
                _, correct = _loss_and_correct(model, tokenizer, feats, [q for _, q, _ in chunk],
                                               [[(candidate_answers(a, rng), [a])] for _, _, a in chunk])
                hits.append(correct)
            out[name] = round(float(torch.cat(hits).float().mean()), 4) if hits else None
    return out


def train_video_clips(cfg: VideoClipTrainConfig, archs: list[str] | None = None, log=print) -> dict[str, dict[str, Any]]:
    """Train the CLIPs named in ``archs`` (default all of :data:`CHECKPOINTS`) on the train splits; arch → report.

    ``ensemble train video-clips`` trains those of the default ensemble (``vit``, ``vit4``) unless told."""
    archs = list(archs or CHECKPOINTS)
    unknown = [a for a in archs if a not in CHECKPOINTS]
    if unknown:
        raise ValueError(f"unknown video CLIPs {unknown}; choose from {', '.join(CHECKPOINTS)}")
    easy = _easy_vqa_tensors()
    clips = tabletop_training_clips(cfg.tabletop_clips, log=log)
    return {arch: train_clip(arch, cfg, easy, clips, log=log) for arch in archs}

"""Command-line layer of the video QA task: flags of ``eval`` / ``serve`` (they map onto ``VideoQASpec``),
``ensemble run video_qa --video FILE --question "…"``, and ``ensemble train video-clips``.

Every task folder's ``cli.py`` offers the same four names to the generic commands:
``add_arguments(parser)``, ``solver_spec(args)``, ``add_run_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
from typing import Any

TOKEN_FLAGS = {"top_k": int, "steps_per_token": int, "step_size": float, "temperature": float,
               "fluency_weight": float, "rerank_weight": float, "max_new_tokens": int, "min_p": float,
               "select_weight": float, "end_margin": float}
"""TokenConfig fields exposed as ``--top-k`` … flags (unset: the spec's defaults)."""


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """``--lm``, ``--clips``, guidance mode and token-rule knobs, ``--frames``, ``--device``, ``--threads``."""
    from ensemble.tasks.video_qa.solver import DEFAULT_CLIPS, DEFAULT_TOKEN, SOURCE_TOKEN, VideoQASpec

    spec = VideoQASpec()

    p.add_argument("--lm", default="smollm2-135m-instruct", help="causal LM (registry, checkpoint, hub id or folder)")
    p.add_argument("--clips", default=",".join(f"{n}={kw['model']}" for n, kw in DEFAULT_CLIPS.items()),
                   metavar="NAME=MODEL,…", help="the CLIP scorers: system name = open_clip model name or checkpoint "
                   "(e.g. b32=ViT-B-32/openai,l14=ViT-L-14/openai)")
    p.add_argument("--aggregate", default="mean", choices=["mean", "max"], help="per-frame similarities → one score")
    p.add_argument("--motion", action=argparse.BooleanOptionalAction, default=True,
                   help="also score motion frames (what changed between sampled frames)")
    p.add_argument("--answer-end", action=argparse.BooleanOptionalAction,
                   default=all(kw.get("answer_end", False) for kw in DEFAULT_CLIPS.values()),
                   help="the CLIPs rate a candidate as the answer it leaves (cut at the punctuation or line break "
                        "that ends it), so ending the answer competes with continuing it")
    p.add_argument("--mode", default=spec.mode, choices=["zerocap", "magic"],
                   help="zerocap: context gradient steps (the paper); magic: rerank the LM's top-k, no gradient")
    p.add_argument("--answer-prefix", default=spec.answer_prefix,
                   help="start of the LM's turn, so its first token is the answer word ('' for none)")
    p.add_argument("--frames", type=int, default=spec.frames, help="K frames sampled uniformly per video")
    p.add_argument("--normalisation", default=spec.normalisation, choices=["zscore", "none", "rank"],
                   help="per-CLIP normalisation of the ratings before they are summed")
    p.add_argument("--weights", default="", metavar="NAME=W,…", help="per-CLIP ensemble weights (missing: 1)")
    p.add_argument("--combine", default=spec.combine, choices=["mean", "sum", "zscore"],
                   help="the ensemble's rating: weighted mean of the CLIPs' ratings (one CLIP's scale) or their sum")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    for name, typ in TOKEN_FLAGS.items():
        default = f" (default {DEFAULT_TOKEN[name]})" if name in DEFAULT_TOKEN else ""
        per_source = {src: tok[name] for src, tok in SOURCE_TOKEN.items() if name in tok}
        default += "".join(f"; --source {src}: {v}" for src, v in per_source.items())
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=f"TokenConfig.{name}{default}")
    p.add_argument("--lm-ends", action=argparse.BooleanOptionalAction, default=None,
                   help="TokenConfig.lm_ends: after the first token, where the LM's top token ends the answer the "
                        f"CLIPs do not rerank (default {DEFAULT_TOKEN.get('lm_ends', False)})")
    p.add_argument("--select-final", action=argparse.BooleanOptionalAction, default=None,
                   help="TokenConfig.select_final: with several beams the CLIPs pick among the finished answers"
                        f" (default {DEFAULT_TOKEN.get('select_final', False)})")


def _pairs(text: str, flag: str, cast: Any = str) -> dict[str, Any]:
    """``"a=x,b=y"`` → ``{"a": x, "b": y}`` with a clear error for anything else."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{flag} {text!r}: each entry must look like NAME=VALUE")
        try:
            out[name.strip()] = cast(value.strip())
        except ValueError:
            raise ValueError(f"{flag} {text!r}: {value!r} is not a valid value") from None
    return out


def spec_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~ensemble.tasks.video_qa.solver.VideoQASpec` from parsed flags (token-rule flags left unset take the
    ``--source``'s defaults, :data:`~ensemble.tasks.video_qa.solver.SOURCE_TOKEN`, then the spec's)."""
    from ensemble.tasks.video_qa.solver import SOURCE_TOKEN, VideoQASpec

    clips = {n: {"model": m, "aggregate": args.aggregate, "motion": args.motion, "answer_end": args.answer_end}
             for n, m in _pairs(args.clips, "--clips").items()}
    token = {**SOURCE_TOKEN.get(getattr(args, "source", ""), {}),
             **{k: getattr(args, k) for k in (*TOKEN_FLAGS, "select_final", "lm_ends") if getattr(args, k, None) is not None}}
    return VideoQASpec(lm=args.lm, clips=clips, token=token, mode=args.mode, answer_prefix=args.answer_prefix,
                       frames=args.frames,
                       normalisation=args.normalisation, weights=_pairs(args.weights, "--weights", float), combine=args.combine,
                       beams=tuple(getattr(args, "beams", (1, 5))), device=args.device, threads=args.threads)


# -- the task-CLI contract -----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval video_qa`` / ``serve video_qa`` beyond the generic ones."""
    p.add_argument("--source", default="easyvqa", choices=["easyvqa", "tabletop", "activitynet"],
                   help="easyvqa (one-frame videos), tabletop (rendered clips) or activitynet (--questions, --videos)")
    p.add_argument("--questions", default=None, help="ActivityNet-QA-format question JSON (--source activitynet)")
    p.add_argument("--videos", default=None, help="folder of its videos (--source activitynet)")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5],
                   help="beam sizes of the default systems (a system is <base>@<beam>, e.g. ensemble@5)")
    add_model_flags(p)


def solver_spec(args: argparse.Namespace) -> Any:
    """The :class:`~ensemble.contracts.SolverSpec` of parsed flags."""
    import dataclasses

    from ensemble.contracts import SolverSpec

    settings = dataclasses.asdict(spec_from_args(args))
    task = {"source": args.source, "questions": args.questions, "videos": args.videos}
    return SolverSpec("video_qa", task, settings)


RUN_HELP = "answer a question about a video with the LM guided by the CLIP ensemble"
"""Help line of ``ensemble run video_qa``."""


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble run video_qa``."""
    p.add_argument("--video", required=True, help="video file (mp4, webm, GIF …), an image, or a folder of frames")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--system", default="ensemble", help="lm, a CLIP name, or ensemble (default)")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-rounds", action="store_true", help="show every round, not only those where a CLIP moved the token")
    add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    """Answer one question; show the rounds where a CLIP moved the token, then the answer."""
    from ensemble.contracts import Item
    from ensemble.eval.beams import LM_ALONE, split_system
    from ensemble.eval.guided_lm import ROUND_HEADER, round_rows
    from ensemble.eval.table import markdown_table
    from ensemble.tasks.video_qa.solver import VideoQASolver
    from ensemble.tasks.video_qa.task import VideoQATask

    spec = spec_from_args(args)
    system = f"{args.system}@{args.beam}"
    split_system(system, spec.bases())
    solver = VideoQASolver(spec, VideoQATask())
    records: list[Any] = []
    row = solver.solve(Item("cli", {"question": args.question, "video": args.video}), system, args.seed,
                       callback=lambda rec, state: records.append(rec))
    extras = row["extras"]
    if args.system != LM_ALONE:
        shown = round_rows(records, args.all_rounds)
        what = "all" if args.all_rounds else "those where a CLIP moved the token"
        print(f"## rounds ({len(records)} in total, {extras.get('frames')} frames, {spec.mode} mode; {what})\n")
        print(markdown_table(ROUND_HEADER, shown) if shown else "(no token was moved by a CLIP)")
        print(f"\nmoved tokens per CLIP: { {n: s['moved'] for n, s in row['scorers'].items()} }")
    print(f"\noutput ({args.system}, beam {args.beam}, {row['timings']['seconds']:.1f}s): {extras['output']!r}")
    print(f"answer: {row['answer']}")
    return 0


# -- train ------------------------------------------------------------------------------------------------------
VIDEO_CLIPS = ("vit", "vit4", "lit")
"""The CLIPs ``ensemble train video-clips`` trains by default, those of the default ensemble (keys of
``models.CHECKPOINTS``, which also offers ``resnet``, and ``lit``; kept here so building the parser does not import
torch)."""
TRAINABLE_CLIPS = ("vit", "resnet", "vit4", "lit")
"""Every key of ``models.CHECKPOINTS``, and ``lit``: the LiT video CLIP (``lit_train.LIT_CHECKPOINT``: frozen
pre-trained EfficientNet-Lite0 and MiniLM towers, trained heads)."""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble train video-clips``."""
    p.add_argument("--seed", type=int, default=0, help="training seed (the second CLIP uses seed + 1, the third seed + 2)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    g = p.add_argument_group("video QA CLIPs (ensemble train video-clips)")
    g.add_argument("--video-clips", default=",".join(VIDEO_CLIPS), help=f"comma-separated, of: {', '.join(TRAINABLE_CLIPS)}")
    g.add_argument("--video-clip-steps", type=int, default=2000,
                   help="optimiser steps per CLIP (2000: the held-out accuracy's plateau, README)")
    g.add_argument("--video-clip-batch", type=int, default=32, help="easy-VQA questions (+ half as many tabletop questions) per step")
    g.add_argument("--tabletop-clips", type=int, default=1000, help="tabletop training clips rendered (train seeds)")
    g.add_argument("--video-clip-eval-every", type=int, default=0,
                   help="log the held-out accuracy every this many steps (0: only at the end)")
    g.add_argument("--video-clip-lr", type=float, default=2e-3, help="peak learning rate (one-cycle) of the ViT/ResNet CLIPs")
    g.add_argument("--video-clip-finetune", action="store_true",
                   help="start the ViT/ResNet CLIPs from their existing checkpoints and train --video-clip-steps more "
                        "steps with the current objective (instead of from a random initialisation)")
    g.add_argument("--lit-steps", type=int, default=500, help="optimiser steps of the LiT CLIP's heads (--video-clips lit)")
    g.add_argument("--lit-batch", type=int, default=256, help="easy-VQA questions (+ half as many tabletop) per LiT step")


def train(args: argparse.Namespace) -> int:
    """Train the video QA CLIPs and save them as project checkpoints."""
    import torch

    from ensemble.tasks.video_qa.models import VideoClipTrainConfig, train_video_clips

    torch.set_num_threads(getattr(args, "threads", 2))
    names = [m.strip() for m in args.video_clips.split(",") if m.strip()]
    cfg = VideoClipTrainConfig(steps=args.video_clip_steps, batch_size=args.video_clip_batch,
                               tabletop_clips=args.tabletop_clips, seed=getattr(args, "seed", None) or 0,
                               eval_every=args.video_clip_eval_every, finetune=args.video_clip_finetune,
                               lr=args.video_clip_lr)
    reports = train_video_clips(cfg, [m for m in names if m != "lit"]) if [m for m in names if m != "lit"] else {}
    if "lit" in names:
        from ensemble.tasks.video_qa.lit_train import LitTrainConfig, train_lit_clip

        reports["lit"] = train_lit_clip(LitTrainConfig(steps=args.lit_steps, batch_size=args.lit_batch,
                                                       tabletop_clips=args.tabletop_clips, eval_every=args.video_clip_eval_every))
    for arch, r in reports.items():
        print(f"{arch}: {r['name']} at {r['path']} — train-split held-out answer accuracy {r['heldout']} "
              f"({r['steps']} steps, {r['seconds']:.0f} s)")
    return 0


TRAIN_TARGETS = {
    "video-clips": ("the video QA task's small CLIPs (two ViT image towers, the LiT CLIP over frozen pre-trained towers; "
                    "a ResNet one on request) on easy-VQA + tabletop clips",
                    add_train_arguments, train),
}
"""``ensemble train`` targets of this task: name → (help, add_arguments, run)."""

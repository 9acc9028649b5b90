"""Video QA data: easy-VQA images as one-frame videos, tabletop clips rendered by the simulator, the
ActivityNet-QA format, and the answer normaliser of exact-match accuracy.

* **easy-VQA** (``easy-vqa``, MIT): 64×64 shapes with questions about colour, shape and presence;
  answers from 13 words. The package's train split serves ``split="train"`` (training and every
  choice of settings), its test split ``split="test"`` (reported numbers only).
* **Tabletop clips**: the project's MuJoCo tabletop (a gymnasium environment made by id, never
  imported) starts a scene from a seed, films it from the top camera, moves one object with one
  pick-and-place action, and films it again. Questions need both frames ("which object moved?",
  "what color is the object that moved?", "did the red mug move?"); answers come from the
  simulator's state (the object whose centre moved). Train and test clips come from disjoint seeds.
* **ActivityNet-QA format**: question files ``[{"question", "answer", "video_name", "question_id"}]``
  and a folder of videos named by ``video_name`` (``v_<id>.mp4`` or ``<id>.mp4`` …).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble.tasks.video_qa.video import VIDEO_SUFFIXES

# -- answers --------------------------------------------------------------------------------------------------

ARTICLES = frozenset({"a", "an", "the"})
SYNONYMS: dict[str, str] = {
    "yeah": "yes", "yep": "yes", "yup": "yes", "true": "yes", "correct": "yes", "sure": "yes",
    "nope": "no", "nah": "no", "false": "no", "incorrect": "no", "wrong": "no",
    "grey": "gray", "colour": "color", "square": "rectangle", "cup": "mug",
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
}
"""Word → canonical word (ActivityNet-QA's answers are short phrases; yes/no dominate)."""
ANSWER_END_RE = re.compile(r"[\n.,;!?]")
"""What ends an answer (after its first word): a line break or punctuation — the task's stop rule, and where a
CLIP stops reading a candidate when it rates the answer as it is (``VideoClipScorer(answer_end=True)``)."""
_PREFIX_RE = re.compile(r"^(?:the )?answer(?: is)?[: ]+")
_PUNCT_RE = re.compile(r"[^\w\s]")


def normalise_answer(text: Any) -> str:
    """Canonical answer: the first line, lower case, no punctuation or leading "answer:", no articles,
    synonyms mapped (yes/no variants, grey → gray, square → rectangle …), single spaces."""
    line = str(text).strip().split("\n", 1)[0].strip().lower()
    line = _PREFIX_RE.sub("", line)
    words = _PUNCT_RE.sub(" ", line).split()
    return " ".join(SYNONYMS.get(w, w) for w in words if w not in ARTICLES)


def exact_match(answer: Any, target: Any) -> float:
    """1.0 when the normalised answer equals the normalised target, else 0.0."""
    return float(normalise_answer(answer) == normalise_answer(target) and normalise_answer(target) != "")


# -- easy-VQA -------------------------------------------------------------------------------------------------

SPLITS = ("train", "test")
EASY_VQA_ANSWERS = ("yes", "no", "red", "green", "blue", "black", "gray", "teal", "brown", "yellow", "circle",
                    "rectangle", "triangle")


@dataclass(frozen=True)
class QA:
    """One question about one video: ``video`` is a path, bytes, or a ``[T, H, W, 3]`` uint8 array."""

    id: str
    question: str
    answer: str
    video: Any
    meta: dict[str, Any]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {', '.join(SPLITS)} (train: training and tuning; test: reporting)")


@functools.lru_cache(maxsize=2)
def _easy_vqa(split: str) -> tuple[list[str], list[str], list[int], list[str]]:
    import easy_vqa

    questions, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    paths = getattr(easy_vqa, f"get_{split}_image_paths")()
    paths = [paths[i] for i in range(len(paths))]  # a dict image id → path in easy-vqa 1.0
    return list(questions), list(answers), [int(i) for i in image_ids], paths


HELD_OUT_EVERY = 10
"""easy-VQA train images whose id is a multiple of this are held out of the CLIPs' training; the train-split
questions used to choose settings are asked about them (images the CLIPs never saw, as at test time)."""


def easy_vqa_questions(n: int, seed: int, split: str = "test") -> list[QA]:
    """``n`` easy-VQA questions of ``split`` drawn without replacement in an order fixed by ``seed``; on the
    train split only questions about the images held out of the CLIPs' training (:data:`HELD_OUT_EVERY`)."""
    _check_split(split)
    questions, answers, image_ids, paths = _easy_vqa(split)
    pool = np.arange(len(questions))
    if split == "train":
        pool = pool[np.array(image_ids) % HELD_OUT_EVERY == 0]
    if not 1 <= n <= len(pool):
        raise ValueError(f"n={n} must be in [1, {len(pool)}] for easy-VQA {split}")
    order = pool[np.random.default_rng(seed).permutation(len(pool))[:n]]
    return [QA(f"easyvqa-{split}-{int(j)}", questions[j], answers[j], paths[image_ids[j]],
               {"source": "easyvqa", "image_id": image_ids[j]}) for j in order]


def easy_vqa_all(split: str) -> tuple[list[str], list[str], list[int], list[str]]:
    """Every question of ``split``: ``(questions, answers, image_ids, image_paths)`` (training)."""
    _check_split(split)
    return _easy_vqa(split)


# -- tabletop clips -------------------------------------------------------------------------------------------

TABLETOP_ENV = "envs:Tabletop-Relations-v0"
"""Gymnasium id of the tabletop (the ``module:`` prefix imports the registering package)."""
TRAIN_SEED_OFFSET = 1_000_000
"""Train clips use scene seeds ``TRAIN_SEED_OFFSET + …``; test clips seeds below it."""
QUESTION_KINDS = ("which", "color", "did")


@dataclass(frozen=True)
class ClipConfig:
    """How tabletop clips are made."""

    objects: int = 3
    """Objects per scene."""
    size: int = 64
    """Side of the rendered top-camera frames."""
    camera: str = "top"
    """Camera filming the clip."""
    min_move: float = 0.06
    """Metres the moved object's centre must travel (else another target is drawn)."""


@functools.lru_cache(maxsize=1)
def _tabletop(cfg: ClipConfig) -> Any:
    import gymnasium as gym

    return gym.make(TABLETOP_ENV, disable_env_checker=True, width=cfg.size, height=cfg.size,
                    num_objects=cfg.objects, cameras=(cfg.camera,)).unwrapped


def render_clip(scene_seed: int, cfg: ClipConfig = ClipConfig()) -> dict[str, Any]:
    """Film one scene before and after one object is moved.

    Returns:
        ``{"frames": [2, S, S, 3] uint8, "names": object names, "moved": index of the object whose
        centre moved most (from the simulator state), "shift": its displacement in metres}``.
    """
    env = _tabletop(cfg)
    rng = np.random.default_rng(scene_seed)
    env.reset(seed=int(scene_seed))
    start = env.get_state()
    before = env.render_views()[cfg.camera].copy()
    c0 = np.array(env.object_geometry().centres)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(20):
        env.set_state(start)
        obj = int(rng.integers(env.num_objects))
        x, y = rng.uniform(low[1:] * 0.8, high[1:] * 0.8)
        env.step(env.make_action(obj, float(x), float(y)))
        shift = np.linalg.norm(np.array(env.object_geometry().centres) - c0, axis=1)
        moved = int(np.argmax(shift))
        others = np.delete(shift, moved)
        if shift[moved] >= cfg.min_move and (others.size == 0 or others.max() < cfg.min_move / 2):
            after = env.render_views()[cfg.camera].copy()
            return {"frames": np.stack([before, after]), "names": list(env.object_names), "moved": moved,
                    "shift": float(shift[moved])}
    raise RuntimeError(f"scene seed {scene_seed}: no clean single-object move found in 20 tries")


def render_clips(seeds: list[int], cfg: ClipConfig = ClipConfig()) -> list[dict[str, Any]]:
    """:func:`render_clip` of every seed, in a fresh (spawned) process: MuJoCo's EGL context and the GPU
    libraries that transformers/triton load later crash (segfault) when they share one process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_render_many, list(seeds), cfg).result()


def _render_many(seeds: list[int], cfg: ClipConfig) -> list[dict[str, Any]]:
    return [render_clip(s, cfg) for s in seeds]


def clip_question(clip: dict[str, Any], kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """A question of ``kind`` about ``clip`` and its answer (from the simulator state)."""
    names, moved = clip["names"], clip["moved"]
    if kind == "which":
        return "which object moved?", names[moved]
    if kind == "color":
        return "what color is the object that moved?", names[moved].split()[0]
    if kind == "did":
        asked = moved if rng.random() < 0.5 else int(rng.choice([i for i in range(len(names)) if i != moved]))
        return f"did the {names[asked]} move?", "yes" if asked == moved else "no"
    raise ValueError(f"kind={kind!r} must be one of {', '.join(QUESTION_KINDS)}")


def tabletop_questions(n: int, seed: int, split: str = "test", cfg: ClipConfig = ClipConfig()) -> list[QA]:
    """``n`` questions about ``n`` clips (one each; the kinds take turns), scenes seeded from ``seed``."""
    _check_split(split)
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    scenes = [(TRAIN_SEED_OFFSET if split == "train" else 0) + seed * 10_007 + i for i in range(n)]
    if split == "test" and scenes[-1] >= TRAIN_SEED_OFFSET:
        raise ValueError(f"seed={seed}, n={n}: test scene seeds must stay below {TRAIN_SEED_OFFSET}")
    out = []
    for i, (scene, clip) in enumerate(zip(scenes, render_clips(scenes, cfg), strict=True)):
        question, answer = clip_question(clip, QUESTION_KINDS[i % len(QUESTION_KINDS)], np.random.default_rng(scene))
        out.append(QA(f"tabletop-{split}-{scene}", question, answer, clip["frames"],
                      {"source": "tabletop", "scene_seed": scene, "kind": QUESTION_KINDS[i % len(QUESTION_KINDS)]}))
    return out


# -- ActivityNet-QA format ------------------------------------------------------------------------------------


def activitynet_questions(questions: str | Path, videos: str | Path, n: int | None = None) -> list[QA]:
    """Questions in ActivityNet-QA's format joined with their video files.

    Args:
        questions: a JSON list of ``{"question", "answer", "video_name", "question_id"}`` — or a
            ``*_q.json`` file with a sibling ``*_a.json`` (the released split: questions and answers apart,
            joined by ``question_id``).
        videos: folder of the videos; ``video_name`` ``"abc"`` matches ``v_abc.<ext>`` or ``abc.<ext>``
            for any video suffix (or a folder of frames of that name).
        n: the first ``n`` questions (``None``: all).

    Raises:
        FileNotFoundError: a question's video is not in ``videos`` (the message names it).
    """
    path, folder = Path(questions), Path(videos)
    rows = json.loads(path.read_text())
    answers_file = path.with_name(path.name.replace("_q.json", "_a.json"))
    if path.name.endswith("_q.json") and answers_file.is_file():
        answers = {r["question_id"]: r["answer"] for r in json.loads(answers_file.read_text())}
        rows = [{**r, "answer": answers.get(r["question_id"], r.get("answer"))} for r in rows]
    rows = rows[:n] if n is not None else rows
    out = []
    for i, r in enumerate(rows):
        video = find_video(folder, str(r["video_name"]))
        qid = str(r.get("question_id", f"{r['video_name']}_{i}"))
        question = str(r["question"]).strip()
        question = question if question.endswith("?") else question + "?"
        out.append(QA(f"anetqa-{qid}", question, str(r["answer"]), str(video),
                      {"source": "activitynet-qa", "video_name": r["video_name"], "type": r.get("type")}))
    return out


def find_video(folder: Path, name: str) -> Path:
    """The file (or frame folder) of video ``name`` in ``folder``: ``v_<name>.*`` or ``<name>.*``."""
    for stem in (f"v_{name}", name):
        for suffix in (*VIDEO_SUFFIXES, ".gif"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        if (folder / stem).is_dir():
            return folder / stem
    raise FileNotFoundError(f"video {name!r} not found in {folder} (looked for v_{name}.* and {name}.* with "
                            f"suffixes {', '.join(VIDEO_SUFFIXES)}, .gif, or a folder of frames)")

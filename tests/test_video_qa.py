"""Video question answering (unit tier): the frame reader on real encoded files, the video CLIP scorer,
the answer normaliser, the tabletop clips and the task's CLI on tiny models."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch


def _clip(n: int = 12, size: int = 32) -> list[np.ndarray]:
    """``n`` frames whose red channel encodes the frame index (a bright bar moving right)."""
    frames = []
    for i in range(n):
        f = np.zeros((size, size, 3), dtype=np.uint8)
        f[..., 0] = int(255 * i / max(n - 1, 1))
        f[8:24, 2 * i: 2 * i + 6, 1] = 255
        frames.append(f)
    return frames


def test_mp4_written_and_read_back_samples_frames_uniformly(tmp_path):
    from ensemble.tasks.video_qa.video import encode_video, read_video

    path = tmp_path / "clip.mp4"
    encode_video(_clip(12), path, fps=6)
    x = read_video(path, k=4)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # Middles of 4 segments of 12 frames: frames 1, 4, 7, 10 → red level rises in that order.
    red = x[:, 0].mean((1, 2))
    assert torch.all(red[1:] > red[:-1])
    assert torch.allclose(red, torch.tensor([1, 4, 7, 10]) / 11, atol=0.05)
    same = read_video(path.read_bytes(), k=4)  # an upload: the same frames
    assert torch.allclose(same, x)
    assert read_video(path, k=50).shape[0] == 12  # shorter than K: every frame once


def test_gif_image_and_folder_are_videos(tmp_path):
    from PIL import Image

    from ensemble.media import gif_bytes
    from ensemble.tasks.video_qa.video import read_video

    frames = _clip(5)
    (tmp_path / "a.gif").write_bytes(gif_bytes(frames))
    x = read_video(tmp_path / "a.gif", k=2)
    assert x.shape == (2, 3, 32, 32)
    assert x[:, 0].mean((1, 2)).tolist() == pytest.approx([0.25, 0.75], abs=0.02)  # frames 1 and 3 of 5
    Image.fromarray(frames[4]).save(tmp_path / "one.png")
    one = read_video(tmp_path / "one.png", k=8)
    assert one.shape == (1, 3, 32, 32)  # a single image is a one-frame video
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    assert torch.allclose(read_video(folder, k=5), read_video(np.stack(frames), k=5))


def test_unreadable_empty_and_oversized_videos_fail_clearly(tmp_path):
    from ensemble.tasks.video_qa.video import VideoError, VideoLimits, encode_video, read_video

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(VideoError, match="not a readable video"):
        read_video(bad)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "none").mkdir()
    with pytest.raises(VideoError, match="no frames"):
        read_video(tmp_path / "none")
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "missing.mp4")
    good = tmp_path / "good.mp4"
    encode_video(_clip(12), good)
    with pytest.raises(VideoError, match="frames exceed the cap of 10 frames"):
        read_video(good, limits=VideoLimits(max_frames=10))
    with pytest.raises(VideoError, match="32x32 exceeds the cap of 16 px"):
        read_video(good, limits=VideoLimits(max_side=16))
    with pytest.raises(VideoError, match="bytes exceed the cap"):
        read_video(good.read_bytes(), limits=VideoLimits(max_bytes=100))


# -- the video CLIP scorer ------------------------------------------------------------------------------------


def _solid(rgb: tuple[float, float, float], k: int = 1, size: int = 32) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(k, 3, size, size).clone()


def test_frame_aggregation_mean_and_max_follow_the_per_frame_similarities():
    from ensemble import SCORERS

    mean = SCORERS.make("video_clip", model="tiny-clip", aggregate="mean", scale=10.0)
    best = SCORERS.make("video_clip", model="tiny-clip", aggregate="max", scale=10.0)
    frames = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    context, cands = {"question": "what color is the shape?", "frames": frames}, ["red", "blue", "green circle"]
    sims = mean.similarity(context, cands)
    assert sims.shape == (3, 4)
    s_mean, s_max = mean.score(context, cands).scores, best.score(context, cands).scores
    assert s_mean.shape == s_max.shape == (3,)
    assert torch.allclose(s_mean, 10 * sims.mean(-1), atol=1e-5) and torch.allclose(s_max, 10 * sims.amax(-1), atol=1e-5)
    assert (s_max > s_mean).all()  # the frames differ, so the best frame beats the average
    one = {"question": context["question"], "frames": frames[:1]}  # one frame: both agree
    assert torch.allclose(mean.score(one, cands).scores, best.score(one, cands).scores, atol=1e-5)
    with pytest.raises(ValueError, match="aggregate"):
        SCORERS.make("video_clip", model="tiny-clip", aggregate="median")
    with pytest.raises(TypeError, match="not differentiable"):
        mean.score(context, cands, need_grad=True)


def test_with_answer_end_a_candidate_that_ends_the_answer_is_rated_as_the_answer_as_it_is():
    """"yes," / "yes." / "yes\\n" / "yes" + end-of-text (decoded: "yes") all leave the answer "yes": with
    ``answer_end`` the CLIP rates them as "yes", so ending competes with continuing ("yes yes") on the CLIP's
    own texts; without it the punctuation is part of the rated text."""
    from ensemble import SCORERS
    from ensemble.tasks.video_qa.cli import add_model_flags, spec_from_args

    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    context = {"question": "is there a circle?", "frames": frames}
    ends, going = [" yes,", " yes.", " yes\n", " yes"], [" yes yes", " yes color"]
    cut = SCORERS.make("video_clip", model="tiny-clip", answer_end=True)
    assert cut.texts(context, ends + going) == ["is there a circle? yes"] * 4 + ["is there a circle? yes yes",
                                                                                  "is there a circle? yes color"]
    s = cut.score(context, ends + going).scores
    assert torch.allclose(s[:4], s[3].expand(4)) and not torch.isclose(s[4], s[3])
    plain = SCORERS.make("video_clip", model="tiny-clip")
    assert plain.texts(context, ends)[0] == "is there a circle? yes," and not torch.isclose(
        plain.score(context, ends).scores[0], s[3])
    p = argparse.ArgumentParser()
    add_model_flags(p)
    for flag, on in (("--answer-end", True), ("--no-answer-end", False)):
        spec = spec_from_args(p.parse_args(["--clips", "a=tiny-clip", flag]))
        assert spec.clips["a"]["answer_end"] is on


def test_motion_frames_show_only_what_moved():
    from ensemble.tasks.video_qa.video_clip import motion_frames

    before = _solid((0.5, 0.5, 0.5))
    after = before.clone()
    after[:, :, 4:8, 20:24] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # a red thing appears
    m = motion_frames(torch.cat([before, after]))
    assert m.shape == (2, 3, 32, 32)
    assert torch.allclose(m[1, :, 5, 21], torch.tensor([1.0, 0.0, 0.0])) and torch.allclose(m[1, :, 20, 5], torch.full((3,), 0.5))
    assert motion_frames(before).shape[0] == 0


def test_a_trained_tiny_clip_scores_the_answer_matching_the_frames_higher():
    """Train tiny-clip for a few steps on red/blue frames ↔ "… red"/"… blue" texts, then score both answers."""
    import torch.nn.functional as F

    from ensemble.models import load_clip
    from ensemble.tasks.video_qa.video_clip import VideoClipScorer

    torch.manual_seed(0)
    model, tokenizer, _ = load_clip("tiny-clip")
    scorer = VideoClipScorer(model, tokenizer, scale=10.0)
    q = "what color is the shape?"
    texts = [f"{q} red", f"{q} blue"]
    images = torch.cat([_solid((0.9, 0.1, 0.1), 4), _solid((0.1, 0.1, 0.9), 4)]) + 0.05 * torch.randn(8, 3, 32, 32)
    labels = torch.tensor([0] * 4 + [1] * 4)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        img = F.normalize(scorer.clip.image_features(images.clamp(0, 1)), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        loss = F.cross_entropy(10 * img @ txt.T, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    red_video = {"question": q, "frames": _solid((0.9, 0.1, 0.1), 3)}
    blue_video = {"question": q, "frames": _solid((0.1, 0.1, 0.9), 3)}
    r, b = scorer.score(red_video, ["red", "blue"]).scores, scorer.score(blue_video, ["red", "blue"]).scores
    assert r[0] > r[1] and b[1] > b[0]


# -- answers, data, the task ---------------------------------------------------------------------------------


def test_answer_normaliser_maps_case_articles_punctuation_and_synonyms():
    from ensemble.tasks.video_qa.data import exact_match, normalise_answer

    assert normalise_answer("  The Red Mug.\nand more") == "red mug"
    assert normalise_answer("Answer: Yeah!") == "yes" and normalise_answer("nope") == "no"
    assert normalise_answer("a grey square") == "gray rectangle"
    assert exact_match("Blue.", "blue") == 1.0 and exact_match("blue circle", "blue") == 0.0
    assert exact_match("", "") == 0.0  # an empty answer never matches


def test_tabletop_clips_need_both_frames_and_answers_come_from_the_simulator():
    from ensemble.tasks.video_qa.data import tabletop_questions

    qs = tabletop_questions(6, seed=0, split="test")
    train = tabletop_questions(3, seed=0, split="train")
    assert not {q.id for q in qs} & {q.id for q in train}  # disjoint scene seeds
    assert [q.id for q in tabletop_questions(6, seed=0)] == [q.id for q in qs]  # deterministic
    for q in qs:
        assert q.video.shape == (2, 64, 64, 3) and q.video.dtype == np.uint8
        assert np.abs(q.video[1].astype(int) - q.video[0].astype(int)).max() > 50  # something visibly moved
    which = [q for q in qs if q.question == "which object moved?"]
    assert which and all(len(q.answer.split()) == 2 for q in which)
    assert {q.answer for q in qs if q.question.startswith("did the")} <= {"yes", "no"}


def test_activitynet_format_loader_joins_questions_answers_and_video_files(tmp_path):
    import json

    from ensemble.tasks.video_qa.data import activitynet_questions
    from ensemble.tasks.video_qa.video import encode_video, read_video

    videos = tmp_path / "videos"
    videos.mkdir()
    encode_video(_clip(6), videos / "v_abc123.mp4")
    encode_video(_clip(4), videos / "xyz.mp4")
    qs = [{"question": "is the bar moving", "video_name": "abc123", "question_id": "abc123_0"},
          {"question": "what color is the bar?", "video_name": "xyz", "question_id": "xyz_1"}]
    (tmp_path / "test_q.json").write_text(json.dumps(qs))
    (tmp_path / "test_a.json").write_text(json.dumps([{"question_id": "abc123_0", "answer": "yes", "type": 3},
                                                      {"question_id": "xyz_1", "answer": "green", "type": 6}]))
    items = activitynet_questions(tmp_path / "test_q.json", videos)
    assert [(q.question, q.answer) for q in items] == [("is the bar moving?", "yes"), ("what color is the bar?", "green")]
    assert read_video(items[0].video, k=3).shape == (3, 3, 32, 32)
    (tmp_path / "bad_q.json").write_text(json.dumps([{**qs[0], "video_name": "missing", "answer": "no"}]))
    with pytest.raises(FileNotFoundError, match="'missing' not found"):
        activitynet_questions(tmp_path / "bad_q.json", videos)


def test_serve_request_caps_and_validates_the_upload(tmp_path):
    import base64

    from pydantic import ValidationError

    from ensemble.tasks.video_qa.serve import VideoQARequest, request_video
    from ensemble.tasks.video_qa.task import VideoQATask
    from ensemble.tasks.video_qa.video import VideoError, encode_video

    task = VideoQATask()
    good = base64.b64encode(encode_video(_clip(6))).decode()
    item, system, seed = task.request_item(VideoQARequest(question="what moved?", video_base64=good))
    assert system == "ensemble@1" and isinstance(item.context["video"], bytes)
    with pytest.raises(VideoError, match="not a readable video"):
        request_video(VideoQARequest(question="q", video_base64=base64.b64encode(b"garbage" * 20).decode()))
    with pytest.raises(ValueError, match="not valid base64"):
        request_video(VideoQARequest(question="q", video_base64="@@@@not base64"))
    with pytest.raises(ValidationError):
        VideoQARequest(question="q", video_base64=good, extra=1)


def test_openai_chat_message_with_a_video_part_becomes_the_video_request():
    import base64

    from actors.serve_openai import ChatRequest, data_url_bytes
    from ensemble.tasks.math.task import MathTask
    from ensemble.tasks.video_qa.serve import MAX_UPLOAD_BYTES, request_video
    from ensemble.tasks.video_qa.task import VideoQATask
    from ensemble.tasks.video_qa.video import encode_video

    video = encode_video(_clip(6))
    url = "data:video/mp4;base64," + base64.b64encode(video).decode()
    chat = ChatRequest(model="lm@1", messages=[
        {"role": "user", "content": "ignored: an earlier turn"},
        {"role": "user", "content": [{"type": "text", "text": "what moved?"}, {"type": "video_url", "video_url": {"url": url}}]}])
    assert chat.prompt() == "what moved?" and chat.media() == (video,)
    task = VideoQATask()
    request = task.text_request(chat.prompt(), "lm@1", 3, chat.media())
    assert (request.question, request.system, request.seed) == ("what moved?", "lm@1", 3)
    assert request_video(request) == video
    with pytest.raises(ValueError, match="exactly one video"):
        task.text_request("what moved?", None, 0, ())
    with pytest.raises(ValueError, match="only text"):
        MathTask().text_request("1 + 1?", None, 0, (video,))
    with pytest.raises(ValueError, match="fetches no URLs"):
        data_url_bytes("https://example.com/a.mp4")
    with pytest.raises(ValueError, match="must be base64"):
        data_url_bytes("data:video/mp4,rawbytes")
    with pytest.raises(ValueError, match="invalid base64"):
        data_url_bytes("data:video/mp4;base64,@@@@")
    # the served body limit fits the largest upload as base64
    assert task.max_request_bytes > 4 * (MAX_UPLOAD_BYTES // 3) > MathTask.max_request_bytes


def test_run_command_answers_a_question_about_a_video_file(tmp_path, capsys):
    from actors.cli import main
    from ensemble.tasks.video_qa.video import encode_video

    encode_video(_clip(8), tmp_path / "v.mp4")
    argv = ["run", "video_qa", "--video", str(tmp_path / "v.mp4"), "--question", "what moved?", "--lm", "tiny-causal-lm",
            "--clips", "a=tiny-clip,b=tiny-clip", "--top-k", "4", "--max-new-tokens", "3", "--steps-per-token", "1",
            "--all-rounds", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "## rounds" in out and "answer:" in out and "moved tokens per CLIP" in out


def test_video_clip_training_saves_a_checkpoint_the_scorer_loads_by_name(tmp_path, monkeypatch):
    from ensemble import SCORERS
    from ensemble.tasks.video_qa.models import VideoClipTrainConfig, train_video_clips

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    report = train_video_clips(VideoClipTrainConfig(steps=4, batch_size=4, tabletop_clips=6), ["resnet", "vit4"], log=lambda m: None)
    assert [r["name"] for r in report.values()] == ["video_qa/clip-resnet", "video_qa/clip-vit4"]
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ratings = []
    for r in report.values():
        assert set(r["heldout"]) == {"easyvqa", "tabletop"}
        scorer = SCORERS.make("video_clip", model=r["name"], motion=True)
        scores = scorer.score({"question": "which object moved?", "frames": frames}, ["red mug", "blue bowl"]).scores
        assert scores.shape == (2,) and torch.isfinite(scores).all() and scores[0] != scores[1]
        ratings.append(scores)
    assert not torch.equal(ratings[0], ratings[1])  # another tower and seed: another CLIP
    assert (tmp_path / "video_qa" / "tabletop-train-6.npz").is_file()  # rendered clips are cached
    # --video-clip-finetune: starts from the saved weights (zero learning rate: they come back unchanged) and
    # records the run it started from; a CLIP without a checkpoint is an error that says how to make one
    import json

    import safetensors.torch

    path = Path(report["vit4"]["path"])
    saved = safetensors.torch.load_file(str(path / "open_clip_model.safetensors"))
    tuned = train_video_clips(VideoClipTrainConfig(steps=4, batch_size=4, tabletop_clips=6, finetune=True, lr=0.0), ["vit4"],
                              log=lambda m: None)
    again = safetensors.torch.load_file(str(Path(tuned["vit4"]["path"]) / "open_clip_model.safetensors"))
    assert all(torch.equal(saved[k], again[k]) for k in saved if "logit_scale" not in k)
    trained = json.loads((path / "open_clip_config.json").read_text())["trained"]
    assert trained["finetuned_from"]["steps"] == 4
    with pytest.raises(FileNotFoundError, match="--video-clips vit"):
        train_video_clips(VideoClipTrainConfig(steps=4, batch_size=4, tabletop_clips=6, finetune=True), ["vit"], log=lambda m: None)


def test_the_default_ensemble_is_every_clip_the_train_command_makes_each_its_own_architecture_and_seed():
    from ensemble.tasks.video_qa.cli import TRAINABLE_CLIPS, VIDEO_CLIPS
    from ensemble.tasks.video_qa.lit_train import LIT_CHECKPOINT
    from ensemble.tasks.video_qa.models import CHECKPOINTS, SEED_OFFSETS, VISION_CFGS, train_video_clips
    from ensemble.tasks.video_qa.solver import DEFAULT_CLIPS

    assert TRAINABLE_CLIPS == (*CHECKPOINTS, "lit") and tuple(CHECKPOINTS) == tuple(SEED_OFFSETS) == tuple(VISION_CFGS)
    names = {**CHECKPOINTS, "lit": LIT_CHECKPOINT}
    assert sorted(kw["model"] for kw in DEFAULT_CLIPS.values()) == sorted(names[a] for a in VIDEO_CLIPS)
    assert len(set(SEED_OFFSETS.values())) == len(SEED_OFFSETS) == 3
    assert len({str(sorted(c.items())) for c in VISION_CFGS.values()}) == 3
    with pytest.raises(ValueError, match="choose from vit, resnet, vit4"):
        train_video_clips(None, ["vit8"])


@pytest.mark.slow
def test_smollm2_guided_by_two_clips_answers_in_the_one_row_format():
    """The real offline LM (SmolLM2-135M-Instruct) with two tiny CLIPs: every system of one question, both modes."""
    from ensemble.contracts import ROW_FIELDS
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    task = VideoQATask(source="easyvqa")
    item = task.items(1, seed=0, split="train")[0]
    clips = {"a": {"model": "tiny-clip"}, "b": {"model": "tiny-clip", "aggregate": "max"}}
    for mode in ("zerocap", "magic"):
        solver = VideoQASolver(VideoQASpec(lm="smollm2-135m-instruct", clips=clips, mode=mode, beams=(1,), threads=1), task)
        rows = [solver.solve(item, system, seed=0) for system in solver.systems()]
        assert [r["system"] for r in rows] == ["lm@1", "a@1", "b@1", "ensemble@1"]
        for row in rows:
            assert set(row) == set(ROW_FIELDS) and row["metric"] in (0.0, 1.0) and row["extras"]["output"].strip()
        assert rows[-1]["extras"]["rounds"] >= 1 and set(rows[-1]["scorers"]) == {"a", "b"}
        assert len({r["config_hash"] for r in rows}) == 4


def test_paper_scale_models_are_named_through_the_cli_and_the_resolver():
    """The paper's setting by name (GPT-2-medium + CLIP ViT-B/32, ViT-L/14, multilingual CLIP): the flags map
    onto the spec; offline, loading fails fast with the resolver's message instead of hanging on the hub."""
    import argparse

    from ensemble import SCORERS
    from ensemble import models as M
    from ensemble.tasks.video_qa import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    names = {"b32": "ViT-B-32/openai", "l14": "ViT-L-14/openai", "ml": "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"}
    args = p.parse_args(["--lm", "gpt2-medium", "--clips", ",".join(f"{k}={v}" for k, v in names.items()),
                         "--aggregate", "max", "--mode", "magic"])
    spec = cli.solver_spec(args)
    assert spec.settings["lm"] == "gpt2-medium" and spec.settings["mode"] == "magic"
    assert {k: v["model"] for k, v in spec.settings["clips"].items()} == names
    assert all(v["aggregate"] == "max" for v in spec.settings["clips"].values())
    solver = spec.build()
    assert solver.systems() == ["lm@1", "b32@1", "l14@1", "ml@1", "ensemble@1", "lm@5", "b32@5", "l14@5", "ml@5", "ensemble@5"]
    available = {m["name"]: m["available"] for m in M.list_models()}
    for name in names.values():
        if available.get(name):
            continue
        with pytest.raises(M.ModelNotFoundError, match="offline"):
            SCORERS.make("video_clip", model=name)
    with pytest.raises(ValueError, match="--clips 'b32'"):
        cli.solver_spec(p.parse_args(["--clips", "b32"]))


def test_bench_times_lm_zerocap_and_magic_side_by_side_on_train_questions(capsys):
    from actors.cli import main

    assert main(["bench", "video_qa", "--tiny", "--n", "2", "--threads", "1"]) == 0
    table = capsys.readouterr().out.split("train split")[-1]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in table.splitlines() if line.startswith("| ") and "decoder" not in line}
    assert set(lines) == {"LM alone (blind)", "ZeroCap (context gradient)", "MAGIC-style (rerank)"}
    assert float(lines["LM alone (blind)"][2]) == 0 and float(lines["ZeroCap (context gradient)"][2]) > 0
    assert float(lines["MAGIC-style (rerank)"][2]) > 0 and all(v[0] == "2" for v in lines.values())


# -- decoding: answer-first prompt, caches, table ------------------------------------------------------------


def test_answer_first_prompt_ends_with_the_answer_prefix_so_the_first_token_is_the_answer():
    from ensemble.models import load_causal_lm
    from ensemble.tasks.video_qa.task import VideoQATask

    _, tokenizer = load_causal_lm("tiny-causal-lm")
    context = {"question": "what color is the shape?"}
    plain = VideoQATask(chat=False)
    assert plain.prompt(context, tokenizer).endswith("Question: What color is the shape?\nAnswer:")
    assert plain.prompt(context, tokenizer, answer_prefix="The answer is").endswith("shape?\nThe answer is")

    class ChatTokenizer:  # a chat template: the prefix starts the assistant's turn
        chat_template = "yes"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}</>" for m in messages) + "<assistant>"

    chat = VideoQATask().prompt(context, ChatTokenizer(), answer_prefix="Answer:")
    assert chat.endswith("<user>What color is the shape?</><assistant>Answer:")
    # the generated text is the answer only: the prefix is the prompt's, " red." normalises to "red"
    assert plain.answer(" red.", None) == "red"


def test_solver_passes_its_answer_prefix_to_the_prompt_and_the_config_hash():
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    settings = VideoQATask().settings_for(tiny=True)
    a = VideoQASolver(VideoQASpec(**settings, answer_prefix="The answer is"), VideoQATask(chat=False))
    b = VideoQASolver(VideoQASpec(**settings, answer_prefix=""), VideoQATask(chat=False))
    assert a.generator.prompt_fn({"question": "is there a circle?"}).endswith("circle?\nThe answer is")
    assert b.generator.prompt_fn({"question": "is there a circle?"}).endswith("circle?\nAnswer:")
    assert all(a.config_hash(s) != b.config_hash(s) for s in a.systems())


@pytest.mark.slow
def test_smollm2_answer_first_prompt_puts_answer_words_among_its_first_tokens():
    """With the default answer prefix the real LM's first generated token is an answer word: yes/no lead its
    top-8 for a yes/no question, colour words are in its top-64 for a colour question."""
    from ensemble.models import load_causal_lm
    from ensemble.tasks.video_qa.solver import DEFAULT_ANSWER_PREFIX
    from ensemble.tasks.video_qa.task import VideoQATask

    model, tokenizer = load_causal_lm("smollm2-135m-instruct")
    task = VideoQATask()

    def top(question: str, k: int) -> set[str]:
        text = task.prompt({"question": question}, tokenizer, DEFAULT_ANSWER_PREFIX)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        return {tokenizer.decode([i]).strip().lower() for i in logits.topk(k).indices.tolist()}

    assert {"yes", "no"} <= top("is there a red shape?", 8)
    assert {"red", "blue", "green"} <= top("what color is the shape?", 64)


def test_prompt_prefix_cache_reuses_the_shared_prefix_and_changes_nothing():
    """Prompts sharing an instruction: the cached context of the shared prefix is reused, and the next-token
    distributions and answers equal those of encoding every prompt whole."""
    from ensemble.generators.causal_lm import CausalLMGenerator

    prompts = ["Answer briefly. Question: what color is the shape? Answer:",
               "Answer briefly. Question: is there a red circle? Answer:",
               "Answer briefly. Question: is there a red circle? Answer:",
               "Something else entirely:"]
    cached = CausalLMGenerator("tiny-causal-lm", max_new_tokens=4, beam_size=1)
    plain = CausalLMGenerator(cached.model, cached.tokenizer, max_new_tokens=4, beam_size=1, prefix_cache=False)
    calls = []
    real = cached.model.forward
    cached.model.forward = lambda *a, **k: calls.append(k["input_ids"].shape[1]) or real(*a, **k)
    try:
        for i, prompt in enumerate(prompts):
            calls.clear()
            s1 = cached.init_state(prompt, 0)
            ran, n_prompt = list(calls), len(cached._ids(prompt)) - 1
            s2 = plain.init_state(prompt, 0)
            if i == 1:  # only the tokens after the shared instruction ran through the LM
                assert 0 < ran[0] < n_prompt - 3
            if i == 2:  # the same prompt again: no forward pass at all
                assert ran == []
            if i == 3:  # nothing shared: the whole prompt in one pass
                assert ran == [n_prompt + 1]
            assert torch.allclose(s1.beams[0].p_orig, s2.beams[0].p_orig, atol=1e-5)
            assert cached.generate_plain(prompt) == plain.generate_plain(prompt)
    finally:
        cached.model.forward = real


def test_each_video_is_read_and_embedded_once_per_item_and_scores_are_unchanged(monkeypatch):
    import ensemble.tasks.video_qa.video as video
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    task = VideoQATask(source="easyvqa")
    item = task.items(1, seed=0, split="train")[0]
    reads = []
    real = video.read_video
    monkeypatch.setattr(video, "read_video", lambda *a, **k: reads.append(1) or real(*a, **k))
    solver = VideoQASolver(VideoQASpec(**task.settings_for(tiny=True)), task)
    rows = [solver.solve(item, s, seed=0) for s in solver.systems()]
    assert len(reads) == 1  # one read for every guided system of the item
    fresh = VideoQASolver(VideoQASpec(**task.settings_for(tiny=True)), task)
    again = [fresh.solve(item, s, seed=0) for s in reversed(fresh.systems())][::-1]
    assert [r["extras"]["output"] for r in rows] == [r["extras"]["output"] for r in again]
    scorer = solver.scorers["clip_mean"]
    frames = solver.frames(item.context)
    cands = ["red", "blue", "circle"]
    context = {"question": item.context["question"], "frames": frames}
    first = scorer.score(context, cands).scores
    assert torch.equal(scorer.score(context, cands).scores, first)  # cached features: identical scores
    other = fresh.scorers["clip_mean"]
    other._frames = other._texts = None
    other._texts = {}
    assert torch.allclose(other.score(context, cands).scores, first, atol=1e-5)


def test_a_sources_token_defaults_apply_unless_a_flag_overrides_them():
    """--source tabletop rates 512 candidates and lets the CLIPs continue an answer (SOURCE_TOKEN); easy-VQA keeps
    the spec's defaults; an explicit flag wins; the settings reach the config hash of guided systems only."""
    import argparse

    from ensemble.tasks.video_qa import cli
    from ensemble.tasks.video_qa.solver import DEFAULT_TOKEN, SOURCE_TOKEN, VideoQASpec

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    table, easy = (cli.spec_from_args(p.parse_args(["--source", s])) for s in ("tabletop", "easyvqa"))
    assert table.token_config()["top_k"] == SOURCE_TOKEN["tabletop"]["top_k"] == 512
    assert table.token_config()["end_margin"] == 0.0 and "end_margin" not in easy.token_config()
    assert easy.token_config()["top_k"] == DEFAULT_TOKEN["top_k"] == 64
    assert cli.spec_from_args(p.parse_args(["--source", "tabletop", "--top-k", "64"])).token_config()["top_k"] == 64
    assert table.hash("lm", 1) == easy.hash("lm", 1) and table.hash("ensemble", 1) != easy.hash("ensemble", 1)
    explicit = cli.spec_from_args(p.parse_args(["--source", "easyvqa", "--top-k", "512", "--end-margin", "0"]))
    assert explicit.hash("ensemble", 1) == table.hash("ensemble", 1)  # the same settings, the same results rows
    assert VideoQASpec().hash("ensemble", 1) != table.hash("ensemble", 1)


def test_easy_vqa_train_questions_for_choosing_settings_are_about_images_the_clips_held_out():
    from ensemble.tasks.video_qa.data import HELD_OUT_EVERY, easy_vqa_questions

    qs = easy_vqa_questions(50, seed=0, split="train")
    assert all(q.meta["image_id"] % HELD_OUT_EVERY == 0 for q in qs)
    assert len({q.id for q in qs}) == 50


def test_video_qa_table_compares_the_ensemble_with_each_single_clip_paired():
    from ensemble.tasks.video_qa.solver import video_qa_table

    rows = []
    for i in range(10):
        for system, ok in (("lm@1", i < 2), ("a@1", i < 5), ("b@1", i < 6), ("ensemble@1", i < 8)):
            rows.append({"item_id": str(i), "system": system, "metric": float(ok), "timings": {"seconds": 0.1},
                         "extras": {}})
    table = video_qa_table(rows, ["lm@1", "a@1", "b@1", "ensemble@1"])
    assert "ensemble@1 − b@1  | 10    | +20.0" in table and "ensemble@1 − a@1  | 10    | +30.0" in table
    assert "95 % paired bootstrap" in table


def test_the_ensemble_rating_is_the_clips_summed_ratings_or_their_mean_or_it_restandardised():
    from ensemble import SCORERS
    from ensemble.contracts import Proposal
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    clip = SCORERS.make("video_clip", model="tiny-clip")
    clips = {"a": {"model": "tiny-clip"}, "b": {"model": "tiny-clip"}}
    context = {"question": "what moved?", "frames": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    proposal = Proposal(["red", "blue", "green mug"])
    totals = {}
    for combine in ("mean", "sum", "zscore"):
        spec = VideoQASpec(lm="tiny-causal-lm", clips=clips, combine=combine, beams=(1,))
        solver = VideoQASolver(spec, VideoQATask(), scorers={"a": clip, "b": clip})
        totals[combine] = solver.ensemble("ensemble").score(context, proposal).total
        single = solver.ensemble("a").score(context, proposal).total
    # two identical CLIPs: their mean is one CLIP's rating (same scale as a single system), their sum twice it
    assert torch.allclose(totals["mean"], single, atol=1e-6) and torch.allclose(totals["sum"], 2 * single, atol=1e-6)
    assert not torch.allclose(single, torch.zeros(3))
    z = totals["zscore"]
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5 and torch.equal(z.argsort(), single.argsort())
    assert VideoQASpec(lm="x", clips=clips, weights={"a": 3.0}, combine="mean").ensemble_weights() == {"a": 0.75, "b": 0.25}
    assert VideoQASpec(lm="x", clips=clips, weights={"a": 3.0}, combine="sum").ensemble_weights() == {"a": 3.0, "b": 1.0}
    assert VideoQASpec(lm="x", clips=clips).combine == "zscore"  # the default, chosen on train questions
    # the rule changes the ensemble's config hash, not a single CLIP's
    mean, summed = VideoQASpec(lm="x", clips=clips, combine="mean"), VideoQASpec(lm="x", clips=clips, combine="sum")
    assert mean.hash("ensemble", 1) != summed.hash("ensemble", 1) and mean.hash("a", 1) == summed.hash("a", 1)
    with pytest.raises(ValueError, match="combine='median' must be one of mean, sum, zscore"):
        VideoQASpec(lm="x", clips=clips, combine="median")


def test_with_lm_ends_the_lm_not_the_scorers_decides_that_the_answer_is_complete():
    """A scorer that prefers a longer answer ("yes yes") keeps steering after the LM would have ended; with
    ``lm_ends`` the round where the LM's own top token ends the answer is not reranked, while the first token
    still is."""
    from ensemble import ConsensusConfig, ScoreOutput, Scorer, ScorerEnsemble, run_consensus
    from ensemble.generators.causal_lm import CausalLMGenerator
    from ensemble.models.tiny import tiny_causal_lm

    model, tok = tiny_causal_lm()

    class Wants(Scorer):
        """Rates the texts of ``ratings`` (others 0)."""

        def __init__(self, ratings: dict[str, float]) -> None:
            self.ratings = ratings

        def score(self, context, candidates, *, need_grad=False):
            return ScoreOutput(scores=torch.tensor([self.ratings.get(c, 0.0) for c in candidates]))

    def gen(**kw):
        return CausalLMGenerator(model, tok, prompt_fn=lambda c: "Question: is it red? Answer:", top_k=8, steps_per_token=1,
                                 rerank_weight=5.0, max_new_tokens=3, stop_fn=lambda text: text == complete, **kw)

    complete = None
    probe = gen()
    state = probe.init_state(None, 0)
    first = probe.propose(state, None).info["token"][2]  # the LM's third choice, so the scorer must move it
    after = torch.topk(probe._shifted_many([_after(probe, state, first)])[0][0], 2).indices.tolist()
    complete = probe.text([first, after[0]])  # the LM's own next token ends the answer
    longer = probe.text([first, after[1]])  # the scorer's favourite: one more word
    assert longer != complete
    scorer = Wants({probe.text([first]): 0.5, longer: 1.0})
    outs = {}
    for lm_ends in (False, True):
        g = gen(lm_ends=lm_ends)
        outs[lm_ends] = run_consensus(g, ScorerEnsemble({"w": scorer}), None, ConsensusConfig(max_rounds=8)).output
    assert outs[False].startswith(longer) and outs[True] == complete, outs
    # end_margin: the scorers overrule the LM's ending where their favourite continuation is rated more than the
    # margin above the ending (here ~3 z-units: one liked continuation among eight candidates)
    for margin, want in ((0.0, longer), (100.0, complete), (float("inf"), complete)):
        g = gen(lm_ends=True, end_margin=margin)
        out = run_consensus(g, ScorerEnsemble({"w": scorer}), None, ConsensusConfig(max_rounds=8)).output
        assert out.startswith(want) if want == longer else out == want, (margin, out)
    with pytest.raises(ValueError, match="end_margin=-1.0"):
        gen(lm_ends=True, end_margin=-1.0)


def _after(gen, state, tok):
    """The beam of ``state`` extended by ``tok``, prepared (its unshifted next-token distribution computed)."""
    from ensemble.generators.causal_lm import Beam

    beam = state.beams[0]
    new = Beam(ids=beam.ids + [tok], past=beam.next_past, last=tok, logprob=0.0, prompt=beam.prompt)
    gen._prepare(new)
    return new


@pytest.mark.parametrize("lm_ends", [False, True])
def test_with_lm_ends_and_several_beams_a_beam_the_lm_ends_keeps_its_rating_and_its_place(lm_ends):
    """Beam search: a beam whose LM ends the answer carries the ensemble's rating of that ending, so the complete
    answer is not pushed out by other beams' reranked continuations (as it was when such a beam was ranked
    without any rating: the first version of the rule, which broke beam 5)."""
    from ensemble.generators.causal_lm import CausalLMGenerator
    from ensemble.models.tiny import tiny_causal_lm

    model, tok = tiny_causal_lm()
    complete = None
    gen = CausalLMGenerator(model, tok, prompt_fn=lambda c: "Question: is it red? Answer:", top_k=8, steps_per_token=1,
                            rerank_weight=5.0, max_new_tokens=3, beam_size=2, lm_ends=lm_ends,
                            stop_fn=lambda text: text == complete)
    state = gen.init_state(None, 0)
    first = gen.propose(state, None)
    head, other = first.info["token"][2], first.info["token"][3]  # two beams the ratings pick, not the LM's top
    total = torch.tensor([1.0 if t == head else 0.9 if t == other else 0.0 for t in first.info["token"]])
    gen._commit(state, torch.tensor(first.info["token"]), torch.tensor(first.info["beam"]), total, follow=False)
    assert sorted(b.ids[-1] for b in state.beams) == sorted([head, other])
    hb = next(b for b in state.beams if b.ids[-1] == head)
    ends = int(hb.p_orig.argmax())
    complete = gen.text([head, ends])  # the LM's own next token ends the head beam's answer
    second = gen.propose(state, None)
    texts, beams = second.candidates, second.info["beam"]
    other_b = next(i for i, b in enumerate(state.beams) if b.ids[-1] == other)
    # the ensemble likes the complete answer and the other beam's first two continuations equally
    liked = {complete} | {t for t, b in zip(texts, beams, strict=True) if b == other_b and
                          [x for x, y in zip(texts, beams, strict=True) if y == other_b].index(t) < 2}
    total2 = torch.tensor([1.0 if t in liked else 0.0 for t in texts])
    gen._commit(state, torch.tensor(second.info["token"]), torch.tensor(beams), total2, follow=False)
    kept = [gen.text(b.ids) for b in state.finished + state.beams]
    assert complete in kept, kept

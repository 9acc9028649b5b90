"""The LiT video CLIP (unit tier, tiny real towers): shapes, frozen towers, the frame slots, the checkpoint
loaded by name as a video QA scorer member, ratings that depend on the frames, and resumed training."""

from __future__ import annotations

import pytest
import torch

TINY = {"image_tower": "tiny-image-classifier", "text_tower": "tiny-text-encoder", "image_size": 32,
        "embed_dim": 16, "hidden": 32}


def _tiny(seed: int = 0):
    from ensemble.models.lit_clip import LitClipConfig, build_lit_clip

    return build_lit_clip(LitClipConfig(**TINY), seed=seed)


def _video(colour: tuple[float, float, float], moved: bool) -> torch.Tensor:
    """Two 32 px frames on grey; a coloured square that moves right if ``moved``."""
    frames = torch.full((2, 3, 32, 32), 0.5)
    for k, x in enumerate((4, 18 if moved else 4)):
        frames[k, :, 10:20, x:x + 10] = torch.tensor(colour).view(3, 1, 1)
    return frames


def test_lit_clip_heads_have_the_shared_width_and_only_the_heads_train():
    model, tok = _tiny()
    video = model.encode_video(torch.rand(3, 4, 3, 32, 32))
    text = model.encode_text(tok(["what color is the shape? red", "what color is the shape? blue"]))
    assert video.shape == (3, 16) and text.shape == (2, 16)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"video_head", "text_head", "logit_scale"}
    assert set(model.head_state()) == {n for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    assert model.video_head.training and not model.visual.training and not model.text_tower.training
    with pytest.raises(ValueError, match=r"slot features must be \[B, 4"):
        model.video_from_features(torch.zeros(2, 3, model.image_dim))
    with pytest.raises(NotImplementedError, match="encode_video"):
        model.encode_image(torch.rand(1, 3, 32, 32))


def test_video_slots_are_the_ends_and_their_motion_frames_and_a_still_image_has_grey_motion():
    from ensemble.tasks.video_qa.video_clip import video_slots

    clip = torch.cat([_video((1.0, 0.0, 0.0), moved=True), torch.rand(1, 3, 32, 32)])[[0, 2, 1]]
    slots = video_slots(clip)
    assert slots.shape == (4, 3, 32, 32)
    assert torch.equal(slots[0], clip[0]) and torch.equal(slots[1], clip[-1])  # first and last, not the middle
    still = video_slots(clip[:1])
    assert torch.equal(still[0], still[1]) and torch.all(still[2:] == 0.5)


def test_a_saved_lit_clip_resolves_by_name_and_rates_as_a_video_clip_member(tmp_path, monkeypatch):
    from ensemble import SCORERS
    from ensemble.models import resolve, save_project_checkpoint
    from ensemble.models.lit_clip import save_lit_clip
    from ensemble.tasks.video_qa.video_clip import VideoClipScorer

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    model, tok = _tiny(seed=3)
    save_project_checkpoint("video_qa/clip-lit", lambda out: save_lit_clip(model, out, {"steps": 0}))
    assert resolve("video_qa/clip-lit").format == "lit-clip" and resolve("video_qa/clip-lit").kind == "clip"
    scorer = SCORERS.make("video_clip", model="video_qa/clip-lit", motion=True, answer_end=True)
    context = {"question": "which object moved?", "frames": _video((1.0, 0.0, 0.0), moved=True)}
    scores = scorer.score(context, ["red mug", "blue bowl", "red mug,"]).scores
    assert scores.shape == (3,) and torch.isfinite(scores).all() and scores[0] != scores[1]
    assert scores[2] == scores[0]  # answer_end: "red mug," is rated as the answer "red mug"
    direct = VideoClipScorer(model, tok).score(context, ["red mug", "blue bowl"]).scores
    assert torch.allclose(direct, scores[:2], atol=1e-5)  # the loaded heads are the saved ones


def test_lit_ratings_change_with_the_frames_their_order_and_the_motion():
    from ensemble.tasks.video_qa.video_clip import VideoClipScorer

    model, tok = _tiny(seed=1)
    scorer = VideoClipScorer(model, tok)
    cands = ["yes", "no"]
    q = "did the red mug move?"

    def rate(frames: torch.Tensor) -> torch.Tensor:
        return scorer.score({"question": q, "frames": frames}, cands).scores

    moved, still = _video((1.0, 0.0, 0.0), moved=True), _video((1.0, 0.0, 0.0), moved=False)
    blue = _video((0.0, 0.0, 1.0), moved=True)
    ratings = [rate(moved), rate(moved.flip(0)), rate(still), rate(blue)]
    for i in range(len(ratings)):
        for j in range(i + 1, len(ratings)):
            assert not torch.allclose(ratings[i], ratings[j]), (i, j)


def test_lit_training_resumes_a_killed_run_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Train 8 steps straight, then kill a second run after its step-4 save and run it again: same heads."""
    import ensemble.tasks.video_qa.lit_train as lt
    from ensemble.models import find_project_checkpoint
    from ensemble.models.lit_clip import HEADS_FILE, LitClipConfig

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    cfg = lt.LitTrainConfig(steps=8, batch_size=8, tabletop_clips=4, save_every=4, lit=LitClipConfig(**TINY))
    report = lt.train_lit_clip(cfg, log=lambda m: None)
    assert set(report["heldout"]) == {"easyvqa", "tabletop"} and report["name"] == lt.LIT_CHECKPOINT
    import safetensors.torch

    straight = safetensors.torch.load_file(str(find_project_checkpoint(lt.LIT_CHECKPOINT) / HEADS_FILE))
    real, calls = lt.contrast, []

    def dies_after_five(*a, **k):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(lt, "contrast", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        lt.train_lit_clip(cfg, log=lambda m: None)
    assert lt._resume_path().is_file()
    monkeypatch.setattr(lt, "contrast", real)
    logs: list[str] = []
    lt.train_lit_clip(cfg, log=logs.append)
    assert any("resuming video_qa/clip-lit at step 4/8" in m for m in logs)
    resumed = safetensors.torch.load_file(str(find_project_checkpoint(lt.LIT_CHECKPOINT) / HEADS_FILE))
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)
    assert not lt._resume_path().is_file()  # removed once the checkpoint is saved


def test_lit_loss_terms_rank_a_two_word_answer_above_its_cut_and_its_first_word():
    """One positive per term: nothing shorter stands in for "red mug" (round 4's terms had the cut "red m" as a
    second positive, which the heads satisfied by rating "red m" high and "red mug" low)."""
    import random

    from ensemble.tasks.video_qa.lit_train import JUNK, loss_terms

    terms = loss_terms("red mug", random.Random(0))
    (cands, pos), (cuts, cut_pos), (firsts, first_pos) = terms
    assert pos == ["red mug"] and {"red", "red m", "blue m", "red bowl"} <= set(cands)
    assert sum(c in JUNK for c in cands) == 4
    assert cut_pos == ["red m"] and {"red", "red b", "red bowl"} <= set(cuts) and "red mug" not in cuts
    assert first_pos == ["red"] and {"blue", "green", "yellow"} <= set(firsts) and "red mug" not in firsts
    assert all(len(p) == 1 and p[0] in c for c, p in terms)
    (one,) = loss_terms("yes", random.Random(0))
    assert one[1] == ["yes"] and "no" in one[0]


@pytest.mark.parametrize("mode", ["zerocap", "magic"])
def test_a_lit_member_guides_the_lm_in_both_modes_alone_and_in_an_ensemble(tmp_path, monkeypatch, mode):
    """The tiny LM guided by a LiT member and a tiny CLIP: ZeroCap (context gradient through the LM; the
    scorers only rate) and MAGIC-style both answer, and the LiT member's ratings reach the rounds."""
    from ensemble.models import save_project_checkpoint
    from ensemble.models.lit_clip import save_lit_clip
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    model, _ = _tiny(seed=2)
    save_project_checkpoint("video_qa/clip-lit", lambda out: save_lit_clip(model, out))
    task = VideoQATask(source="easyvqa")
    settings = task.settings_for(tiny=True)
    settings["clips"] = {"clip_lit": {"model": "video_qa/clip-lit", "answer_end": True}, "clip_mean": {"model": "tiny-clip"}}
    solver = VideoQASolver(VideoQASpec(**settings, mode=mode), task)
    item = task.items(1, seed=0, split="train")[0]
    records: list = []
    rows = {s: solver.solve(item, s, seed=0, callback=lambda rec, st: records.append(rec)) for s in ("clip_lit@1", "ensemble@2")}
    assert all(r["extras"]["mode"] == mode and r["extras"]["rounds"] >= 1 for r in rows.values())
    assert set(rows["ensemble@2"]["scorers"]) == {"clip_lit", "clip_mean"}
    assert any("clip_lit" in rec.scorer_best and not rec.missing for rec in records)


@pytest.mark.slow
def test_the_default_lit_towers_are_the_offline_pretrained_efficientnet_and_minilm():
    """Real assets: the ImageNet EfficientNet-Lite0 gives 1280-d frame features (different for a red and a blue
    moving square), MiniLM 2 × 384-d text features, and the heads map both into the shared 256-d space."""
    from ensemble.models.lit_clip import LitClipConfig, build_lit_clip
    from ensemble.tasks.video_qa.video_clip import VideoClipScorer, video_slots

    model, tok = build_lit_clip(LitClipConfig())
    assert (model.image_dim, model.text_dim) == (1280, 768)
    scorer = VideoClipScorer(model, tok)
    red, blue = _video((1.0, 0.0, 0.0), moved=True), _video((0.0, 0.0, 1.0), moved=True)
    feats = model.image_tower_features(scorer.clip.preprocess(torch.cat([video_slots(red), video_slots(blue)])))
    assert feats.shape == (8, 1280) and not torch.allclose(feats[:4], feats[4:], atol=1e-3)
    assert model.encode_text(tok(["which object moved? red mug"])).shape == (1, 256)

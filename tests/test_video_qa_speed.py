"""Video QA speed paths (unit tier, tiny real models): the length-grouped text encoding of the CLIP scorers gives
the embeddings, ratings and answers of the reference path (one padded batch per call)."""

from __future__ import annotations

import pytest
import torch

TEXTS = ["what color is the shape? red", "what color is the shape? a big green circle on the left",
         "is there a circle? yes", "q? no", "what color is the shape? blue", "is there a circle? yes yes yes",
         "what color is the shape? bright yellow mug", ""]
LIT = {"image_tower": "tiny-image-classifier", "text_tower": "tiny-text-encoder", "image_size": 32,
       "embed_dim": 16, "hidden": 32}


def _models():
    from ensemble.models.lit_clip import LitClipConfig, build_lit_clip
    from ensemble.registry import SCORERS

    clip = SCORERS.make("video_clip", model="tiny-clip").clip
    lit, tok = build_lit_clip(LitClipConfig(**LIT), seed=1)
    return {"tiny-clip": (clip.model, clip.tokenizer), "tiny-lit": (lit, tok)}


@pytest.mark.parametrize("chunk", [2, 64])
def test_grouped_text_encoding_equals_one_padded_batch_over_several_length_groups(chunk):
    from ensemble.tasks.video_qa.video_clip import _causal_clip, encode_texts, text_lengths

    for name, (model, tok) in _models().items():
        tokens = tok(TEXTS)
        with torch.no_grad():
            ref = model.encode_text(tokens).float()
            got = encode_texts(model, tokens, chunk=chunk)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-5), name
        lengths = text_lengths(model, tokens)
        assert lengths is not None and len(set(lengths.tolist())) > 2  # the texts fall into several length groups
    assert _causal_clip(_models()["tiny-clip"][0]) and not _causal_clip(_models()["tiny-lit"][0])


def test_grouped_text_encoding_trims_every_row_to_its_own_length():
    from ensemble.tasks.video_qa.video_clip import encode_texts, text_lengths

    model, tok = _models()["tiny-lit"]
    tokens = tok(TEXTS)
    seen = []
    real = model.encode_text
    model.encode_text = lambda t: seen.append(t) or real(t)
    with torch.no_grad():
        encode_texts(model, tokens, chunk=3)
    assert all((t != model.pad_id).all() for t in seen)  # no call carries padding
    assert all(len(t) <= 3 for t in seen) and sum(len(t) for t in seen) == len(TEXTS)
    assert sorted(int(n) for t in seen for n in [t.shape[1]] * len(t)) == sorted(text_lengths(model, tokens).tolist())


@pytest.mark.parametrize("mode", ["zerocap", "magic"])
def test_grouped_text_path_gives_the_reference_answers_tokens_and_ratings(tmp_path, monkeypatch, mode):
    """The tiny LM guided by a tiny CLIP and a tiny LiT member at beams 1 and 3, 32 candidates per beam: every
    system answers the same, commits the same tokens, and every round's ratings agree with the reference path's."""
    from ensemble.models import save_project_checkpoint
    from ensemble.models.lit_clip import LitClipConfig, build_lit_clip, save_lit_clip
    from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec
    from ensemble.tasks.video_qa.task import VideoQATask

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path))
    lit, _ = build_lit_clip(LitClipConfig(**LIT), seed=2)
    save_project_checkpoint("video_qa/clip-lit", lambda out: save_lit_clip(lit, out))
    task = VideoQATask(source="easyvqa")
    items = task.items(2, seed=0, split="train")

    def run(grouped: bool) -> tuple[list[dict], list[list]]:
        settings = task.settings_for(tiny=True)
        settings["token"] = {**settings["token"], "top_k": 32, "lm_ends": True, "end_margin": 0.0}
        settings["clips"] = {"clip_lit": {"model": "video_qa/clip-lit", "answer_end": True, "grouped_text": grouped},
                             "clip_mean": {"model": "tiny-clip", "motion": True, "grouped_text": grouped}}
        settings["beams"] = (1, 3)
        solver = VideoQASolver(VideoQASpec(**settings, mode=mode), task)
        rows, records = [], []
        for item in items:
            for system in solver.systems():
                records.append([])
                rows.append(solver.solve(item, system, seed=0, callback=lambda rec, st: records[-1].append(rec)))
        return rows, records

    ref_rows, ref_records = run(False)
    rows, records = run(True)
    assert [r["system"] for r in rows] == [r["system"] for r in ref_rows]
    for got, ref in zip(rows, ref_rows, strict=True):
        assert got["extras"]["output"] == ref["extras"]["output"] and got["answer"] == ref["answer"]
        assert got["extras"].get("moved_rounds") == ref["extras"].get("moved_rounds")
    assert sum(len(r) for r in records) > 4
    for got, ref in zip(records, ref_records, strict=True):
        assert len(got) == len(ref)
        for a, b in zip(got, ref, strict=True):
            assert a.n_candidates == b.n_candidates and a.best == b.best and a.info == b.info
            for n in b.scorer_energy:
                assert a.scorer_energy[n] == pytest.approx(b.scorer_energy[n], abs=1e-3)
                assert a.scorer_mean_energy[n] == pytest.approx(b.scorer_mean_energy[n], abs=1e-3)


def test_bench_reference_times_both_text_paths_side_by_side_and_counts_equal_answers(capsys):
    from actors.cli import main

    assert main(["bench", "video_qa", "--tiny", "--n", "2", "--threads", "1", "--reference"]) == 0
    table = capsys.readouterr().out.split("train split")[-1]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in table.splitlines() if line.startswith("| ") and "decoder" not in line}
    assert set(lines) == {"LM alone (blind)", "ZeroCap (context gradient)", "MAGIC-style (rerank)",
                          "ZeroCap, reference text path", "MAGIC-style, reference text path"}
    for fast in ("ZeroCap (context gradient)", "MAGIC-style (rerank)"):
        assert float(lines[fast][5]) > 0 and lines[fast][6] == "2/2"  # a speed-up, and the same answers
    assert all(v[0] == "2" for v in lines.values())


def test_texts_with_equal_tokens_get_one_embedding_and_a_causal_clip_runs_no_padding():
    from ensemble.tasks.video_qa.video_clip import encode_texts, text_lengths

    model, tok = _models()["tiny-clip"]
    tokens = tok(TEXTS)
    assert int(text_lengths(model, tokens).max()) < tokens.shape[1]  # the 77-token context is cut to the texts
    twice = torch.cat([tokens, tokens[:3]])
    with torch.no_grad():
        got = encode_texts(model, twice, chunk=2)
    assert torch.equal(got[len(TEXTS):], got[:3])  # exact ties stay exact ties

"""Fine-tuning the math generator: data, masking, trainable layers, and a real (tiny) training run."""

from __future__ import annotations

import json
import random

import pytest
import torch

from ensemble.tasks.math.finetune import (
    FinetuneConfig,
    collate,
    encode_pairs,
    finetune,
    length_batches,
    select_trainable,
)


def test_collate_masks_prompt_and_padding():
    batch = collate([([5, 6, 7, 8], 2), ([9, 10], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_length_batches_cover_every_example_once_with_similar_lengths():
    examples = [([1] * n, 1) for n in [3, 30, 4, 31, 5, 29, 6, 32]]
    batches = length_batches(examples, 2, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs(len(examples[a][0]) - len(examples[b][0])) <= 3 for a, b in batches)


def test_encode_pairs_drops_examples_cut_before_the_solution():
    from ensemble.models.tiny import tiny_causal_lm

    _, tok = tiny_causal_lm()
    pairs = [("Question: a b c\nAnswer:", " 1 + 2 = 3"), ("x " * 50, " too late")]
    out = encode_pairs(tok, pairs, max_length=20)
    assert len(out) == 1 and out[0][1] < len(out[0][0])


def test_select_trainable_freezes_all_but_the_top_blocks():
    from ensemble.models.tiny import tiny_causal_lm

    model, _ = tiny_causal_lm()
    total = sum(p.numel() for p in model.parameters())
    n = select_trainable(model, 1)
    top = model.transformer.h[-1]
    assert 0 < n < total and all(p.requires_grad for p in top.parameters())
    assert not any(p.requires_grad for p in model.transformer.h[0].parameters())
    assert select_trainable(model, 0) == total


def test_finetune_tiny_lm_lowers_held_out_loss_and_saves_a_loadable_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "cache"))
    cfg = FinetuneConfig(base="tiny-causal-lm", name="generators/test-gsm", n_problems=48, epochs=3,
                         batch_size=8, lr=3e-3, warmup=2, train_layers=0, max_length=256, held_out=0.2, threads=1)
    report = finetune(cfg)
    assert report["held_out_loss_after"] < report["held_out_loss_before"] - 0.3, report
    from ensemble.models import load_causal_lm, resolve

    assert resolve("generators/test-gsm").source == "project-cache"
    model, tok = load_causal_lm("generators/test-gsm")
    saved = json.loads((tmp_path / "cache" / "checkpoints" / "generators" / "test-gsm" / "training.json").read_text())
    assert saved["problems"] == 48 and saved["config"]["seed"] == 100
    ids = tok("Question: 1 + 1\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_lora_finetune_trains_only_adapters_and_saves_a_merged_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "cache"))
    cfg = FinetuneConfig(base="tiny-causal-lm", name="generators/test-lora", n_problems=48, epochs=3,
                         batch_size=8, lr=3e-2, warmup=2, lora_rank=4, max_length=256, held_out=0.2, threads=1)
    report = finetune(cfg)
    from ensemble.models import load_causal_lm
    from ensemble.models.tiny import tiny_causal_lm

    base, _ = tiny_causal_lm()
    assert 0 < report["trainable_parameters"] < sum(p.numel() for p in base.parameters()) / 4
    assert report["method"] == "lora (rank 4, merged)"
    assert report["held_out_loss_after"] < report["held_out_loss_before"] - 0.05, report  # a random 32-wide LM: little to adapt
    from safetensors.torch import load_file

    saved = load_file(f"{report['path']}/model.safetensors")
    assert not any("lora" in k for k in saved)  # merged: an ordinary checkpoint of the base architecture
    model, _ = load_causal_lm("generators/test-lora")
    assert type(model) is type(base)
    changed = [k for k, v in base.state_dict().items() if k in saved and not torch.equal(v, saved[k])]
    assert changed and all(k.endswith("weight") for k in changed)


def test_lora_settings_are_checked():
    with pytest.raises(ValueError, match="train_layers=0"):
        FinetuneConfig(lora_rank=8, train_layers=2)
    with pytest.raises(ValueError, match="lora_rank=-1"):
        FinetuneConfig(lora_rank=-1)


def test_unknown_base_model_lists_valid_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "cache"))
    from ensemble.models.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        finetune(FinetuneConfig(base="no-such-lm", n_problems=4))


class _Killed(Exception):
    pass


class _KillAfter:
    """A tqdm-like bar that raises after ``n`` updates (a kill in the middle of training)."""

    def __init__(self, n: int | None) -> None:
        self.n, self.seen = n, 0

    def update(self, k: int) -> None:
        self.seen += k
        if self.n is not None and self.seen >= self.n:
            raise _Killed

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_killed_finetune_resumes_and_ends_where_an_uninterrupted_run_does(tmp_path, monkeypatch, lora_rank):
    from safetensors.torch import load_file

    from ensemble.tasks.math.finetune import resume_path

    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "cache"))
    cfg = FinetuneConfig(base="tiny-causal-lm", name="generators/resume-test", n_problems=40, epochs=2,
                         batch_size=8, lr=3e-3, warmup=2, max_length=192, held_out=0.1, threads=1, save_every=3,
                         lora_rank=lora_rank)
    straight = finetune(cfg)
    w_straight = load_file(f"{straight['path']}/model.safetensors")
    assert straight["resumed_from_step"] == 0 and not resume_path(cfg.name).exists()

    with pytest.raises(_Killed):  # killed during step 5: the state of step 3 is on disk
        finetune(cfg, progress=lambda total: _KillAfter(5))
    assert resume_path(cfg.name).is_file()
    starts = []

    def bar(total):
        b = _KillAfter(None)
        starts.append(b)
        return b

    resumed = finetune(cfg, progress=bar)
    assert resumed["resumed_from_step"] == 3 and starts[0].seen == resumed["steps"]
    assert resumed["held_out_loss_before"] == straight["held_out_loss_before"]
    w_resumed = load_file(f"{resumed['path']}/model.safetensors")
    assert all(torch.allclose(w_straight[k], w_resumed[k], atol=1e-6) for k in w_straight)
    assert resumed["held_out_loss_after"] == pytest.approx(straight["held_out_loss_after"], abs=1e-4)
    assert not resume_path(cfg.name).exists()  # removed once the checkpoint is saved
    # a state saved under other settings is not resumed
    with pytest.raises(_Killed):
        finetune(cfg, progress=lambda total: _KillAfter(4))
    other = finetune(FinetuneConfig(**{**cfg.__dict__, "lr": 1e-3}))
    assert other["resumed_from_step"] == 0


def test_shared_prompt_prefix_as_a_cache_gives_the_same_loss():
    from ensemble.models.tiny import tiny_causal_lm
    from ensemble.tasks.math.finetune import batch_loss, split_shared_prefix

    model, _ = tiny_causal_lm()
    shared = list(range(5, 25))
    examples = [(shared + [30, 31, 32, 40, 41], 23), (shared + [33, 34, 42, 43, 44, 45], 22)]
    prefix, rest = split_shared_prefix(examples)
    assert prefix == shared and rest == [([30, 31, 32, 40, 41], 3), ([33, 34, 42, 43, 44, 45], 2)]
    assert split_shared_prefix(examples, min_length=21)[0] == []
    with torch.no_grad():
        full = batch_loss(model, collate(examples, pad_id=0), None)
        cached = batch_loss(model, collate(rest, pad_id=0), torch.tensor(prefix))
    assert torch.allclose(full, cached, atol=1e-5)

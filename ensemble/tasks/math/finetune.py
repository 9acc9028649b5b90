"""Supervised fine-tuning of a causal LM on GSM-Symbolic *training* problems (the generator of the math task).

The paper's math generator is GPT-2-medium, which had seen GSM8K's format; the offline SmolLM2-135M has
not, and solves none of the problems on its own, so verifiers have nothing to choose between. This module
gives the small LM the same footing in minutes on CPU: it trains on (prompt, reference solution) pairs of
the training split (dataset seeds ``>= TRAIN_SEED_OFFSET``, never an evaluation seed), with the loss on the
solution tokens only and the exact prompt the math task builds at decoding time.

Three ways to choose what is trained: every parameter (``train_layers=0``, the full fine-tune, which made
SmolLM2 lose skill on other word problems), the top ``train_layers`` transformer blocks plus the final
norm (the backward pass stops early), or **LoRA** (``lora_rank > 0``, via ``peft``): rank-``r`` adapters on
every linear projection of every block, the base weights frozen, so the tuned model stays close to the
untuned one. LoRA adapters are merged into the weights when saved. The result is an ordinary transformers
checkpoint in the project cache (``generators/smollm2-gsm`` by default; ``ensemble train generator``
saves its LoRA run as ``generators/smollm2-gsm-lora``) that every command loads by name, with the
training facts in ``training.json``.

A killed training resumes: every ``save_every`` steps the weights, the optimiser, the schedule, the random
states and the losses so far are written atomically to ``<cache>/resume/<name>/state.pt``; the next
``finetune`` with the same settings continues from there (the batch order is drawn up front from the seed,
so the resumed run takes exactly the steps the uninterrupted one would), and the file is removed once the
checkpoint is saved. Only trainable parameters are written (with LoRA: the adapters, a few MB).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ensemble.tasks.math.data import Problem

DEFAULT_NAME = "generators/smollm2-gsm"
"""Project checkpoint name of the fine-tuned math generator."""


@dataclass
class FinetuneConfig:
    """Settings of ``ensemble train generator``."""

    base: str = "smollm2-135m-instruct"
    """Causal LM to start from (any name the model resolver knows)."""
    name: str = DEFAULT_NAME
    """Project checkpoint name (or directory) to save to."""
    n_problems: int = 2000
    """Training problems (GSM-Symbolic training split)."""
    seed: int = 100
    """Training split seed (dataset seed ``seed + TRAIN_SEED_OFFSET``); the verifiers use 0 and 1."""
    epochs: int = 1
    """Passes over the problems."""
    batch_size: int = 8
    """Sequences per optimiser step."""
    lr: float = 2e-4
    """Peak AdamW learning rate (linear warm-up over ``warmup`` steps, then linear decay to 0)."""
    warmup: int = 10
    """Warm-up steps."""
    train_layers: int = 0
    """Top transformer blocks trained (0 = all parameters: on 2 cores ~11 s per step instead of ~5.5 s
    for the top 8, and a much lower loss — 0.76 after one epoch of 1,140 problems with the top 8)."""
    lora_rank: int = 0
    """LoRA adapter rank (0: no LoRA; ``train_layers`` then picks what is trained). With LoRA every linear
    projection of every block gets a rank-``lora_rank`` adapter and nothing else is trained."""
    lora_alpha: float = 16.0
    """LoRA scale numerator (the adapter's update is scaled by ``lora_alpha / lora_rank``)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA adapters' input."""
    max_length: int = 512
    """Sequences are cut to this many tokens (with the worked example in the prompt they reach ~440)."""
    held_out: float = 0.05
    """Fraction of problems kept aside to measure the loss before and after."""
    shots: int = 0
    """Worked examples in the prompt the LM is trained (and later decoded) with."""
    annotations: bool = False
    """Train on the ``<<expr=value>>`` format instead of the bare ``3*8=24`` one."""
    threads: int = 2
    """Torch threads."""
    device: str = "cpu"
    """Training device (``cuda`` trains the same way, faster)."""
    save_every: int = 20
    """Write the resume state every this many steps (0: never; a kill then restarts from scratch)."""
    cache_prefix: bool = True
    """Run the prompt prefix every example shares (the chat system turn and the worked example, ~150 tokens)
    once per step without gradients and feed it to the batch as a key/value cache: a step costs about half
    with the worked example. The adapters then learn from the question and solution tokens only."""

    def __post_init__(self) -> None:
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank={self.lora_rank} must be >= 0 (0 = no LoRA)")
        if self.lora_rank and self.train_layers:
            raise ValueError(f"lora_rank={self.lora_rank} and train_layers={self.train_layers}: LoRA adapts every "
                             "block; set train_layers=0 (or lora_rank=0 to train the top blocks)")
        if self.shots not in (0, 1):
            raise ValueError(f"shots={self.shots} must be 0 or 1")

    def resume_key(self) -> dict[str, Any]:
        """The settings a resume state must match (threads, device and ``save_every`` may change)."""
        return {k: v for k, v in asdict(self).items() if k not in ("threads", "device", "save_every")}


def training_pairs(problems: Sequence[Problem], prompt_fn: Callable[[str], str],
                   render: Callable[[str], str], eos: str) -> list[tuple[str, str]]:
    """``(prompt, " solution<eos>")`` for each problem: the text before and the text to learn (no leading
    space after a prompt that ends in white space, e.g. a chat template's ``assistant\\n``)."""
    pairs = []
    for p in problems:
        prompt = prompt_fn(p.question)
        lead = "" if prompt[-1:].isspace() else " "
        pairs.append((prompt, lead + render(p.solution).strip() + eos))
    return pairs


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + solution and the number of prompt tokens (which get no loss)."""
    out = []
    for prompt, target in pairs:
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        ids = (p_ids + t_ids)[:max_length]
        if len(ids) > len(p_ids):
            out.append((ids, len(p_ids)))
    return out


def collate(batch: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def split_shared_prefix(examples: Sequence[tuple[list[int], int]],
                        min_length: int = 16) -> tuple[list[int], list[tuple[list[int], int]]]:
    """The token prefix every example's prompt starts with (kept one token short of the shortest prompt) and
    the examples without it; ``([], examples)`` when that prefix is shorter than ``min_length``."""
    if not examples:
        return [], list(examples)
    first = examples[0][0]
    k = min(n_prompt for _, n_prompt in examples) - 1
    for ids, _ in examples[1:]:
        k = next((i for i in range(k) if ids[i] != first[i]), k)
    if k < min_length:
        return [], list(examples)
    return first[:k], [(ids[k:], n_prompt - k) for ids, n_prompt in examples]


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], prefix: torch.Tensor | None) -> torch.Tensor:
    """The LM loss of a collated batch; with ``prefix`` (token ids ``[k]``) the batch continues that prefix,
    which runs once without gradients and enters as a key/value cache."""
    if prefix is None or not len(prefix):
        return model(**batch).loss
    with torch.no_grad():
        cache = model(input_ids=prefix[None], use_cache=True).past_key_values
    n = batch["input_ids"].shape[0]
    cache.batch_repeat_interleave(n)
    mask = torch.cat([torch.ones(n, len(prefix), dtype=batch["attention_mask"].dtype,
                                 device=prefix.device), batch["attention_mask"]], dim=1)
    return model(input_ids=batch["input_ids"], attention_mask=mask, labels=batch["labels"],
                 past_key_values=cache, use_cache=True).loss


def length_batches(examples: Sequence[tuple[list[int], int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of indices of similar length (little padding), in random order."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]) + rng.random())
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def select_trainable(model: torch.nn.Module, train_layers: int) -> int:
    """Freeze all but the top ``train_layers`` blocks and the final norm; returns trainable parameters."""
    if train_layers <= 0:
        for p in model.parameters():
            p.requires_grad_(True)
        return sum(p.numel() for p in model.parameters())
    blocks = _blocks(model)
    if blocks is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}; use train_layers=0")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(blocks[-train_layers:])
    norm = getattr(getattr(model, "model", None), "norm", None) or getattr(getattr(model, "transformer", None), "ln_f", None)
    if norm is not None:
        trainable.append(norm)
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def add_lora(model: torch.nn.Module, rank: int, alpha: float, dropout: float) -> tuple[torch.nn.Module, int]:
    """Wrap ``model`` in ``peft`` LoRA adapters on all its linear projections (not the output head); only
    the adapters are trainable. Returns the wrapped model and its trainable parameter count."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                        bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (what a resume state needs; frozen weights come from the base)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _blocks(model: torch.nn.Module) -> Sequence[torch.nn.Module] | None:
    """The list of transformer blocks of a Llama-style (``model.layers``) or GPT-2-style (``transformer.h``) LM."""
    for owner, attr in (("model", "layers"), ("transformer", "h")):
        blocks = getattr(getattr(model, owner, None), attr, None)
        if blocks is not None:
            return blocks
    return None


def mean_loss(model: torch.nn.Module, examples: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int,
              device: torch.device) -> float:
    """Token-averaged loss on the solution tokens of ``examples`` (no gradients)."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / max(count, 1)


def resume_path(name: str) -> Path:
    """Where the resume state of the training of checkpoint ``name`` lives: ``<cache>/resume/<name>/state.pt``."""
    from ensemble.models.cache import cache_dir

    return cache_dir() / "resume" / name / "state.pt"


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a kill while writing leaves the previous state intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_resume(path: Path, cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The saved state of an interrupted run with the same settings, else ``None``."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state if state.get("key") == cfg.resume_key() else None


def finetune(cfg: FinetuneConfig, progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` on training problems and save it as ``cfg.name``; resumes a killed run.

    Args:
        cfg: settings.
        progress: ``progress(total_steps)`` returns a tqdm-like object (``update``, ``set_postfix``,
            ``close``; a resumed run starts it at the resumed step); ``None`` trains silently.

    Returns:
        The training report (also saved as ``training.json`` in the checkpoint).
    """
    from ensemble.models.load import load_causal_lm, torch_device
    from ensemble.models.offline import save_project_checkpoint
    from ensemble.tasks.math.task import MathTask

    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    start = time.time()
    device = torch_device(cfg.device)
    model, tokenizer = load_causal_lm(cfg.base, device=device, dtype=torch.float32)
    torch.manual_seed(cfg.seed)  # after loading: building a model may reseed (dropout draws must not depend on it)
    task = MathTask(annotations=cfg.annotations, shots=cfg.shots)
    problems = task.problems(cfg.n_problems, cfg.seed, split="train")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pairs = training_pairs(problems, lambda q: task.prompt({"question": q}, tokenizer), task.render,
                           tokenizer.eos_token or "")
    examples = encode_pairs(tokenizer, pairs, cfg.max_length)
    n_held = max(1, int(len(examples) * cfg.held_out))
    held, train = examples[:n_held], examples[n_held:]
    prefix_ids, train = split_shared_prefix(train) if cfg.cache_prefix else ([], train)
    prefix = torch.tensor(prefix_ids, dtype=torch.long, device=device) if prefix_ids else None
    if cfg.lora_rank:
        model, n_trainable = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    else:
        n_trainable = select_trainable(model, cfg.train_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    order = [idx for _ in range(cfg.epochs) for idx in length_batches(train, cfg.batch_size, rng)]
    steps = len(order)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / max(cfg.warmup, 1), max(0.0, (steps - s) / max(steps - cfg.warmup, 1)))
    )
    saved_at = resume_path(cfg.name)
    resumed = _load_resume(saved_at, cfg)
    if resumed is not None:
        unexpected = model.load_state_dict(resumed["model"], strict=False).unexpected_keys
        if unexpected:
            raise RuntimeError(f"resume state {saved_at} does not fit the model (unexpected {unexpected[:3]}); delete it")
        optimiser.load_state_dict(resumed["optimiser"])
        schedule.load_state_dict(resumed["schedule"])
        torch.set_rng_state(resumed["torch_rng"])
        losses, loss_before, done = resumed["losses"], resumed["loss_before"], resumed["step"]
    else:
        losses, loss_before, done = [], mean_loss(model, held, pad_id, cfg.batch_size, device), 0
    bar = progress(steps) if progress else None
    if bar is not None and done:
        bar.update(done)
    model.train()
    for step in range(done, steps):
        batch = {k: v.to(device) for k, v in collate([train[i] for i in order[step]], pad_id).items()}
        loss = batch_loss(model, batch, prefix)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            _save_resume(saved_at, {"key": cfg.resume_key(), "step": step + 1, "model": trainable_state(model),
                                    "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                                    "torch_rng": torch.get_rng_state(), "losses": losses, "loss_before": loss_before})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.lora_rank:  # an ordinary checkpoint: the adapters folded into the weights they adapt
        model = model.merge_and_unload()
    loss_after = mean_loss(model, held, pad_id, cfg.batch_size, device)
    report = {"config": asdict(cfg), "problems": len(problems), "train_examples": len(train), "shared_prefix_tokens": len(prefix_ids),
              "held_out_examples": len(held), "trainable_parameters": n_trainable, "steps": steps,
              "held_out_loss_before": round(loss_before, 4), "held_out_loss_after": round(loss_after, 4),
              "final_train_loss": round(sum(losses[-20:]) / max(len(losses[-20:]), 1), 4),
              "seconds": round(time.time() - start, 1), "prompt": {"shots": cfg.shots, "annotations": cfg.annotations},
              "method": f"lora (rank {cfg.lora_rank}, merged)" if cfg.lora_rank else
                        (f"top {cfg.train_layers} blocks" if cfg.train_layers else "full"),
              "resumed_from_step": done}

    def save(out):
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "training.json").write_text(json.dumps(report, indent=2))

    report["path"] = str(save_project_checkpoint(cfg.name, save, overwrite=True))
    saved_at.unlink(missing_ok=True)
    return report

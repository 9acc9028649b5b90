"""Train the math verifiers offline on CPU in minutes, and save them as project checkpoints.

Each verifier gets its own training problems (reasoning-gym GSM-Symbolic, training split: dataset seeds
``>= TRAIN_SEED_OFFSET``, disjoint from every evaluation seed) and its own mix of examples, so the two
are genuinely different in features, architecture *and* data:

* ``minilm_verifier``: MiniLM embeddings + MLP head; references, perturbations and LM samples;
* ``numeric_verifier``: numeric-consistency features + logistic regression; references and more
  perturbations per problem, and LM samples.

The last 10 % of each verifier's problems are held out; the checkpoint records held-out accuracy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.tasks.math.data import TRAIN_SEED_OFFSET, Problem
from ensemble.tasks.math.task import DEFAULT_SHOTS, MathTask
from ensemble.tasks.math.verifiers.checkpoint import DEFAULT_CHECKPOINTS, save_checkpoint
from ensemble.tasks.math.verifiers.data import (
    Example,
    degenerate_examples,
    lm_samples,
    perturbed_examples,
    reference_examples,
    sample_examples,
)

VERIFIERS = ("minilm_verifier", "numeric_verifier")
"""Verifiers this module trains (scorer registry names)."""


@dataclass
class TrainConfig:
    """Settings of ``ensemble train verifiers``."""

    n_problems: int = 600
    """Training problems per verifier (each verifier draws its own)."""
    seed: int = 0
    """Training seed; verifier i uses GSM-Symbolic training split seed ``seed + i``."""
    lm: str | None = None
    """Causal LM whose samples add examples (``None``: no LM samples)."""
    lm_problems: int = 24
    """Problems per verifier to sample the LM on."""
    lm_samples: int = 4
    """Samples per such problem."""
    epochs: int = 30
    """Passes over the examples."""
    lr: float = 3e-3
    """Adam learning rate."""
    encoder: str = "all-minilm-l6-v2"
    """Text encoder of the MiniLM verifier."""
    window: int = 96
    """Characters of the solution's tail the MiniLM verifier embeds."""
    annotations: bool = False
    """Train on solutions with ``<<expr=value>>`` annotations (match the task's format)."""
    shots: int = DEFAULT_SHOTS
    """Worked examples in the prompt the LM is sampled with (match the generator: 1 for the untuned
    default, 0 for the fine-tuned one)."""
    held_lm_problems: int = 12
    """Held-out problems the LM is also sampled on, to measure how well a verifier separates the LM's
    own right and wrong solutions (``held_out_lm_auc``) — the job it does during decoding."""
    names: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CHECKPOINTS))
    """Checkpoint name (or directory) per verifier."""
    progress: bool = False
    """Show progress bars with ETA (LM sampling, features, epochs) on stderr."""

    def __post_init__(self) -> None:
        if self.n_problems < 10:
            raise ValueError(f"n_problems={self.n_problems} must be at least 10 (10 % are held out)")
        if not 0 <= self.seed < TRAIN_SEED_OFFSET - len(VERIFIERS):
            raise ValueError(f"seed={self.seed} must be in [0, {TRAIN_SEED_OFFSET - len(VERIFIERS)})")


def build_examples(problems: Sequence[Problem], task: MathTask, rng: random.Random, n_perturb: int,
                   samples: Sequence[Sequence[str]] | None = None,
                   sample_problems: Sequence[Problem] = ()) -> list[Example]:
    """References, perturbations and (optionally) LM samples for ``problems``."""
    examples = reference_examples(problems, task.render, rng)
    examples += perturbed_examples(problems, task.render, rng, n_per_problem=n_perturb)
    examples += degenerate_examples(problems, task.render, rng)
    if samples:
        examples += sample_examples(sample_problems, samples, rng)
    return examples


def _bar(iterable: Any, cfg: TrainConfig, desc: str, total: int | None = None) -> Any:
    """``iterable`` with a tqdm bar (ETA) when ``cfg.progress``."""
    if not cfg.progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="it", leave=False)


def _fit(model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], n: int, labels: torch.Tensor,
         epochs: int, lr: float, seed: int, batch: int = 128, bar: Callable[[Any], Any] = lambda it: it) -> None:
    """Adam on class-balanced BCE over example indices ``0..n-1`` (``bar`` wraps the epoch loop)."""
    torch.manual_seed(seed)
    pos = float(labels.sum().clamp_min(1))
    pos_weight = torch.tensor((len(labels) - pos) / pos)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in bar(range(epochs)):
        for idx in torch.randperm(n).split(batch):
            loss = F.binary_cross_entropy_with_logits(forward(idx), labels[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(((logits > 0).float() == labels).float().mean()) if len(labels) else float("nan")


def train_numeric(train: list[Example], held: list[Example], cfg: TrainConfig, seed: int,
                  held_lm: Sequence[Example] = ()) -> tuple[Any, dict]:
    """Fit the numeric verifier; returns ``(NumericModel, metrics)`` (``held_out_lm_*`` on ``held_lm``)."""
    from ensemble.tasks.math.numeric_verifier import NumericModel, featurise

    def feats(exs: list[Example], desc: str = "features") -> torch.Tensor:
        rows = [featurise(e.question, [e.solution]) for e in _bar(exs, cfg, f"[numeric_verifier] {desc}")]
        return torch.cat(rows) if exs else torch.zeros(0)

    x, y = feats(train), torch.tensor([float(e.label) for e in train])
    model = NumericModel(x.shape[1])
    _fit(model, lambda i: model(x[i]), len(train), y, cfg.epochs, cfg.lr * 3, seed,
         bar=lambda it: _bar(it, cfg, "[numeric_verifier] epochs"))
    with torch.no_grad():
        metrics = _metrics("train", model(x), y)
        for prefix, exs in (("held_out", held), ("held_out_lm", list(held_lm))):
            if exs:
                metrics.update(_metrics(prefix, model(feats(exs)), torch.tensor([float(e.label) for e in exs])))
    return model, metrics


def _auc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (probability a random positive outranks a random negative)."""
    pos, neg = logits[labels > 0.5], logits[labels <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def _balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    pred = logits > 0
    pos, neg = labels > 0.5, labels <= 0.5
    parts = [float((pred[m] == (labels[m] > 0.5)).float().mean()) for m in (pos, neg) if m.any()]
    return sum(parts) / len(parts) if parts else float("nan")


def _metrics(prefix: str, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {f"{prefix}_acc": _accuracy(logits, labels), f"{prefix}_balanced_acc": _balanced_accuracy(logits, labels),
            f"{prefix}_auc": _auc(logits, labels)}


def train_minilm(train: list[Example], held: list[Example], cfg: TrainConfig, seed: int,
                 embedder: Any = None, held_lm: Sequence[Example] = ()) -> tuple[Any, Any, dict]:
    """Fit the MiniLM verifier's head on frozen embeddings; returns ``(PairHead, embedder, metrics)``
    (``held_out_lm_*`` on ``held_lm``)."""
    from ensemble.tasks.math.minilm_verifier import MiniLMVerifier, PairHead, TextEmbedder

    embedder = embedder or TextEmbedder(cfg.encoder)
    dim = int(embedder(["x"]).shape[-1])
    torch.manual_seed(seed)
    head = PairHead(dim)

    def inputs(exs: list[Example]) -> tuple[torch.Tensor, ...]:
        parts = [MiniLMVerifier.inputs(embedder, [e.question for e in exs[i : i + 256]],
                                       [e.solution for e in exs[i : i + 256]], cfg.window, head)
                 for i in _bar(range(0, len(exs), 256), cfg, "[minilm_verifier] embeddings")]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))

    x = inputs(train)
    y = torch.tensor([float(e.label) for e in train])
    _fit(head, lambda i: head(*(t[i] for t in x)), len(train), y, cfg.epochs, cfg.lr, seed,
         bar=lambda it: _bar(it, cfg, "[minilm_verifier] epochs"))
    with torch.no_grad():
        metrics = _metrics("train", head(*x), y)
        for prefix, exs in (("held_out", held), ("held_out_lm", list(held_lm))):
            if exs:
                metrics.update(_metrics(prefix, head(*inputs(exs)), torch.tensor([float(e.label) for e in exs])))
    return head, embedder, metrics


def train_verifiers(cfg: TrainConfig, which: Sequence[str] = VERIFIERS, log: Callable[[str], None] = print,
                    embedder: Any = None, lm: tuple[Any, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Train the verifiers named in ``which`` and save their checkpoints.

    Args:
        cfg: the training settings.
        which: verifier names among :data:`VERIFIERS`.
        log: progress messages.
        embedder: a ready text embedder for the MiniLM verifier (tests pass a tiny one).
        lm: a loaded ``(model, tokenizer)`` to sample from instead of loading ``cfg.lm``.

    Returns:
        Per verifier: the checkpoint ``path``, example counts and accuracies.
    """
    unknown = [w for w in which if w not in VERIFIERS]
    if unknown:
        raise ValueError(f"unknown verifier(s) {unknown}; choose from {', '.join(VERIFIERS)}")
    task = MathTask(annotations=cfg.annotations, shots=cfg.shots)
    if cfg.lm and lm is None:
        from ensemble.models import load_causal_lm

        lm = load_causal_lm(cfg.lm)
    report: dict[str, dict[str, Any]] = {}
    for name in which:
        t0 = time.perf_counter()
        seed = cfg.seed + VERIFIERS.index(name)
        rng = random.Random(seed)
        problems = task.problems(cfg.n_problems, seed, split="train")
        n_held = max(1, len(problems) // 10)
        fit_p, held_p = problems[:-n_held], problems[-n_held:]
        samples, sample_p = None, []
        if lm is not None and cfg.lm_problems > 0:
            sample_p = fit_p[: cfg.lm_problems]
            log(f"[{name}] sampling the LM: {len(sample_p)} problems x {cfg.lm_samples}")
            samples = lm_samples(lm[0], lm[1], lambda q: task.prompt(q, lm[1]), sample_p, cfg.lm_samples, seed=seed,
                                 wrap=partial(_bar, cfg=cfg, desc=f"[{name}] LM samples", total=len(sample_p)))
        held_samples, held_sample_p = None, []
        if lm is not None and cfg.held_lm_problems > 0 and cfg.lm_samples > 0:
            held_sample_p = held_p[: cfg.held_lm_problems]
            log(f"[{name}] sampling the LM on held-out problems: {len(held_sample_p)} x {cfg.lm_samples}")
            held_samples = lm_samples(lm[0], lm[1], lambda q: task.prompt(q, lm[1]), held_sample_p, cfg.lm_samples,
                                      seed=seed + 7, wrap=partial(_bar, cfg=cfg, desc=f"[{name}] held-out LM samples",
                                                                   total=len(held_sample_p)))
        n_perturb = 2 if name == "minilm_verifier" else 3
        train = build_examples(fit_p, task, rng, n_perturb, samples, sample_p)
        held = build_examples(held_p, task, rng, n_perturb)
        held_lm = sample_examples(held_sample_p, held_samples, rng, n_prefixes=1) if held_samples else []
        log(f"[{name}] {len(train)} training examples ({sum(e.label for e in train)} positive), {len(held)} held out")
        config: dict[str, Any] = {"type": name, "train": {**asdict(cfg), "problem_seed": seed, "split": "train",
                                                          "n_examples": len(train)}}
        if samples or held_samples:
            from ensemble.models import checkpoint_fingerprint

            config["train"]["lm_fingerprint"] = checkpoint_fingerprint(cfg.lm) if cfg.lm else None  # which training
        if held_lm:
            config["train"]["lm_sample_accuracy"] = sum(e.label for e in held_lm) / len(held_lm)
        if name == "numeric_verifier":
            model, metrics = train_numeric(train, held, cfg, seed, held_lm)
            config["n_features"] = model.linear.in_features
            state = model.state_dict()
        else:
            head, embedder, metrics = train_minilm(train, held, cfg, seed, embedder, held_lm)
            config.update(dim=head.dim, hidden=head.net[0].out_features, n_step=head.n_step,
                          window=cfg.window, encoder=cfg.encoder)
            state = head.state_dict()
        config["metrics"] = metrics
        path = save_checkpoint(cfg.names[name], config, state)
        report[name] = {"path": str(path), "n_examples": len(train), **metrics, "seconds": time.perf_counter() - t0}
        log(f"[{name}] saved {path}: {metrics} in {report[name]['seconds']:.0f}s")
    return report

"""Image generation: class-conditional shapes from a diffusion model guided by CLIP, a classifier and CFG.

Glue only. Items are seeded class labels of the ``easy-vqa`` shapes (``"a red circle"``, 24 classes);
the generator is ``"diffusion"`` (one consensus round per denoising step); the scorers are ``"clip"``
and ``"classifier"``, and classifier-free guidance is the generator's ``cfg_scale``. The answer is the
generated image; the metric is the accuracy of an *independent* evaluation classifier (another seed and
architecture, never a scorer). Over a generated set, :func:`set_metrics` adds Fréchet and kernel
distances on that classifier's penultimate features against real test images (FID-/KID-like) and an
Inception-Score-like ``exp E[KL(p(y|x) ‖ p(y))]``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from ensemble.contracts import Item, Task
from ensemble.tasks.image.data import CLASS_NAMES, prompt

SPLIT_OFFSETS = {"test": 0, "train": 1_000_000}
"""Label-sampling seeds of a split start here (tuning uses ``split="train"``)."""


@dataclass(frozen=True)
class GuidanceConfig:
    """One compared system: which guidance terms act on the sampler.

    Attributes:
        name: row label.
        clip: weight of the CLIP scorer's gradient (0 = scored for the record only).
        classifier: weight of the classifier scorer's gradient.
        cfg: whether classifier-free guidance is on (its scale is a run setting).
    """

    name: str
    clip: float = 0.0
    classifier: float = 0.0
    cfg: bool = False

    @property
    def guided(self) -> bool:
        """Whether any scorer gradient moves the sample."""
        return self.clip > 0 or self.classifier > 0


STANDARD_CONFIGS: dict[str, GuidanceConfig] = {
    "alone": GuidanceConfig("alone"),
    "clip": GuidanceConfig("clip", clip=1.0),
    "cls": GuidanceConfig("cls", classifier=1.0),
    "cfg": GuidanceConfig("cfg", cfg=True),
    "all": GuidanceConfig("all", clip=1.0, classifier=1.0, cfg=True),
}
"""The paper's comparison: generator alone, + CLIP, + classifier, + classifier-free guidance, all."""


@dataclass
class SamplerSettings:
    """Settings shared by every compared system."""

    steps: int = 25
    """DDIM denoising steps (= consensus rounds)."""

    guidance_scale: float = 0.3
    """Multiplier ``s`` of the scorers' summed gradient on x̂₀ (when a system uses scorer guidance)."""

    cfg_scale: float = 2.0
    """Classifier-free guidance weight ``w`` (when a system uses it; otherwise 1 = plain conditional)."""

    clip_weight: float = 0.3
    """Weight of the CLIP gradient when CLIP is on (its gradients are ~3× the classifier's; tuned on the
    train split: a CLIP step of 0.3 × the classifier's keeps samples on the data manifold)."""

    classifier_weight: float = 1.0
    """Weight of the classifier gradient when the classifier is on."""

    clip_scale: float = 16.0
    """CLIP score = ``clip_scale · cos(image, prompt)``; 16 ≈ the learned temperature of the shapes CLIP,
    so its energies are in logit units like the classifier's ``log p``."""

    n_samples: int = 1
    """Images per item."""

    guide: str = "x0"
    """Where the gradient acts: "x0" (predicted clean image) or "xt" (the noisy sample)."""

    eta: float = 1.0
    """DDIM stochasticity: 1 = DDPM-like ancestral sampling (much better samples from the small shapes
    model than deterministic DDIM, eta = 0), seeded per step so runs stay reproducible."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n_samples < 1:
            raise ValueError(f"steps={self.steps} and n_samples={self.n_samples} must be at least 1")
        if min(self.guidance_scale, self.cfg_scale, self.eta, self.clip_weight, self.classifier_weight) < 0 or self.clip_scale <= 0:
            raise ValueError("guidance_scale, cfg_scale, eta and the weights must be >= 0 and clip_scale > 0; got "
                             f"{self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (config hashes, records)."""
        return asdict(self)


class ImageTask(Task):
    """Seeded class labels of the shapes; accuracy of an independent classifier on the generated image.

    Args:
        evaluator: the evaluation classifier (a timm checkpoint name); never use it as a scorer.
        device: where the evaluator runs.
        reference_split: real images the distribution metrics compare against.
    """

    name = "image"
    default_n = 100

    def __init__(self, evaluator: str = "image/shapes-eval-classifier", device: str = "cpu",
                 reference_split: str = "test") -> None:
        self.evaluator_name, self.device, self.reference_split = evaluator, device, reference_split
        self._evaluator: Any = None
        self._reference: Any = None

    def spec(self) -> dict[str, Any]:
        """The task's settings (part of an evaluation's config hash)."""
        return {"name": self.name, "evaluator": self.evaluator_name, "reference_split": self.reference_split}

    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        """``n`` labels, balanced over the 24 classes in seeded order; context ``{"prompt", "label"}``."""
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split={split!r} is not one of {', '.join(SPLIT_OFFSETS)}")
        rng = random.Random(SPLIT_OFFSETS[split] + seed)
        labels: list[int] = []
        while len(labels) < n:
            block = list(range(len(CLASS_NAMES)))
            rng.shuffle(block)
            labels.extend(block)
        return [
            Item(f"image-{split}-{seed}-{i}", {"prompt": prompt(k), "label": k}, k, {"class": CLASS_NAMES[k], "index": i})
            for i, k in enumerate(labels[:n])
        ]

    def answer(self, output: Any, item: Item) -> Any:
        """The generated images ``[B, 3, S, S]`` in ``[-1, 1]`` (``None`` when there are none)."""
        import torch

        return output if isinstance(output, torch.Tensor) and output.dim() == 4 else None

    def metric(self, answer: Any, item: Item) -> float:
        """Fraction of the item's images the evaluation classifier assigns to the item's class."""
        if answer is None:
            return 0.0
        probs = self.classify(answer)[1]
        return float((probs.argmax(-1) == int(item.target)).float().mean())

    # -- evaluation and Serve ---------------------------------------------------------------------
    def settings_for(self, tiny: bool = False) -> dict[str, Any]:
        """Default solver settings; ``tiny``: tiny real UNet, CLIP and classifier built from configs."""
        if not tiny:
            return {}
        return {"unet": "tiny-unet", "clip": "tiny-clip", "classifier": "tiny-image-classifier", "steps": 3}

    def build_solver(self, settings: dict[str, Any] | None = None) -> Any:
        """An :class:`~ensemble.tasks.image.solver.ImageSolver` (models load on the first call)."""
        from ensemble.tasks.image.solver import ImageSolver

        return ImageSolver(self, settings or {})

    def table(self, rows: list[dict[str, Any]], systems: list[str]) -> str:
        """Accuracy ± 95 % interval and the set metrics (FID-/KID-/IS-like) per system."""
        from ensemble.tasks.image.solver import image_table

        return image_table(self, rows, systems)

    def request_model(self) -> Any:
        """``POST /v1/image``: ``{"prompt" | "label", "system", "seed", "n_samples"}``."""
        from ensemble.tasks.image.serve import ImageRequest

        return ImageRequest

    def request_item(self, request: Any) -> tuple[Item, str, int]:
        """The item of a served prompt or class."""
        from ensemble.tasks.image.data import class_index

        label = request.label if request.label is not None else class_index(request.prompt)
        return Item(f"request-{label}", {"prompt": prompt(label), "label": label}, label, {"index": 0}), request.system, request.seed

    def response(self, row: dict[str, Any]) -> dict[str, Any]:
        """The images as PNG (base64), the evaluator's class, each scorer's energy."""
        from ensemble.tasks.image.serve import image_response

        return image_response(row)

    # -- the evaluation classifier -------------------------------------------------------------------

    def evaluator(self) -> tuple[Any, dict[str, Any]]:
        """The loaded evaluation classifier ``(model, info)``."""
        if self._evaluator is None:
            from ensemble.models import load_image_classifier

            self._evaluator = load_image_classifier(self.evaluator_name, device=self.device)
        return self._evaluator

    def classify(self, images: Any) -> tuple[Any, Any]:
        """Penultimate features ``[N, D]`` and class probabilities ``[N, C]`` of images in ``[-1, 1]``."""
        import torch
        import torch.nn.functional as F

        model, info = self.evaluator()
        size = info["size"]
        mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(info["std"]).view(1, -1, 1, 1)
        x = (images.detach().float().cpu() + 1) / 2
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            x = ((x - mean) / std).to(self.device)
            feats = model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)
            probs = model.get_classifier()(feats).softmax(-1)
        return feats.cpu().double(), probs.cpu().double()

    def reference_features(self):
        """Evaluator features ``[M, D]`` of the real images of ``reference_split`` (cached)."""
        if self._reference is None:
            from ensemble.tasks.image.data import load_shapes
            from ensemble.tasks.image.models import IMAGE_SIZE

            images, _ = load_shapes(self.reference_split, IMAGE_SIZE)
            self._reference = self.classify(images)[0]
        return self._reference

    def set_metrics(self, images: Any, labels: Any) -> dict[str, float]:
        """Metrics of a generated set: accuracy, FID-like, KID-like (×100) and IS-like.

        Args:
            images: ``[N, 3, S, S]`` in ``[-1, 1]``.
            labels: ``[N]`` the requested classes.
        """
        import torch

        feats, probs = self.classify(images)
        ref = self.reference_features()
        labels = torch.as_tensor(labels)
        return {
            "accuracy": float((probs.argmax(-1) == labels).double().mean()),
            "fid": frechet_distance(feats, ref),
            "kid": 100.0 * kernel_distance(feats, ref),
            "is": inception_score(probs),
            "n": int(len(labels)),
        }


# -- distribution metrics ------------------------------------------------------------------------------


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to features ``a [N, D]`` and ``b [M, D]`` (FID's formula)."""
    import numpy as np
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(a.shape[1])
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def kernel_distance(a, b) -> float:
    """Unbiased MMD² with KID's cubic polynomial kernel ``(x·y / D + 1)³`` between ``a [N, D]`` and ``b``."""
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    d = a.shape[1]

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    n, m = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(term_a + term_b - 2 * kab.mean())


def inception_score(probs) -> float:
    """``exp E_x[KL(p(y|x) ‖ p(y))]`` of class probabilities ``[N, C]`` (IS's formula, one split)."""
    import torch

    p = torch.as_tensor(probs, dtype=torch.float64).clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


# -- building the compared systems ----------------------------------------------------------------------


def build_scorers(clip: str | Any = "image/shapes-clip", classifier: str | Any = "image/shapes-classifier",
                  settings: SamplerSettings | None = None, device: str = "cpu") -> dict[str, Any]:
    """The two image scorers, ``{"clip": ClipScorer, "classifier": ClassifierScorer}`` (loaded once)."""
    from ensemble.registry import SCORERS

    settings = settings or SamplerSettings()
    return {
        "clip": clip if not isinstance(clip, str) else SCORERS.make("clip", model=clip, device=device,
                                                                    scale=settings.clip_scale),
        "classifier": classifier if not isinstance(classifier, str) else SCORERS.make(
            "classifier", model=classifier, device=device),
    }


def build_system(config: GuidanceConfig, diffusion: Any, scorers: dict[str, Any],
                 settings: SamplerSettings | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """The guided sampler and the scorer ensemble of one compared system.

    Every system is scored by both scorers (so each round records every scorer's energy); the weights
    decide which gradients move the sample, and unguided systems do not ask for gradients at all.

    Args:
        config: the system.
        diffusion: a diffusion model name or a loaded ``(unet, scheduler)`` pair (load once, share).
        scorers: from :func:`build_scorers`.
        settings: steps and scales.
        device: torch device of the sampler.

    Returns:
        ``(DiffusionGenerator, ScorerEnsemble)``.
    """
    from ensemble.aggregate import ScorerEnsemble
    from ensemble.config import EnsembleConfig
    from ensemble.generators.diffusion import DiffusionGenerator

    settings = settings or SamplerSettings()
    generator = DiffusionGenerator(
        diffusion,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale if config.guided else 0.0,
        cfg_scale=settings.cfg_scale if config.cfg else 1.0,
        n_samples=settings.n_samples,
        guide=settings.guide,
        eta=settings.eta,
        class_names=list(CLASS_NAMES),
        device=device,
    )
    weights = {"clip": config.clip * settings.clip_weight, "classifier": config.classifier * settings.classifier_weight}
    return generator, ScorerEnsemble(scorers, EnsembleConfig(weights={k: weights[k] for k in scorers}))

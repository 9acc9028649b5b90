"""Train the small image-generation models on the ``easy-vqa`` shapes, offline, on a CPU in minutes.

No pretrained diffusion or CLIP weights exist offline, so the image task trains its own:

1. ``image/shapes-unet``: a class-conditional diffusers ``UNet2DModel`` (16 px, 24 classes + a null
   class, label dropout for classifier-free guidance) with a cosine-schedule ``DDPMScheduler``;
2. ``image/shapes-classifier``: timm ``test_efficientnet`` on the 24 classes (the *scorer*),
   noise-augmented so its gradient still points somewhere on the blurry x̂₀ of early steps;
3. ``image/shapes-clip``: a small open_clip CLIP (16 px ViT, 2-layer text tower) trained
   contrastively on (image, ``"a red circle"``);
4. ``image/shapes-eval-classifier``: timm ``test_resnet``, another seed and architecture, used only by
   the metric (accuracy and the Fréchet / KID / IS features), never as a scorer.

Each is saved with :func:`ensemble.models.save_project_checkpoint` in its library's own format, so
``load_diffusion`` / ``load_image_classifier`` / ``load_clip`` (and the scorers) load it by name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble.tasks.image.data import CLASS_NAMES, load_shapes, prompt

CHECKPOINTS: dict[str, str] = {
    "unet": "image/shapes-unet",
    "classifier": "image/shapes-classifier",
    "clip": "image/shapes-clip",
    "eval_classifier": "image/shapes-eval-classifier",
}
"""Model role → project checkpoint name."""

IMAGE_SIZE = 16
"""Side of the generated images (and of the diffusion model's training images)."""

CLASSIFIER_SIZE = 32
"""Input side of the two classifiers (the scorer resizes 16 px samples up)."""

CLIP_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 3, "width": 64, "head_width": 32, "patch_size": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""open_clip config of ``image/shapes-clip``."""


@dataclass
class ImageTrainConfig:
    """Budgets of :func:`train_image_models` (defaults, one CPU thread: classifiers ~25 s each, CLIP ~45 s,
    UNet ~9 min)."""

    unet_steps: int = 1500
    """Optimiser steps of the diffusion model."""

    classifier_steps: int = 600
    """Optimiser steps of each classifier."""

    clip_steps: int = 800
    """Optimiser steps of the CLIP model."""

    batch_size: int = 64
    """Images per step."""

    seed: int = 0
    """Training seed (the evaluation classifier uses ``seed + 1``)."""

    label_dropout: float = 0.15
    """Fraction of diffusion training labels replaced by the null class (classifier-free guidance)."""

    overwrite: bool = True
    """Replace existing checkpoints."""

    def __post_init__(self) -> None:
        for name in ("unet_steps", "classifier_steps", "clip_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout={self.label_dropout} must be in [0, 1)")


def _batches(n: int, batch_size: int, steps: int, gen):
    import torch

    for _ in range(steps):
        yield torch.randint(0, n, (batch_size,), generator=gen)


def _flip(images, gen):
    """Random horizontal flips (shapes and colours keep their label)."""
    import torch

    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


# -- 1. diffusion model --------------------------------------------------------------------------------


def build_unet(num_classes: int = len(CLASS_NAMES)):
    """The untrained class-conditional UNet (class ``num_classes`` = null) and its DDPM scheduler."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=16,
        num_class_embeds=num_classes + 1,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return unet, scheduler


def train_unet(cfg: ImageTrainConfig, log=print) -> dict[str, Any]:
    """Train the diffusion model (epsilon prediction, MSE) and save ``image/shapes-unet``."""
    import torch
    import torch.nn.functional as F

    from ensemble.models import save_project_checkpoint

    images, labels = load_shapes("train", IMAGE_SIZE)
    unet, scheduler = build_unet()
    null = len(CLASS_NAMES)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=cfg.unet_steps, pct_start=max(0.05, 3 / cfg.unet_steps))
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    t0, losses = time.perf_counter(), []
    unet.train()
    for step, idx in enumerate(_batches(len(images), cfg.batch_size, cfg.unet_steps, gen)):
        x0 = _flip(images[idx], gen)
        y = torch.where(torch.rand(len(idx), generator=gen) < cfg.label_dropout, null, labels[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        pred = unet(scheduler.add_noise(x0, noise, t), t, class_labels=y).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay) if v.dtype.is_floating_point else ema[k].copy_(v)
        losses.append(loss.item())
        if (step + 1) % 250 == 0:
            log(f"unet step {step + 1}/{cfg.unet_steps} loss {sum(losses[-250:]) / 250:.4f} "
                f"({time.perf_counter() - t0:.0f}s)")
    unet.load_state_dict(ema)
    unet.eval()

    def save(out: Path) -> None:
        unet.save_pretrained(out / "unet")
        scheduler.save_pretrained(out / "scheduler")
        index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                 "scheduler": ["diffusers", "DDPMScheduler"], "label_names": list(CLASS_NAMES)}
        (out / "model_index.json").write_text(json.dumps(index, indent=2))

    path = save_project_checkpoint(CHECKPOINTS["unet"], save, overwrite=cfg.overwrite)
    return {"path": str(path), "final_loss": sum(losses[-100:]) / min(100, len(losses)),
            "seconds": time.perf_counter() - t0, "steps": cfg.unet_steps}


# -- 2. classifiers --------------------------------------------------------------------------------------


def train_classifier(cfg: ImageTrainConfig, role: str = "classifier", log=print) -> dict[str, Any]:
    """Train the scorer classifier (``role="classifier"``) or the evaluation one (``"eval_classifier"``).

    Inputs are the 16 px training images resized to 32 px, normalised with mean = std = 0.5. The scorer
    is trained with Gaussian noise and blur augmentation (its gradients are taken on blurry x̂₀
    estimates); the evaluation classifier on clean images, with another seed and architecture.
    """
    import timm
    import torch
    import torch.nn.functional as F
    from timm.models import save_for_hf

    if role not in ("classifier", "eval_classifier"):
        raise ValueError(f"role={role!r} must be 'classifier' or 'eval_classifier'")
    scorer = role == "classifier"
    seed = cfg.seed if scorer else cfg.seed + 1
    images, labels = load_shapes("train", IMAGE_SIZE)
    test_images, test_labels = load_shapes("test", IMAGE_SIZE)
    torch.manual_seed(seed)
    arch = "test_efficientnet" if scorer else "test_resnet"
    model = timm.create_model(arch, pretrained=False, num_classes=len(CLASS_NAMES))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=cfg.classifier_steps,
                                                pct_start=max(0.1, 3 / cfg.classifier_steps))
    t0 = time.perf_counter()
    model.train()
    for step, idx in enumerate(_batches(len(images), cfg.batch_size, cfg.classifier_steps, gen)):
        x = _flip(images[idx], gen)
        if scorer:
            x = _degrade(x, gen)
        loss = F.cross_entropy(model(classifier_input(x)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 200 == 0:
            log(f"{role} step {step + 1}/{cfg.classifier_steps} loss {loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        accuracy = float((model(classifier_input(test_images)).argmax(-1) == test_labels).float().mean())
    log(f"{role} ({arch}) test accuracy {accuracy:.3f}")
    data_config = {"input_size": (3, CLASSIFIER_SIZE, CLASSIFIER_SIZE), "mean": (0.5, 0.5, 0.5),
                   "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "interpolation": "bilinear"}

    def save(out: Path) -> None:
        save_for_hf(model, str(out), safe_serialization=True, model_config={"label_names": list(CLASS_NAMES)},
                    data_config=data_config)

    from ensemble.models import save_project_checkpoint

    path = save_project_checkpoint(CHECKPOINTS[role], save, overwrite=cfg.overwrite)
    return {"path": str(path), "arch": arch, "test_accuracy": accuracy, "seconds": time.perf_counter() - t0,
            "steps": cfg.classifier_steps}


def classifier_input(images):
    """``[N, 3, 16, 16]`` images in ``[-1, 1]`` → the classifiers' 32 px normalised input."""
    import torch.nn.functional as F

    return F.interpolate(images, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear", align_corners=False)


def _degrade(x, gen):
    """Noise and blur augmentation: half the batch gets N(0, σ²), σ ~ U(0, 0.6), a quarter a 3×3 blur."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    sigma = torch.rand(n, generator=gen).view(-1, 1, 1, 1) * 0.6
    noisy = torch.rand(n, generator=gen).view(-1, 1, 1, 1) < 0.5
    x = torch.where(noisy, x + sigma * torch.randn(x.shape, generator=gen), x)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    blur = torch.rand(n, generator=gen).view(-1, 1, 1, 1) < 0.25
    return torch.where(blur, blurred, x).clamp(-1.5, 1.5)


# -- 3. CLIP ----------------------------------------------------------------------------------------------


def train_clip(cfg: ImageTrainConfig, log=print) -> dict[str, Any]:
    """Train the small CLIP contrastively and save ``image/shapes-clip``.

    The loss is CLIP's symmetric InfoNCE over a batch whose texts are the class prompts; images of the
    same class share a text, so the image → text direction contrasts each image with all 24 prompts and
    the text → image direction averages over an image's same-class positives.
    """
    import open_clip
    import safetensors.torch
    import torch
    import torch.nn.functional as F
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    images, labels = load_shapes("train", IMAGE_SIZE)
    test_images, test_labels = load_shapes("test", IMAGE_SIZE)
    torch.manual_seed(cfg.seed)
    model = open_clip.CLIP(CLIP_MODEL_CFG["embed_dim"], CLIPVisionCfg(**CLIP_MODEL_CFG["vision_cfg"]),
                           CLIPTextCfg(**CLIP_MODEL_CFG["text_cfg"]))
    tokenizer = open_clip.SimpleTokenizer(context_length=CLIP_MODEL_CFG["text_cfg"]["context_length"])
    tokens = tokenizer([prompt(k) for k in range(len(CLASS_NAMES))])
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=cfg.clip_steps,
                                                pct_start=max(0.1, 3 / cfg.clip_steps))
    t0 = time.perf_counter()
    model.train()
    for step, idx in enumerate(_batches(len(images), cfg.batch_size, cfg.clip_steps, gen)):
        x, y = _flip(images[idx], gen), labels[idx]
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T  # [B, 24]
        same = (y[:, None] == y[None, :]).float()
        per_pair = logits[:, y]  # [B, B]: image i vs text of image j
        loss_t = -(F.log_softmax(per_pair.T, -1) * same / same.sum(-1, keepdim=True)).sum(-1).mean()
        loss = 0.5 * (F.cross_entropy(logits, y) + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if (step + 1) % 200 == 0:
            log(f"clip step {step + 1}/{cfg.clip_steps} loss {loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        pred = (F.normalize(model.encode_image(test_images), dim=-1) @ txt.T).argmax(-1)
        accuracy = float((pred == test_labels).float().mean())
    log(f"clip zero-shot test accuracy {accuracy:.3f}")

    def save(out: Path) -> None:
        safetensors.torch.save_file(model.state_dict(), str(out / "open_clip_model.safetensors"))
        config = {"model_cfg": CLIP_MODEL_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
        (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))

    from ensemble.models import save_project_checkpoint

    path = save_project_checkpoint(CHECKPOINTS["clip"], save, overwrite=cfg.overwrite)
    return {"path": str(path), "zero_shot_accuracy": accuracy, "seconds": time.perf_counter() - t0,
            "steps": cfg.clip_steps}


TRAINERS = {
    "unet": train_unet,
    "classifier": lambda cfg, log=print: train_classifier(cfg, "classifier", log),
    "eval_classifier": lambda cfg, log=print: train_classifier(cfg, "eval_classifier", log),
    "clip": train_clip,
}
"""Model role → trainer ``(cfg, log) → report``."""


def train_image_models(cfg: ImageTrainConfig, only: list[str] | None = None, log=print) -> dict[str, dict]:
    """Train the models named in ``only`` (default: all four), one after the other.

    Returns:
        Role → report (``path``, ``seconds``, a quality number: loss or held-out accuracy).
    """
    roles = list(TRAINERS) if only is None else list(only)
    unknown = [r for r in roles if r not in TRAINERS]
    if unknown:
        raise ValueError(f"unknown image models {unknown}; choose from {', '.join(TRAINERS)}")
    return {role: TRAINERS[role](cfg, log=log) for role in roles}


def missing_models() -> list[str]:
    """Roles whose checkpoint is not in the cache yet."""
    from ensemble.models import find_project_checkpoint

    return [role for role, name in CHECKPOINTS.items() if find_project_checkpoint(name) is None]

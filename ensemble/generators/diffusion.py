"""The gradient rule inside a diffusion sampler: every denoising step is one consensus round.

At step ``k`` (timestep ``t``) the UNet predicts the noise ``ε`` of ``x_t`` — with classifier-free
guidance, ``ε = ε(x_t, ∅) + w·(ε(x_t, y) − ε(x_t, ∅))`` — and the generator proposes the predicted
clean image ``x̂₀ = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t`` (or ``x_t`` itself) with ``need_grad=True``. The
scorers (CLIP, a classifier, …) rate it; the ensemble's summed gradient ``g = Σₙ wₙ ∇ scoreₙ`` moves
the sample before the scheduler step:

* ``guide="x0"`` (default): ``x̂₀ ← x̂₀ + s·g``, i.e. ``ε ← ε − s·√ᾱ_t / √(1−ᾱ_t)·g`` — the scorers
  judge a clean-looking image, so scorers trained on clean images give useful gradients;
* ``guide="xt"``: classifier guidance (Dhariwal & Nichol): ``ε ← ε − s·√(1−ᾱ_t)·g`` with ``g`` taken
  at the noisy ``x_t`` (scorers should then be noise-aware).

Then ``x_{t−1} = DDIM(ε, t, x_t)``. Classifier-free guidance is the paper's third "scorer"; it is a
term of the generator here (``cfg_scale`` ``w``), because it is not a function of the proposed image:
it needs the generator's own conditional and unconditional noise predictions at ``x_t``. Its size each
step (``‖ε_c − ε_u‖``, RMS) is recorded in the round's ``info["cfg"]``.

The state is picklable — ``(x_t, step index, seed, label)`` — so a run resumes on any worker.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ensemble.contracts import Generator, Proposal

GUIDE_MODES = ("x0", "xt")


@dataclass
class DiffusionState:
    """Picklable state: samples ``x`` = ``x_t`` (``[B, 3, S, S]``, float32), steps done, seed, class."""

    x: torch.Tensor
    step: int = 0
    seed: int = 0
    label: int | None = None


@dataclass
class DiffusionProposal(Proposal):
    """A proposal that also carries the step's noise prediction ``eps`` and timestep ``t`` for refine."""

    eps: torch.Tensor | None = None
    t: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class DiffusionGenerator(Generator):
    """DDIM sampling of a diffusers UNet, guided each step by the ensemble's summed gradient.

    Args:
        model: a diffusion model name for :func:`ensemble.models.load_diffusion` (``"image/shapes-unet"``,
            ``"tiny-unet"``, a folder …) or a loaded ``(unet, scheduler)`` pair.
        steps: denoising steps (= consensus rounds).
        guidance_scale: ``s``, the multiplier of the ensemble's summed gradient (0 = unguided: the
            scorers only rate the samples, for the record).
        cfg_scale: ``w`` of classifier-free guidance; 1 = plain conditional model, 0 = unconditional,
            > 1 = guided. Needs a class-conditional UNet whose last class embedding is the null class.
        n_samples: images generated per context (the proposal's candidates).
        guide: ``"x0"`` (gradient on the predicted clean image) or ``"xt"`` (on the noisy sample).
        eta: DDIM stochasticity (0 = deterministic given the seed).
        grad_clip: if set, each sample's guidance step ``s·g`` is rescaled to at most this RMS per pixel.
        class_names: class names, so a context may name its class (read from the checkpoint if absent).
        device: torch device; dtype: the UNet's parameter dtype (``None`` = float32).
    """

    update_rule = "gradient"
    modality = "image"

    def __init__(
        self,
        model: str | tuple[Any, Any] = "image/shapes-unet",
        steps: int = 25,
        guidance_scale: float = 0.0,
        cfg_scale: float = 1.0,
        n_samples: int = 1,
        guide: str = "x0",
        eta: float = 0.0,
        grad_clip: float | None = None,
        class_names: list[str] | None = None,
        device: str = "cpu",
        dtype: Any = None,
    ) -> None:
        if steps < 1 or n_samples < 1 or guidance_scale < 0 or cfg_scale < 0 or eta < 0:
            raise ValueError(
                f"need steps >= 1, n_samples >= 1, guidance_scale >= 0, cfg_scale >= 0, eta >= 0; got "
                f"steps={steps}, n_samples={n_samples}, guidance_scale={guidance_scale}, cfg_scale={cfg_scale}, eta={eta}"
            )
        if guide not in GUIDE_MODES:
            raise ValueError(f"guide={guide!r} is not one of {', '.join(GUIDE_MODES)}")
        from diffusers import DDIMScheduler

        from ensemble.models import torch_device, torch_dtype

        if isinstance(model, str):
            from ensemble.models import load_diffusion

            unet, scheduler = load_diffusion(model, device=device, dtype=dtype)
            class_names = class_names or _checkpoint_class_names(model)
        else:
            unet, scheduler = model
        self.device, self.dtype = torch_device(device), torch_dtype(device, dtype)
        first = next(unet.parameters())
        if first.device != self.device or first.dtype != self.dtype:  # (a no-op .to() makes diffusers warn)
            unet = unet.to(self.device, self.dtype)
        self.unet = unet.eval()
        for p in self.unet.parameters():
            p.requires_grad_(False)
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        self.scheduler.set_timesteps(steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        self.alphas_cumprod = self.scheduler.alphas_cumprod.double()
        num_embeds = self.unet.config.num_class_embeds
        self.null_label = None if num_embeds is None else int(num_embeds) - 1
        if self.null_label is None and cfg_scale != 1.0:
            raise ValueError("cfg_scale != 1 needs a class-conditional UNet with a null class (num_class_embeds)")
        self.steps, self.guidance_scale, self.cfg_scale = steps, float(guidance_scale), float(cfg_scale)
        self.n_samples, self.guide, self.eta, self.grad_clip = n_samples, guide, float(eta), grad_clip
        self.class_names = list(class_names) if class_names else None
        size = self.unet.config.sample_size
        self.shape = (self.unet.config.in_channels, *((size, size) if isinstance(size, int) else size))

    # -- the contract ------------------------------------------------------------------------------------

    def init_state(self, context: Any, seed: int) -> DiffusionState:
        """Pure noise ``x_T`` ``[n_samples, C, S, S]`` from ``seed``; the class from ``context``."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((self.n_samples, *self.shape), generator=gen) * self.scheduler.init_noise_sigma
        return DiffusionState(x=x.to(self.device), step=0, seed=seed, label=self.label(context))

    def propose(self, state: DiffusionState, context: Any) -> DiffusionProposal:
        """Predict the noise (with CFG) and propose ``x̂₀`` (or ``x_t``), asking for gradients when guided."""
        t = self.timesteps[state.step]
        eps, cfg_rms = self.predict_noise(state.x, t, state.label)
        if self.guide == "x0":
            a = float(self.alphas_cumprod[t])
            candidates = ((state.x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
        else:
            candidates = state.x
        return DiffusionProposal(
            candidates=candidates.detach(), need_grad=self.guidance_scale > 0, eps=eps, t=t,
            info={"t": t}, extra={"cfg": cfg_rms},
        )

    def refine(self, state: DiffusionState, proposal: DiffusionProposal, feedback: Any) -> DiffusionState:
        """Shift the noise prediction by the summed scorer gradient, then take one DDIM step."""
        eps, t = proposal.eps, proposal.t
        if self.guidance_scale > 0:
            if feedback.grad is None:
                raise RuntimeError(
                    "guidance_scale > 0 but no differentiable scorer returned a gradient this round "
                    f"(missing: {feedback.missing or 'none'})"
                )
            eps = eps - self._eps_shift(feedback.grad.to(eps.device, eps.dtype), t)
        gen = torch.Generator().manual_seed(state.seed * 1_000_003 + state.step) if self.eta > 0 else None
        x = self.scheduler.step(eps, t, state.x, eta=self.eta, generator=gen).prev_sample
        return DiffusionState(x=x.detach(), step=state.step + 1, seed=state.seed, label=state.label)

    def is_done(self, state: DiffusionState) -> bool:
        """Done after ``steps`` denoising steps."""
        return state.step >= len(self.timesteps)

    def output(self, state: DiffusionState) -> torch.Tensor:
        """The samples ``[B, C, S, S]`` in ``[-1, 1]`` (``x_0`` once done)."""
        return state.x.clamp(-1, 1)

    def describe(self, state: DiffusionState, proposal: Any, feedback: Any) -> dict[str, Any]:
        """Step, timestep, the guidance gradient's RMS and the CFG term's RMS."""
        grad = getattr(feedback, "grad", None)
        rms = float(grad.pow(2).mean().sqrt()) if grad is not None and self.guidance_scale > 0 else 0.0
        return {"step": state.step, "t": getattr(proposal, "t", None), "grad_rms": rms,
                **getattr(proposal, "extra", {})}

    # -- pieces ------------------------------------------------------------------------------------------

    def label(self, context: Any) -> int | None:
        """The class index named by ``context`` (``{"label": int | name}``, an int, or ``None``)."""
        label = context.get("label") if isinstance(context, dict) else context
        if label is None or self.null_label is None:
            return None
        if isinstance(label, str):
            if not self.class_names or label not in self.class_names:
                raise ValueError(f"class {label!r} is unknown to this diffusion model; classes: {self.class_names}")
            label = self.class_names.index(label)
        if not 0 <= int(label) < self.null_label:
            raise ValueError(f"label {label} is outside [0, {self.null_label - 1}] (class {self.null_label} is the null class)")
        return int(label)

    @torch.no_grad()
    def predict_noise(self, x: torch.Tensor, t: int, label: int | None) -> tuple[torch.Tensor, float]:
        """``ε`` at ``(x, t)`` with classifier-free guidance; also the RMS of ``w·(ε_c − ε_u)``."""
        n = x.shape[0]
        xin = x.to(self.dtype)
        tt = torch.full((n,), t, device=self.device, dtype=torch.long)
        if self.null_label is None:
            return self.unet(xin, tt).sample.float(), 0.0
        cond = torch.full((n,), self.null_label if label is None else label, device=self.device, dtype=torch.long)
        if self.cfg_scale == 1.0 or label is None:
            return self.unet(xin, tt, class_labels=cond).sample.float(), 0.0
        null = torch.full_like(cond, self.null_label)
        out = self.unet(torch.cat([xin, xin]), torch.cat([tt, tt]), class_labels=torch.cat([cond, null])).sample.float()
        eps_c, eps_u = out[:n], out[n:]
        delta = self.cfg_scale * (eps_c - eps_u)
        return eps_u + delta, float(delta.pow(2).mean().sqrt())

    def _eps_shift(self, grad: torch.Tensor, t: int) -> torch.Tensor:
        """How much the noise prediction moves for the summed gradient ``grad`` at timestep ``t``."""
        a = float(self.alphas_cumprod[t])
        step = self.guidance_scale * grad
        if self.grad_clip is not None:
            rms = step.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
            step = step * (self.grad_clip / rms).clamp(max=1.0).view(-1, *([1] * (step.dim() - 1)))
        if self.guide == "x0":  # x̂₀ ← x̂₀ + step  ⇔  ε ← ε − √ᾱ/√(1−ᾱ)·step
            return math.sqrt(a) / math.sqrt(1 - a) * step
        return math.sqrt(1 - a) * step  # classifier guidance on x_t


def _checkpoint_class_names(name: str) -> list[str] | None:
    """``label_names`` stored in a diffusion checkpoint's ``model_index.json`` (if any)."""
    from ensemble.models import resolve

    try:
        path = resolve(name, "diffusion").path
        names = json.loads((path / "model_index.json").read_text()).get("label_names")
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None

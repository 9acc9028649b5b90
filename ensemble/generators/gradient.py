"""The gradient rule on a free tensor: the state is moved by the summed scorer gradients each round.

``x ← x + step_size · Σₙ wₙ ∇ₓ scoreₙ(x) (+ Langevin noise)``. This is the image task's update in its
simplest form (the diffusion generator applies the same step inside every denoising step); with a
free tensor it is also how scorer ensembles are probed and benchmarked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ensemble.contracts import Generator, Proposal


@dataclass
class GradientState:
    """Picklable state: the current samples ``x`` (``[B, ...]``) and the step count."""

    x: torch.Tensor
    step: int = 0
    seed: int = 0


class GradientGenerator(Generator):
    """Gradient ascent (or Langevin dynamics) of a tensor on the ensemble's summed score.

    Args:
        shape: shape of the state ``[B, ...]`` when the context gives no ``init``.
        steps: rounds before the generator is done.
        step_size: multiplier of the summed gradient.
        noise: Langevin noise scale (0 = plain gradient ascent).
        init_std: std of the random initial state.
        normalise_grad: rescale each sample's summed gradient to unit norm before the step.
        device: torch device of the state.
    """

    update_rule = "gradient"

    def __init__(
        self,
        shape: tuple[int, ...] = (1, 2),
        steps: int = 50,
        step_size: float = 0.1,
        noise: float = 0.0,
        init_std: float = 1.0,
        normalise_grad: bool = False,
        device: str = "cpu",
    ) -> None:
        if steps < 1 or step_size <= 0 or noise < 0 or init_std < 0:
            raise ValueError(
                f"need steps >= 1, step_size > 0, noise >= 0, init_std >= 0; got steps={steps}, "
                f"step_size={step_size}, noise={noise}, init_std={init_std}"
            )
        self.shape = tuple(shape)
        self.steps = steps
        self.step_size = step_size
        self.noise = noise
        self.init_std = init_std
        self.normalise_grad = normalise_grad
        self.device = torch.device(device)

    def init_state(self, context: Any, seed: int) -> GradientState:
        """Random ``x`` from ``seed``, or ``context["init"]`` when given."""
        if isinstance(context, dict) and "init" in context:
            x = torch.as_tensor(context["init"], dtype=torch.float32)
        else:
            gen = torch.Generator().manual_seed(seed)
            x = torch.randn(self.shape, generator=gen) * self.init_std
        return GradientState(x=x.to(self.device), step=0, seed=seed)

    def propose(self, state: GradientState, context: Any) -> Proposal:
        """The current samples, with gradients requested."""
        return Proposal(candidates=state.x.detach().clone(), need_grad=True)

    def refine(self, state: GradientState, proposal: Proposal, feedback: Any) -> GradientState:
        """Step along the summed gradient of the answering scorers."""
        if feedback.grad is None:
            raise RuntimeError(
                "the gradient rule got no gradient: no differentiable scorer answered this round "
                f"(missing: {feedback.missing or 'none'}; a scorer is differentiable when it sets differentiable=True)"
            )
        g = feedback.grad.to(state.x.device, state.x.dtype)
        if self.normalise_grad:
            norms = g.flatten(1).norm(dim=1).clamp_min(1e-12)
            g = g / norms.view((-1,) + (1,) * (g.dim() - 1))
        x = state.x + self.step_size * g
        if self.noise:
            gen = torch.Generator().manual_seed(state.seed * 1_000_003 + state.step)
            x = x + self.noise * math.sqrt(2 * self.step_size) * torch.randn(x.shape, generator=gen).to(x.device)
        return GradientState(x=x.detach(), step=state.step + 1, seed=state.seed)

    def is_done(self, state: GradientState) -> bool:
        """Done after ``steps`` rounds."""
        return state.step >= self.steps

    def output(self, state: GradientState) -> torch.Tensor:
        """The final samples."""
        return state.x

    def describe(self, state: GradientState, proposal: Proposal, feedback: Any) -> dict[str, Any]:
        """The gradient norm of this round."""
        return {"step": state.step, "grad_norm": float(feedback.grad.norm()) if feedback.grad is not None else None}

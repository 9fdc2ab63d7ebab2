"""Noise schedules and the DDPM/DDIM update as pure functions.

One update covers both samplers (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12):
``eta = 0`` is DDIM, ``eta = 1`` is DDPM's ancestral sampler (exactly, when every training step
is visited), and any step count strides through the training timesteps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative alpha products of the cosine schedule (Nichol & Dhariwal 2021).

    Returns:
        [T] float64 tensor, ``alpha_bar[t] = prod_{i<=t} (1 - beta_i)``.
    """
    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), dim=0)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor):
    """Forward process q(x_t | x_0). x0, noise: [B, ...]; t: [B] integer steps."""
    ab = alphas_cumprod.to(x0.dtype)[t].view(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


@dataclass(frozen=True)
class SamplingStep:
    """Precomputed scalars of one reverse step from timestep ``t`` to ``t_prev``."""

    t: int
    sqrt_ab: float
    sqrt_one_minus_ab: float
    sqrt_ab_prev: float
    dir_coef: float
    sigma: float
    x_coef: float = field(init=False)
    """Weight of x_t in x_{t_prev} once the noise direction is folded in: ``dir_coef / b``."""
    x0_coef: float = field(init=False)
    """Weight of x0 in x_{t_prev}: ``sqrt_ab_prev - dir_coef * sqrt_ab / b``."""

    def __post_init__(self) -> None:
        # Plain fields, not properties: the sampler reads them on every step of every chunk.
        object.__setattr__(self, "x_coef", self.dir_coef / self.sqrt_one_minus_ab)
        object.__setattr__(self, "x0_coef",
                           self.sqrt_ab_prev - self.dir_coef * self.sqrt_ab / self.sqrt_one_minus_ab)


def sampling_steps(alphas_cumprod: torch.Tensor, num_steps: int, eta: float) -> list[SamplingStep]:
    """Reverse-process coefficients for ``num_steps`` strided steps (``"leading"`` spacing).

    Args:
        alphas_cumprod: [T] from the training schedule.
        num_steps: K, 1 <= K <= T.
        eta: 0 for DDIM, 1 for DDPM.
    """
    T = alphas_cumprod.numel()
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_inference_steps={num_steps}; expected 1 <= steps <= {T}")
    stride = T // num_steps
    steps = []
    for k in reversed(range(num_steps)):
        t, t_prev = k * stride, k * stride - stride
        ab = float(alphas_cumprod[t])
        ab_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        var = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        sigma = eta * math.sqrt(max(var, 0.0))
        steps.append(
            SamplingStep(
                t=t,
                sqrt_ab=math.sqrt(ab),
                sqrt_one_minus_ab=math.sqrt(1 - ab),
                sqrt_ab_prev=math.sqrt(ab_prev),
                dir_coef=math.sqrt(max(1 - ab_prev - sigma**2, 0.0)),
                sigma=sigma,
            )
        )
    return steps


def reverse_step(
    x_t: torch.Tensor,
    model_out: torch.Tensor,
    step: SamplingStep,
    prediction_type: str,
    clip_sample: bool,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """One DDIM/DDPM update x_t -> x_{t_prev}. All tensors [B, H, Da].

    Returns:
        (x_{t_prev}, the clean-chunk estimate x0).
    """
    if prediction_type == "epsilon":
        x0 = torch.add(x_t, model_out, alpha=-step.sqrt_one_minus_ab).mul_(1.0 / step.sqrt_ab)
    else:  # "sample"
        x0 = model_out
    if clip_sample:
        x0 = x0.clamp(-1.0, 1.0)
    # x_prev = sqrt_ab_prev * x0 + dir_coef * eps with eps recomputed from the (clipped) x0,
    # i.e. eps = (x_t - sqrt_ab * x0) / b: folded into two fused tensor ops per step.
    x_prev = torch.add(x0 * step.x0_coef, x_t, alpha=step.x_coef)
    if step.sigma > 0 and noise is not None:
        x_prev.add_(noise, alpha=step.sigma)
    return x_prev, x0

"""DPPO chain math: the last k denoising steps as Gaussian policy steps with a fixed noise std.

Ren et al. 2025, "Diffusion Policy Policy Optimization". Each fine-tuned reverse step draws
``x_{j+1} ~ N(mu_theta(x_j, t_j, cond), std^2 I)`` where ``mu_theta`` is the deterministic DDIM
update (``eta = 0``) of the policy's own schedule. With ``std`` fixed, the log-probability of a
recorded chain ``x_0 .. x_k`` (k + 1 latents) is an exact sum of Gaussian terms, which is what PPO
needs. The earlier ``K - k`` steps run the frozen base denoiser deterministically.

For the PPO update, each denoising step is its own action (as in the DPPO paper and its code):
``chain_step_log_probs`` gives one log-probability per step, the mean over the executed part of
the chunk (the first Ta of H rows, all Da features), so each step's ratio is comparable in size
whatever H, Ta and Da are, and rows the env never executes carry no gradient.

Shapes: B batch, k fine-tuned steps, H horizon, Da action features, Dc condition features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from policies.diffusion.schedule import SamplingStep, reverse_step, sampling_steps

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def ddim_steps(alphas_cumprod: torch.Tensor, num_steps: int) -> list[SamplingStep]:
    """The K deterministic DDIM steps (``eta = 0``) whose updates are the Gaussian means."""
    return sampling_steps(alphas_cumprod, num_steps, 0.0)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Log density of an isotropic Gaussian summed over all but the first axis. [B, ...] -> [B].

    Computed in float64: a chain sums thousands of terms, and float32 would lose the 1e-5
    agreement between the recorded and the recomputed log-probabilities.
    """
    z = (x.double() - mean.double()) / std
    per_dim = -0.5 * z * z - math.log(std) - LOG_SQRT_2PI
    return per_dim.flatten(1).sum(1)


def gaussian_entropy(n_dims: int, std: float) -> float:
    """Entropy of an ``n_dims``-dimensional isotropic Gaussian: ``n (0.5 log(2 pi e) + log std)``."""
    return n_dims * (0.5 * math.log(2.0 * math.pi * math.e) + math.log(std))


def step_mean(denoiser: nn.Module, x: torch.Tensor, step: SamplingStep, cond: torch.Tensor,
              prediction_type: str, clip_sample: bool) -> torch.Tensor:
    """The DDIM update of one step: the mean of the Gaussian step. x: [B, H, Da] -> [B, H, Da]."""
    t = torch.full((x.shape[0],), step.t, dtype=torch.long)
    mean, _ = reverse_step(x, denoiser(x, t, cond), step, prediction_type, clip_sample, None)
    return mean


def sample_chain(base: nn.Module, finetuned: nn.Module, steps: list[SamplingStep], k: int,
                 x_start: torch.Tensor, cond: torch.Tensor, std: float, prediction_type: str,
                 clip_sample: bool, deterministic: bool = False,
                 generator: torch.Generator | None = None,
                 noise_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the whole reverse process and record the fine-tuned part of the chain.

    Args:
        base: Frozen denoiser for the first ``K - k`` steps (deterministic DDIM).
        finetuned: Denoiser whose last ``k`` steps are Gaussian with std ``std``.
        steps: The K DDIM steps (``ddim_steps``).
        k: Fine-tuned steps, 1 <= k <= K.
        x_start: [B, H, Da] initial noise.
        cond: [B, Dc] condition.
        std: Fixed noise std of each fine-tuned step (normalized action units).
        prediction_type: ``sample`` or ``epsilon``.
        clip_sample: Clip the clean-chunk estimate at every step.
        deterministic: Use the means (no noise) in the fine-tuned steps.
        generator: Source of the step noise (default: torch's global generator).
        noise_clip: Clip each standard-normal draw to ``[-noise_clip, noise_clip]`` (DPPO clips
            at 3); None draws the plain Gaussian. The log-probability stays the Gaussian one.

    Returns:
        (chain [B, k+1, H, Da]: the input of the first fine-tuned step, then each output; the last
        is the sampled chunk, unclipped), float64 log-probability [B] of the chain under ``finetuned``.
    """
    if not 1 <= k <= len(steps):
        raise ValueError(f"fine-tuned steps k={k}; expected 1 <= k <= K={len(steps)}")
    x = x_start
    with torch.no_grad():
        for step in steps[: len(steps) - k]:
            x = step_mean(base, x, step, cond, prediction_type, clip_sample)
    chain = [x]
    log_prob = torch.zeros(x.shape[0], dtype=torch.float64)
    for step in steps[len(steps) - k:]:
        mean = step_mean(finetuned, x, step, cond, prediction_type, clip_sample)
        if deterministic:
            x = mean
        else:
            eps = torch.randn(mean.shape, generator=generator)
            if noise_clip is not None:
                eps = eps.clamp(-noise_clip, noise_clip)
            x = mean + std * eps
        log_prob = log_prob + gaussian_log_prob(x, mean, std)
        chain.append(x)
    return torch.stack(chain, dim=1), log_prob


def chain_step_means(finetuned: nn.Module, steps: list[SamplingStep], chain: torch.Tensor,
                     cond: torch.Tensor, prediction_type: str, clip_sample: bool) -> torch.Tensor:
    """The Gaussian means of every recorded step, all k steps in one network call.

    Args:
        finetuned: The denoiser being optimized.
        steps: The K DDIM steps.
        chain: [B, k+1, H, Da] as returned by ``sample_chain``.
        cond: [B, Dc].
        prediction_type: ``sample`` or ``epsilon``.
        clip_sample: Clip the clean-chunk estimate.

    Returns:
        [B, k, H, Da] float64: ``mu(x_j, t_j)`` for j = 0 .. k-1, the mean of ``chain[:, j + 1]``.
    """
    B, k1, H, Da = chain.shape
    k = k1 - 1
    if not 1 <= k <= len(steps):
        raise ValueError(f"chain holds k={k} steps; expected 1 <= k <= K={len(steps)}")
    ft = steps[len(steps) - k:]
    x_in = chain[:, :-1].reshape(B * k, H, Da)
    t = torch.tensor([s.t for s in ft], dtype=torch.long).repeat(B)
    out = finetuned(x_in, t, cond.repeat_interleave(k, dim=0))
    # Per-step scalars broadcast over [B*k, 1, 1] rows, ordered like x_in (batch-major).
    def coef(name: str) -> torch.Tensor:
        return torch.tensor([getattr(s, name) for s in ft], dtype=torch.float64).repeat(B).view(-1, 1, 1)

    x_in, out = x_in.double(), out.double()
    if prediction_type == "epsilon":
        x0 = (x_in - coef("sqrt_one_minus_ab") * out) / coef("sqrt_ab")
    else:
        x0 = out
    if clip_sample:
        x0 = x0.clamp(-1.0, 1.0)
    return (coef("x0_coef") * x0 + coef("x_coef") * x_in).view(B, k, H, Da)


def chain_log_prob(finetuned: nn.Module, steps: list[SamplingStep], chain: torch.Tensor,
                   cond: torch.Tensor, std: float, prediction_type: str,
                   clip_sample: bool) -> torch.Tensor:
    """Log-probability of recorded chains under ``finetuned``, all k steps in one network call.

    Args:
        finetuned: The denoiser being optimized.
        steps: The K DDIM steps.
        chain: [B, k+1, H, Da] as returned by ``sample_chain``.
        cond: [B, Dc].
        std: The fixed step std used when sampling.
        prediction_type: ``sample`` or ``epsilon``.
        clip_sample: Clip the clean-chunk estimate.

    Returns:
        [B] float64, the sum over the k steps of ``log N(x_{j+1}; mu(x_j, t_j), std^2 I)``.
    """
    mean = chain_step_means(finetuned, steps, chain, cond, prediction_type, clip_sample)
    return gaussian_log_prob(chain[:, 1:].flatten(0, 1), mean.flatten(0, 1), std).view(mean.shape[:2]).sum(1)


def chain_step_log_probs(finetuned: nn.Module, steps: list[SamplingStep], chain: torch.Tensor,
                         cond: torch.Tensor, std: float, prediction_type: str, clip_sample: bool,
                         n_action_steps: int) -> torch.Tensor:
    """Per-step log-probabilities for PPO, each the mean over the executed elements of its step.

    Args:
        finetuned: The denoiser being optimized.
        steps: The K DDIM steps.
        chain: [B, k+1, H, Da] as returned by ``sample_chain``.
        cond: [B, Dc].
        std: The fixed step std used when sampling.
        prediction_type: ``sample`` or ``epsilon`` (as in ``chain_step_means``).
        clip_sample: Clip the clean-chunk estimate (as in ``chain_step_means``).
        n_action_steps: Ta, the leading rows of the chunk the env executes (1 <= Ta <= H).

    Returns:
        [B, k] float64: ``mean over [:Ta, :] of log N(x_{j+1}; mu(x_j, t_j), std^2)`` per step j.
    """
    H = chain.shape[2]
    if not 1 <= n_action_steps <= H:
        raise ValueError(f"n_action_steps={n_action_steps}; expected 1 <= Ta <= H={H}")
    mean = chain_step_means(finetuned, steps, chain, cond, prediction_type, clip_sample)
    z = (chain[:, 1:, :n_action_steps].double() - mean[:, :, :n_action_steps]) / std
    return (-0.5 * z * z).mean((2, 3)) - math.log(std) - LOG_SQRT_2PI

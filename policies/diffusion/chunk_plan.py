"""What a diffusion chunk's sampler reads of its schedule, built once per schedule, dtype and device.

On a CPU at batch 1 the denoiser's weights flush the caches between steps, so every Python
lookup a chunk makes costs several times its warm cost; one kept plan per key replaces a
schedule lookup and a bounds lookup per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policies.diffusion.schedule import SamplingStep


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """The reverse steps of one chunk, from its first step on, in the forms the sampler uses."""

    steps: tuple[SamplingStep, ...]
    """The schedule's steps the chunk visits, in order."""
    timesteps: tuple[float, ...]
    """Their timesteps, as ``MlpDenoiser.condition`` takes them."""
    scales: tuple[float, ...] | None
    """The clean estimate's weight per step (``x0_coef``), folded into the denoiser's output layer;
    None unless all are positive (a clip to ``[-a, a]`` of ``a * x0`` needs ``a > 0``)."""
    folded: tuple[tuple[int, torch.Tensor, torch.Tensor, float, float], ...]
    """Per step ``(k, -a, a, b, sigma)``: the step's index, the clip bounds of ``a * x0`` as 0-dim
    tensors of the chunk's dtype and device, the weight ``b`` of ``x_t`` and the noise scale."""


def chunk_plan(steps: list[SamplingStep] | tuple[SamplingStep, ...], like: torch.Tensor) -> ChunkPlan:
    """The plan of ``steps`` for chunks of ``like``'s dtype and device.

    The bounds are tensors because ``clamp_`` with 0-dim tensor bounds skips the per-call handling
    of two optional Python numbers (~1.5 us less per step at batch 1 on this CPU) and compares
    the same values bit for bit, as both forms compare in the chunk's dtype
    (``tests/policies/test_mlp_denoiser_fast_path.py``). With ``scales`` None the sampler does not
    fold, and the bounds go unused.
    """
    steps = tuple(steps)
    if not steps:
        raise ValueError("a chunk plan needs at least one step; expected a non-empty schedule")
    scales = tuple(s.x0_coef for s in steps)

    def bound(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=like.dtype, device=like.device)

    return ChunkPlan(
        steps=steps, timesteps=tuple(float(s.t) for s in steps),
        scales=scales if min(scales) > 0 else None,
        folded=tuple((k, bound(-s.x0_coef), bound(s.x0_coef), s.x_coef, s.sigma)
                     for k, s in enumerate(steps)))

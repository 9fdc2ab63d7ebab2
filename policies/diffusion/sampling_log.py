"""What a policy's chunk sampler started from, recorded for on-policy distillation (DAgger).

A one-step student drives the robot into states its teacher's demonstrations never reached, and
there its last chunk (the warm start's tail) is its own, not the demonstration's plan. Recording
each chunk's normalized observation, initial noise and tail lets the teacher label exactly the
inputs the student met (``policies.diffusion.distill.visited_pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SampledChunk:
    """The inputs of one batched chunk call."""

    obs: torch.Tensor
    """[B, To, Do] normalized observations."""
    noise: torch.Tensor
    """[B, H, Da] initial noise."""
    start: int
    """Steps of the K-step schedule skipped by a warm start (0: cold)."""
    tail: torch.Tensor | None
    """[B, H, Da] the last chunk's normalized tail, re-expressed from this chunk's origin, that
    the warm start noised (None: cold)."""

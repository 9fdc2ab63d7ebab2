"""Flow matching (rectified flow) as pure functions.

Liu, Gong & Liu 2022, "Flow Straight and Fast: Learning to Generate and Transfer Data with
Rectified Flow"; Lipman et al. 2023, "Flow Matching for Generative Modeling". Time runs from
``s = 0`` (noise) to ``s = 1`` (data); the path is straight: ``x_s = s * x1 + (1 - s) * x0`` and the
network regresses its constant velocity ``x1 - x0``.
"""

from __future__ import annotations

import torch


def interpolate(x1: torch.Tensor, x0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Point at time ``s`` [B] on the straight path from noise ``x0`` to data ``x1`` ([B, H, Da])."""
    s = s.view(-1, *([1] * (x1.ndim - 1)))
    return s * x1 + (1 - s) * x0


def data_estimate(x: torch.Tensor, v: torch.Tensor, s: float) -> torch.Tensor:
    """Where the current velocity leads at ``s = 1``: ``x + (1 - s) v``."""
    return x + (1.0 - s) * v


def euler_step(x: torch.Tensor, v: torch.Tensor, ds: float) -> torch.Tensor:
    """Explicit Euler: ``x + ds * v``."""
    return x + ds * v


def heun_step(x: torch.Tensor, v: torch.Tensor, v_next: torch.Tensor, ds: float) -> torch.Tensor:
    """Heun's second-order update from the velocities at both ends of the step."""
    return x + 0.5 * ds * (v + v_next)

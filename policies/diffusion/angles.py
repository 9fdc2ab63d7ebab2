"""Angle observation features: an angle enters the state encoder as (sin, cos), never as a number.

A range-normalized angle jumps from +1 to -1 where it wraps (PushT's block angle at +-pi), so two
nearly equal poses look maximally different to the denoiser. Its sine and cosine are continuous.
"""

from __future__ import annotations

import torch


def check_angle_features(dims: tuple[int, ...], obs_dim: int) -> None:
    """Raise if ``dims`` are not distinct feature indices in ``[0, obs_dim)``."""
    if len(set(dims)) != len(dims) or any(not 0 <= d < obs_dim for d in dims):
        raise ValueError(f"angle_features={dims} is invalid; expected distinct indices in "
                         f"[0, {obs_dim})")


def angle_features(obs: torch.Tensor, dims: tuple[int, ...], center: torch.Tensor,
                   half_range: torch.Tensor) -> torch.Tensor:
    """Replace each angle feature of normalized observations by its sine and append its cosine.

    Args:
        obs: [..., Do] range-normalized observations.
        dims: Indices of the features that are angles, radians before normalization.
        center: [Do] the normalizer's centre (to recover the raw angles exactly).
        half_range: [Do] the normalizer's half range.

    Returns:
        [..., Do + len(dims)]: ``sin`` at each angle's index, the ``cos`` of the angles appended
        in the order of ``dims``.
    """
    if not dims:
        return obs
    idx = torch.tensor(dims, dtype=torch.long)
    raw = obs.index_select(-1, idx) * half_range[idx] + center[idx]
    return torch.cat([obs.index_copy(-1, idx, torch.sin(raw)), torch.cos(raw)], dim=-1)

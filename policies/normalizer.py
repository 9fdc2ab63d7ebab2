"""Per-feature range normalization to [-1, 1], kept inside the policy and saved with it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class RangeNormalizer(nn.Module):
    """Maps each feature's [min, max] seen in the data to [-1, 1].

    Constant features (range below ``eps``) are only centred, so they never blow up.

    Args:
        dim: Number of features (the last axis).
        eps: Smallest range treated as non-constant.
    """

    def __init__(self, dim: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("half_range", torch.ones(dim))

    def fit(self, data: np.ndarray | torch.Tensor) -> None:
        """Set the statistics from ``data`` [N, dim]."""
        x = torch.as_tensor(np.asarray(data), dtype=torch.float32).reshape(-1, self.center.numel())
        if not torch.isfinite(x).all():
            raise ValueError("normalizer data has non-finite values; expected finite numbers")
        lo, hi = x.min(0).values, x.max(0).values
        half = (hi - lo) / 2
        self.center.copy_((hi + lo) / 2)
        self.half_range.copy_(torch.where(half < self.eps, torch.ones_like(half), half))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim] raw -> [..., dim] normalized."""
        return (x - self.center) / self.half_range

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        """[..., dim] normalized -> [..., dim] raw."""
        return torch.addcmul(self.center, y, self.half_range)

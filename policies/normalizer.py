"""Per-feature range normalization to [-1, 1], kept inside the policy and saved with it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from policies.layers import feature_index
from policies.registered import Registered


class RangeNormalizer(nn.Module):
    """Maps each feature's [min, max] seen in the data to [-1, 1].

    Constant features (range below ``eps``) are only centred, so they never blow up.

    Args:
        dim: Number of features (the last axis).
        eps: Smallest range treated as non-constant.
    """

    center = Registered("_buffers")
    half_range = Registered("_buffers")

    def __init__(self, dim: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("half_range", torch.ones(dim))
        # dims -> (center, half_range, their versions, center[dims], half_range[dims]); see ``selected``.
        self._selected: dict[tuple[int, ...], tuple] = {}

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

    def selected(self, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(center[dims], half_range[dims])``, selected once until the statistics change.

        A chunk at batch 1 needs them for its angle features and its action origin; selecting
        them anew costs two ``index_select`` calls (~3 us each on this CPU) per use. The statistics
        count as changed when a buffer is replaced (``.to``, assignment) or written in place
        (``fit``, ``load_state_dict``: the version counter moves).
        """
        c, h = self.center, self.half_range
        if c.is_inference() or h.is_inference():  # no version counter to tell a change by
            idx = feature_index(dims, c.device)
            return c.index_select(0, idx), h.index_select(0, idx)
        hit = self._selected.get(dims)
        versions = (c._version, h._version)
        if hit is None or hit[0] is not c or hit[1] is not h or hit[2] != versions:
            idx = feature_index(dims, c.device)
            # Ordinary tensors even when first asked for under inference mode: training reuses them.
            with torch.inference_mode(False), torch.no_grad():
                hit = (c, h, versions, c.index_select(0, idx), h.index_select(0, idx))
            self._selected[dims] = hit
        return hit[3], hit[4]

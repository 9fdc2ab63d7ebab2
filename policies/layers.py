"""Small building blocks shared by the policies."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear + Mish layers; the last layer is linear."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.Mish()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class SinusoidalEmbedding(nn.Module):
    """Timestep embedding of Vaswani et al.: [B] integer steps -> [B, dim]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, dim]."""
        angles = t.float()[:, None] * self.freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

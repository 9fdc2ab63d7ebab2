"""Small networks beside a trained policy: a stacked denoiser ensemble and random network distillation.

Ensemble members are stacked into one weight tensor per layer, so M members run as one batched
matrix multiply (``torch.baddbmm``), never a Python loop over members.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from policies.layers import mlp


class StackedLinear(nn.Module):
    """M independent linear layers applied as one batched matmul: [M, N, I] -> [M, N, O]."""

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, drawn per member
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, N, I] -> [M, N, O]."""
        return torch.baddbmm(self.bias, x, self.weight)


class StackedMlp(nn.Module):
    """M MLPs (Mish between layers) evaluated together: [M, N, I] -> [M, N, O]."""

    def __init__(self, members: int, in_dim: int, hidden: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        dims = (in_dim, *hidden, out_dim)
        self.layers = nn.ModuleList(StackedLinear(members, a, b) for a, b in zip(dims, dims[1:],
                                                                                   strict=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, N, I] -> [M, N, O]."""
        # The layers' tensors are used directly: a module call per layer costs ~2 us on a CPU,
        # as much as a small layer's matmul when scoring one observation.
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = torch.baddbmm(layer.bias, x, layer.weight)
            if i < last:
                x = nn.functional.mish(x)
        return x


class DenoiserEnsemble(nn.Module):
    """M denoisers that map a noised chunk and the condition to the clean chunk.

    Trained on bootstrap resamples of the demonstrations at random noise levels; at inference every
    member denoises the same noised copy of the policy's chunk, and their disagreement measures how
    little the data pinned the mapping down near this observation (epistemic uncertainty).

    Args:
        members: M.
        horizon: H.
        action_dim: Da.
        cond_dim: Length of the flattened condition (To * Do).
        hidden: Hidden widths of each member.
    """

    def __init__(self, members: int, horizon: int, action_dim: int, cond_dim: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.members, self.horizon, self.action_dim = members, horizon, action_dim
        # Input: noised chunk, condition, and the signal level (one scalar feature).
        self.net = StackedMlp(members, horizon * action_dim + cond_dim + 1, hidden,
                              horizon * action_dim)

    def forward(self, noised: torch.Tensor, cond: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Clean-chunk predictions of every member.

        Args:
            noised: [M, N, H, Da] or [N, H, Da] (shared by all members).
            cond: [M, N, C] or [N, C].
            level: [M, N] or [N] signal level in (0, 1].

        Returns:
            [M, N, H, Da].
        """
        M = self.members
        if noised.ndim == 3:
            noised, cond, level = noised.expand(M, *noised.shape), cond.expand(M, *cond.shape), \
                level.expand(M, *level.shape)
        x = torch.cat([noised.flatten(2), cond, level[..., None]], dim=-1)
        return self.net(x).view(M, -1, self.horizon, self.action_dim)


def noise_chunk(chunk: torch.Tensor, noise: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    """Variance-preserving mix ``level * chunk + sqrt(1 - level^2) * noise``.

    ``level`` [...] broadcasts over the last two dims (H, Da); a float (one level for every chunk,
    as when scoring) takes two tensor ops instead of seven.
    """
    if isinstance(level, float):
        return torch.add(chunk * level, noise, alpha=math.sqrt(max(1.0 - level * level, 0.0)))
    a = level[..., None, None]
    return a * chunk + (1.0 - a * a).clamp_min(0.0).sqrt() * noise


class RandomNetworkDistillation(nn.Module):
    """Novelty of an embedding (Burda et al. 2019): a predictor regresses a frozen random network.

    Args:
        in_dim: Length of the embedding.
        hidden: Hidden widths of target and predictor.
        out_dim: Width of the random features.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        self.target = mlp(in_dim, hidden, out_dim)
        self.predictor = mlp(in_dim, hidden, out_dim)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, in] -> (prediction [N, out], target [N, out])."""
        return self.predictor(x), self.target(x)

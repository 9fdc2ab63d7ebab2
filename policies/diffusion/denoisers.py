"""Denoisers epsilon/x0(x_t, t, cond): an MLP and a 1-D temporal U-Net with FiLM conditioning.

Every denoiser maps x [B, H, Da], t [B] and cond [B, Dc] to [B, H, Da].
"""

from __future__ import annotations

import torch
from torch import nn

from policies.layers import SinusoidalEmbedding, mlp


class MlpDenoiser(nn.Module):
    """Flattened chunk + timestep embedding + condition -> MLP. Fast on a CPU.

    Args:
        horizon: H.
        action_dim: Da.
        cond_dim: Dc.
        hidden_dims: Hidden widths.
        time_dim: Timestep embedding width.
    """

    def __init__(self, horizon: int, action_dim: int, cond_dim: int,
                 hidden_dims: tuple[int, ...] = (512, 512, 512), time_dim: int = 64) -> None:
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.time_emb = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, time_dim),
                                      nn.Mish())
        self.net = mlp(horizon * action_dim + time_dim + cond_dim, hidden_dims, horizon * action_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """[B, H, Da], [B], [B, Dc] -> [B, H, Da]."""
        h = torch.cat([x.flatten(1), self.time_emb(t), cond], dim=-1)
        return self.net(h).view(-1, self.horizon, self.action_dim)


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 5, groups: int = 8) -> None:
        super().__init__(nn.Conv1d(cin, cout, kernel, padding=kernel // 2),
                         nn.GroupNorm(groups, cout), nn.Mish())


class _FilmResBlock(nn.Module):
    """Two conv blocks; the condition scales and shifts the first one's output (FiLM)."""

    def __init__(self, cin: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.block1, self.block2 = _ConvBlock(cin, cout), _ConvBlock(cout, cout)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block1(x) * scale + shift
        return self.block2(h) + self.skip(x)


class UNet1DDenoiser(nn.Module):
    """1-D temporal U-Net over the chunk with FiLM conditioning (Chi et al. 2023, Sec. III-B).

    Args:
        horizon: H; must be divisible by ``2 ** (len(dims) - 1)``.
        action_dim: Da.
        cond_dim: Dc.
        dims: Channel widths per level, each divisible by 8.
        time_dim: Timestep embedding width.
    """

    def __init__(self, horizon: int, action_dim: int, cond_dim: int,
                 dims: tuple[int, ...] = (64, 128, 256), time_dim: int = 64) -> None:
        super().__init__()
        if horizon % (2 ** (len(dims) - 1)):
            raise ValueError(f"horizon={horizon} must be divisible by {2 ** (len(dims) - 1)} "
                             f"for a U-Net with dims {dims}")
        if any(d % 8 for d in dims):
            raise ValueError(f"unet dims {dims} must be multiples of 8 (GroupNorm)")
        self.time_emb = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, 4 * time_dim),
                                      nn.Mish(), nn.Linear(4 * time_dim, time_dim))
        c = time_dim + cond_dim
        levels = list(zip((action_dim, *dims[:-1]), dims, strict=False))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                _FilmResBlock(cin, cout, c), _FilmResBlock(cout, cout, c),
                nn.Conv1d(cout, cout, 3, stride=2, padding=1) if not last else nn.Identity()]))
        self.mid = nn.ModuleList([_FilmResBlock(dims[-1], dims[-1], c) for _ in range(2)])
        self.up = nn.ModuleList()
        # Each up level undoes one down-sampling; the first level's skip is never down-sampled.
        for cin, cout in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                _FilmResBlock(2 * cout, cin, c), _FilmResBlock(cin, cin, c),
                nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1)]))
        self.head = nn.Sequential(_ConvBlock(dims[0], dims[0]), nn.Conv1d(dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """[B, H, Da], [B], [B, Dc] -> [B, H, Da]."""
        g = torch.cat([self.time_emb(t), cond], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, down in self.down:
            h = res2(res1(h, g), g)
            skips.append(h)
            h = down(h)
        for res in self.mid:
            h = res(h, g)
        for res1, res2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(res2(res1(h, g), g))
        return self.head(h).transpose(1, 2)

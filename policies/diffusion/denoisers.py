"""Denoisers epsilon/x0(x_t, t, cond): an MLP and a 1-D temporal U-Net with FiLM conditioning.

Every denoiser maps x [B, H, Da], t [B] and cond [B, Dc] to [B, H, Da].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from policies.layers import SinusoidalEmbedding, mish_, mlp

# Most floats of per-step input-layer sums ``ChunkCondition`` precomputes (256 KiB).
PRESUM_LIMIT = 65536


@dataclass(frozen=True)
class ChunkCondition:
    """What an ``MlpDenoiser`` input layer gets from the timesteps and the condition, done once per chunk.

    The input layer is linear in ``[x, time_emb(t), cond]``, so its timestep and condition columns
    can be applied once for all K steps of a chunk; each step then multiplies only the noisy chunk.
    Made by ``MlpDenoiser.condition`` for inference only (the prepared forward works in place).
    """

    time: torch.Tensor
    """[K, hidden_0]: W_t @ time_emb(t_k) of the input layer, per step k."""
    base: torch.Tensor
    """[B, hidden_0]: W_c @ cond + b of the input layer."""
    pre: tuple[torch.Tensor, ...]
    """Per step k: [B, hidden_0] = ``time[k] + base``, summed ahead when small (else empty)."""
    x_weight: torch.Tensor
    """[H * Da, hidden_0]: the input layer's columns for the flattened noisy chunk, transposed."""
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    """(bias, transposed weight) of every later hidden layer, in order."""
    head: tuple[torch.Tensor, torch.Tensor]
    """(bias, transposed weight) of the output layer."""
    out_scale: tuple[float, ...]
    """Per step k: the output comes out multiplied by this, folded into the output layer (a
    sampler's step weight of the estimate, saving it one multiply per step)."""


def _drop_inference_view(module: MlpDenoiser, incompatible_keys) -> None:
    """``load_state_dict`` post-hook (a module-level function: the module stays picklable)."""
    module._drop_inference_view()


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
        self.horizon, self.action_dim, self.time_dim = horizon, action_dim, time_dim
        self.time_emb = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, time_dim),
                                      nn.Mish())
        self.net = mlp(horizon * action_dim + time_dim + cond_dim, hidden_dims, horizon * action_dim)
        # Sinusoidal embeddings of the timesteps a sampler visits: parameter-free, so safe to keep.
        self._sinusoid_cache: dict[tuple[float, ...], torch.Tensor] = {}
        # Time embeddings for ``forward_at``: t -> (the time layer's parameter versions, [1, time_dim]).
        self._time_rows: dict[float, tuple[tuple[int, int], torch.Tensor]] = {}
        # A load with ``assign=True`` replaces the parameters: drop what ``forward_at`` keeps.
        self.register_load_state_dict_post_hook(_drop_inference_view)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int,
                cond: torch.Tensor | ChunkCondition) -> torch.Tensor:
        """[B, H, Da], [B], [B, Dc] -> [B, H, Da].

        With a ``ChunkCondition`` from ``condition`` as ``cond``, ``t`` is the index of the step in
        the chunk's timesteps (inference only).
        """
        if isinstance(cond, ChunkCondition):
            pre = cond.pre[t] if cond.pre else cond.base + cond.time[t]
            h = torch.addmm(pre, x.reshape(x.shape[0], -1), cond.x_weight)
            for bias, weight in cond.layers:
                h = torch.addmm(bias, mish_(h), weight)
            (bias, weight), scale = cond.head, cond.out_scale[t]
            h = torch.addmm(bias, mish_(h), weight, beta=scale, alpha=scale)
            return h.view(-1, self.horizon, self.action_dim)
        h = torch.cat([x.flatten(1), self.time_emb(t), cond], dim=-1)
        return self.net(h).view(-1, self.horizon, self.action_dim)

    def forward_at(self, x: torch.Tensor, t: float, cond: torch.Tensor) -> torch.Tensor:
        """``forward`` with one timestep ``t`` for the whole batch, for inference (no autograd).

        A one-step student calls the network once per chunk at one of two fixed timesteps, so the
        timestep embedding is computed once per step value and kept until the time layer's
        parameters change (their version counters move on an optimizer step or a load), and the
        layers run as ``addmm`` on transposed views of their weights (``linear`` without its
        per-call transpose, nor the module lookups). At batch 1 on this CPU: 107 -> ~65 us.
        """
        if torch.is_grad_enabled():
            raise RuntimeError("MlpDenoiser.forward_at is for inference; expected torch.no_grad()")
        time_weight, time_bias, layers = self.__dict__.get("_inference_view") or self._inference_view()
        # Parameters made under inference mode have no version counter: their row is made anew.
        versions = None if time_weight.is_inference() else (time_weight._version, time_bias._version)
        cached = self._time_rows.get(t)
        if cached is None or versions is None or cached[0] != versions or cached[1].device != x.device:
            row = self.time_emb(torch.tensor([t], device=x.device))
            self._time_rows[t] = cached = (versions, row)
        row = cached[1] if x.shape[0] == 1 else cached[1].expand(x.shape[0], -1)
        h = torch.cat([x.flatten(1), row, cond], dim=-1)
        *hidden, (bias, weight) = layers
        for b, w in hidden:
            h = nn.functional.mish(torch.addmm(b, h, w), inplace=True)
        return torch.addmm(bias, h, weight).view(-1, self.horizon, self.action_dim)

    def _inference_view(self) -> tuple:
        """The time layer's weight and bias, and ``(bias, weight.t())`` of every layer of ``net``.

        For ``forward_at`` and ``condition``: views of the parameters, so an optimizer step or a
        load (both write in place) shows through; ``_apply`` (``.to``, ``.double``) and every load
        drop them, as those may replace the parameters.
        """
        linears = list(self.net)[::2]  # Linear, Mish, ..., Linear (slicing a Sequential is slow)
        time_linear = self.time_emb[1]
        with torch.inference_mode(False), torch.no_grad():
            view = (time_linear.weight, time_linear.bias, tuple((m.bias, m.weight.t()) for m in linears))
        self.__dict__["_inference_view"] = view
        return view

    def _drop_inference_view(self) -> None:
        self.__dict__.pop("_inference_view", None)
        self._time_rows.clear()

    def _apply(self, fn, recurse=True):
        self._drop_inference_view()
        return super()._apply(fn, recurse)

    def condition(self, timesteps: tuple[float, ...], cond: torch.Tensor,
                  out_scale: tuple[float, ...] | None = None) -> ChunkCondition:
        """The timestep and condition work of the input layer for every step of one chunk.

        Equal to ``forward``'s up to float rounding (the input layer's sum is split in parts).

        Args:
            timesteps: The K timesteps the sampler will visit, in order.
            cond: [B, Dc] condition.
            out_scale: K factors the prepared forward multiplies its output by (default all 1).

        Returns:
            A ``ChunkCondition`` for ``forward(x, k, ...)`` with k in ``range(K)``.
        """
        if torch.is_grad_enabled():
            raise RuntimeError("MlpDenoiser.condition is for inference; expected torch.no_grad() "
                               "(the prepared forward works in place)")
        time_weight, time_bias, ((first_bias, w), *layers, head) = (
            self.__dict__.get("_inference_view") or self._inference_view())
        n = self.horizon * self.action_dim  # w [in, hidden_0]: rows for x, then time, then cond
        sinusoid = self._sinusoid_cache.get(timesteps)
        if sinusoid is None or sinusoid.device != w.device:
            sinusoid = self.time_emb[0](torch.tensor(timesteps, device=w.device))
            self._sinusoid_cache[timesteps] = sinusoid
        time = nn.functional.mish(torch.addmm(time_bias, sinusoid, time_weight.t()),
                                  inplace=True) @ w[n:n + self.time_dim]  # [K, hidden_0]
        base = torch.addmm(first_bias, cond, w[n + self.time_dim:])  # [B, hidden_0]
        # All K sums at once when they are small (one op instead of one per step); a large batch or
        # step count sums per step, so K copies of [B, hidden_0] are never held at once.
        small = time.numel() * base.shape[0] <= PRESUM_LIMIT
        pre = torch.add(time[:, None], base).unbind(0) if small else ()
        if out_scale is None:
            out_scale = (1.0,) * len(timesteps)
        elif len(out_scale) != len(timesteps):
            raise ValueError(f"out_scale has {len(out_scale)} factors; expected one per timestep "
                             f"({len(timesteps)})")
        return ChunkCondition(time=time, base=base, pre=pre, x_weight=w[:n], layers=tuple(layers),
                              head=head, out_scale=tuple(out_scale))


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

"""Warm start between chunks: the last chunk's tail, where the next chunk starts from.

With receding-horizon execution a chunk of H actions is predicted every Ta steps, so the last
chunk already holds a plan for the next H - Ta steps. Warm-starting noises that plan to an
intermediate level and denoises only from there (SDEdit, Meng et al. 2022, with the previous plan
as the guide): the new chunk keeps the mode the last one chose and still follows the new
observation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

WARM_PADS = ("hold", "extrapolate")
"""How the Ta steps a tail lacks are filled: the last action held (a plan that stops there), or
continued at the last planned step's velocity."""


@dataclass(slots=True)
class LastChunk:
    """The last chunk a policy sampled from its own noise (normalized), and its action origin.

    A plain object rather than two attributes of the policy: setting an ``nn.Module``'s attribute
    runs its registration checks (~3 us per chunk at batch 1 on this CPU).
    """

    chunk: torch.Tensor | None = None
    origin: torch.Tensor | None = None
    """Relative actions: the origin ``chunk`` is measured from (None for absolute actions)."""


@functools.cache
def _steps_ahead(n: int, dtype: torch.dtype) -> torch.Tensor:
    """[1, n, 1]: 1 .. n, made once (never modify it in place)."""
    return torch.arange(1, n + 1, dtype=dtype).view(1, n, 1)


def continued(plan: torch.Tensor, n: int, pad: str = "hold") -> torch.Tensor:
    """The ``n`` actions after ``plan`` [B, T, Da] (T >= 1): ``pad`` of ``WARM_PADS``.

    ``extrapolate`` adds the last step ``plan[:, -1] - plan[:, -2]`` k times to the last action
    (k = 1 .. n); with one planned action there is no step, and it holds.

    Returns:
        [B, n, Da].
    """
    if pad not in WARM_PADS:
        raise ValueError(f"warm pad {pad!r} is invalid; expected one of {list(WARM_PADS)}")
    last = plan[:, -1:]
    if pad == "hold" or plan.shape[1] < 2:
        return last.expand(-1, n, -1)
    return torch.addcmul(last, last - plan[:, -2:-1], _steps_ahead(n, plan.dtype))


def warm_tail(chunk: torch.Tensor, n_action_steps: int, pad: str = "hold") -> torch.Tensor:
    """The last chunk advanced by Ta steps, its end padded by ``continued``.

    Holding the last action plans a stop at the chunk's end; a warm start keeps that plan, and
    Ta steps later it is the executed part (PushT-v0, relative actions, H=8, Ta=4, warm start
    0.5: 0.27 success / 0.76 coverage held, 0.47 / 0.88 extrapolated, 0.50 / 0.86 cold).

    Args:
        chunk: [B, H, Da] the last chunk (normalized).
        n_action_steps: Ta, the actions executed from it.
        pad: ``hold`` or ``extrapolate`` (``DiffusionConfig.warm_pad``).

    Returns:
        [B, H, Da]: ``chunk[:, Ta:]`` followed by Ta actions continuing it.
    """
    kept = chunk[:, n_action_steps:]
    plan = kept if kept.shape[1] else chunk[:, -1:]  # Ta = H: nothing planned left; hold the last
    return torch.cat([kept, continued(plan, n_action_steps, pad)], dim=1)


def demo_tail(actions: torch.Tensor, n_action_steps: int, pad: str = "hold") -> torch.Tensor:
    """What ``warm_tail`` gives at step t when the last chunk was the demonstration's own plan.

    The chunk predicted Ta steps earlier covered steps t - Ta .. t - Ta + H - 1; advanced by Ta,
    it is the first H - Ta actions of the window from t, then Ta actions continuing them.
    Distillation of a warm-started sampler uses it as the previous chunk.

    Args:
        actions: [B, H, Da] demonstrated actions from step t (normalized).
        n_action_steps: Ta.
        pad: ``hold`` or ``extrapolate``, as ``warm_tail``'s.

    Returns:
        [B, H, Da].
    """
    keep = actions.shape[1] - n_action_steps
    if keep < 1:
        raise ValueError(f"n_action_steps={n_action_steps} leaves no planned action of a horizon-"
                         f"{actions.shape[1]} chunk; expected Ta < H")
    return torch.cat([actions[:, :keep], continued(actions[:, :keep], n_action_steps, pad)], dim=1)

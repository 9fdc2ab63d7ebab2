"""Warm start between chunks: the last chunk's tail, where the next chunk starts from.

With receding-horizon execution a chunk of H actions is predicted every Ta steps, so the last
chunk already holds a plan for the next H - Ta steps. Warm-starting noises that plan to an
intermediate level and denoises only from there (SDEdit, Meng et al. 2022, with the previous plan
as the guide): the new chunk keeps the mode the last one chose and still follows the new
observation.
"""

from __future__ import annotations

import torch


def warm_tail(chunk: torch.Tensor, n_action_steps: int) -> torch.Tensor:
    """The last chunk advanced by Ta steps, its end padded with its last action.

    Args:
        chunk: [B, H, Da] the last chunk (normalized).
        n_action_steps: Ta, the actions executed from it.

    Returns:
        [B, H, Da]: ``chunk[:, Ta:]`` followed by Ta copies of ``chunk[:, -1]``.
    """
    return torch.cat([chunk[:, n_action_steps:],
                      chunk[:, -1:].expand(-1, n_action_steps, -1)], dim=1)


def demo_tail(actions: torch.Tensor, n_action_steps: int) -> torch.Tensor:
    """What ``warm_tail`` gives at step t when the last chunk was the demonstration's own plan.

    The chunk predicted Ta steps earlier covered steps t - Ta .. t - Ta + H - 1; advanced by Ta,
    it is the first H - Ta actions of the window from t, then that window's action H - Ta - 1
    repeated Ta times. Distillation of a warm-started sampler uses it as the previous chunk.

    Args:
        actions: [B, H, Da] demonstrated actions from step t (normalized).
        n_action_steps: Ta.

    Returns:
        [B, H, Da].
    """
    keep = actions.shape[1] - n_action_steps
    if keep < 1:
        raise ValueError(f"n_action_steps={n_action_steps} leaves no planned action of a horizon-"
                         f"{actions.shape[1]} chunk; expected Ta < H")
    return torch.cat([actions[:, :keep], actions[:, keep - 1:keep].expand(-1, n_action_steps, -1)],
                     dim=1)

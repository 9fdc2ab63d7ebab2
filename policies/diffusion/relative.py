"""Actions relative to an observed position: the policy learns ``action - obs[origin]``.

PushT's actions are absolute pusher targets over +-235 mm, while a push step moves the pusher a
few millimetres; range-normalized, such a step is a sliver of the unit interval, and the denoiser
must resolve it from absolute positions. With ``relative_action_origin`` naming the observation
features the actions are measured from (PushT-v0: 0, 1, the pusher), each chunk is denoised as
offsets from the origin at the chunk's start (the latest observation step), normalized with the
offsets' own range, and the origin is added back before actions leave the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policies.layers import feature_index


def check_relative_origin(origin: tuple[int, ...], action_dim: int, obs_dim: int) -> None:
    """Raise if ``origin`` is neither empty nor ``action_dim`` indices in ``[0, obs_dim)``."""
    if origin and (len(origin) != action_dim or any(not 0 <= i < obs_dim for i in origin)):
        raise ValueError(f"relative_action_origin={origin} is invalid; expected () or {action_dim} "
                         f"observation indices (one per action feature) in [0, {obs_dim})")


def _state(obs: Any, state_key: str) -> Any:
    """The low-dim features of an observation batch (a dict observation: its ``state_key``)."""
    return obs[state_key] if isinstance(obs, Mapping) else obs


def origin_of(obs: Any, origin: tuple[int, ...], state_key: str = "agent_pos") -> torch.Tensor:
    """The origin of each chunk: the latest step's ``origin`` features.

    Args:
        obs: [B, To, Do] raw observations (tensor or array), or a dict holding them at ``state_key``.
        origin: Observation indices, one per action feature.
        state_key: Key of the low-dim features in a dict observation.

    Returns:
        [B, 1, Da] float32 (broadcasts over a chunk's steps).
    """
    state = torch.as_tensor(_state(obs, state_key), dtype=torch.float32)
    return state[:, -1:].index_select(-1, feature_index(tuple(origin), state.device))


def to_absolute(actions: torch.Tensor, obs: Any, origin: tuple[int, ...],
                state_key: str = "agent_pos") -> torch.Tensor:
    """Raw offsets [B, T, Da] from the chunk's origin -> raw actions (unchanged when ``origin`` is empty)."""
    if not origin:
        return actions
    return actions + origin_of(obs, origin, state_key)


def relative_batch(batch: dict[str, Any], origin: tuple[int, ...],
                   state_key: str = "agent_pos") -> dict[str, Any]:
    """A training batch whose ``action`` [B, H, Da] is measured from each window's origin.

    The input batch is not modified; an empty ``origin`` returns it as it is.
    """
    if not origin:
        return batch
    actions = torch.as_tensor(batch["action"], dtype=torch.float32)
    return {**batch, "action": actions - origin_of(batch["obs"], origin, state_key)}


def rebase(chunk: torch.Tensor, old: torch.Tensor, new: torch.Tensor,
           half_range: torch.Tensor) -> torch.Tensor:
    """A normalized relative chunk planned from origin ``old``, re-expressed from origin ``new``.

    The absolute actions stay the same: ``x * h + c + old == x' * h + c + new``.

    Args:
        chunk: [B, H, Da] normalized offsets from ``old``.
        old: [B, Da] raw origin the chunk was planned from.
        new: [B, Da] raw origin of the next chunk.
        half_range: [Da] the action normalizer's half range.
    """
    return chunk + ((old - new) / half_range).unsqueeze(1)


def chunk_offsets(obs: np.ndarray, actions: np.ndarray, episode_ends: np.ndarray,
                  origin: tuple[int, ...], horizon: int) -> np.ndarray:
    """Every offset a training window holds, to fit the normalizer's range.

    A window anchored at step t of an episode ``[s, e)`` holds actions ``t .. t+H-1`` clamped to
    ``e - 1`` (``agents.data.sampler.SequenceSampler``); its origin is step t's.

    Args:
        obs: [N, Do] raw observations, time-major over all episodes.
        actions: [N, Da] raw actions.
        episode_ends: [E] exclusive end of each episode.
        origin: Observation indices, one per action feature.
        horizon: H.

    Returns:
        [N * H, Da] offsets.
    """
    obs, actions = np.asarray(obs, dtype=np.float32), np.asarray(actions, dtype=np.float32)
    ends = np.asarray(episode_ends, dtype=np.int64)
    if ends.size == 0 or ends[-1] != len(actions) or len(obs) != len(actions):
        raise ValueError(f"episode_ends ends at {ends[-1] if ends.size else None} for {len(obs)} "
                         f"observations and {len(actions)} actions; expected all three equal")
    end = np.repeat(ends, np.diff(np.concatenate([[0], ends])))  # each step's episode end
    steps = np.arange(len(actions))
    base = obs[:, list(origin)]
    return np.concatenate([actions[np.minimum(steps + k, end - 1)] - base for k in range(horizon)])


def require_absolute_actions(policy: Any, tool: str) -> None:
    """Refuse, in one line, a policy with relative actions where ``tool`` handles absolute ones only."""
    origin = tuple(getattr(policy.config, "relative_action_origin", ()))
    if origin:
        raise ValueError(f"{tool} takes policies with absolute actions; this {policy.name} policy has "
                         f"relative_action_origin={origin}; expected ()")


class RelativeActions:
    """Policy mixin (before ``Policy`` in the bases): train on and sample offsets from the origin.

    Needs ``config.relative_action_origin`` (and ``config.state_key`` for dict observations);
    with an empty origin every method is the plain policy's.
    """

    def _origin_spec(self) -> tuple[tuple[int, ...], str]:
        c = self.config
        return tuple(getattr(c, "relative_action_origin", ())), getattr(c, "state_key", "agent_pos")

    def fit_normalizers(self, obs: Any, actions: np.ndarray, episode_ends: np.ndarray | None = None) -> None:
        """As ``Policy.fit_normalizers``; relative actions fit the range of every window's offsets."""
        origin, key = self._origin_spec()
        if origin:
            if episode_ends is None:
                raise ValueError(f"relative_action_origin={origin} fits the range of chunk offsets "
                                 "per episode; expected episode_ends")
            actions = chunk_offsets(_state(obs, key), actions, episode_ends, origin, self.config.horizon)
            q = float(getattr(self.config, "relative_action_quantile", 0.0))
            if q > 0:  # the normalizer spans its data's min and max: give it the two quantiles
                actions = np.quantile(actions, [q, 1.0 - q], axis=0)
        super().fit_normalizers(obs, actions, episode_ends)

    def normalized_batch(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """As ``Policy.normalized_batch``, the actions measured from each window's origin first."""
        origin, key = self._origin_spec()
        return super().normalized_batch(relative_batch(batch, origin, key))

    def absolute_actions(self, actions: torch.Tensor, obs: Any) -> torch.Tensor:
        """Raw offsets [B, T, Da] of chunks for raw ``obs`` -> raw actions."""
        origin, key = self._origin_spec()
        return to_absolute(actions, obs, origin, key)

    def normalized_origin(self, obs: Any) -> torch.Tensor | None:
        """The raw origin [B, Da] of chunks for normalized ``obs`` (None for absolute actions)."""
        origin = getattr(self.config, "relative_action_origin", ())
        if not origin:  # absolute actions: read once per chunk, so the plain path stays short
            return None
        origin, key = self._origin_spec()
        state = _state(obs, key)
        center, half_range = self.obs_normalizer.selected(origin)
        return torch.addcmul(center, state[:, -1].index_select(-1, feature_index(origin, state.device)),
                             half_range)

    def rebase_tail(self, tail: torch.Tensor, origin: torch.Tensor | None) -> torch.Tensor:
        """The last chunk's normalized tail re-expressed from the next chunk's ``origin`` (None: absolute)."""
        return tail if origin is None else rebase(tail, self._last_chunk.origin, origin,
                                                  self.action_normalizer.half_range)

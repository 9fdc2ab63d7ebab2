"""Sequence windows for training: (observation history To, action horizon H) with edge padding."""

from __future__ import annotations

import numpy as np


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split by episode.

    Returns:
        (train_indices, val_indices), sorted; at least one training episode.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction} is out of range; expected 0 <= f < 1")
    if n_episodes < 1:
        raise ValueError(f"dataset has {n_episodes} episodes; expected at least 1")
    perm = np.random.default_rng(seed).permutation(n_episodes)
    n_val = min(int(round(val_fraction * n_episodes)), n_episodes - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class SequenceSampler:
    """Index windows over selected episodes of a flat, time-major dataset.

    A sample anchored at step ``t`` of an episode spanning ``[s, e)`` holds observations
    ``t-To+1 .. t`` and actions ``t .. t+H-1``; indices outside ``[s, e)`` are clamped to the
    edge, so the first observation and the last action repeat (edge padding).

    Args:
        episode_ends: (E,) exclusive end of each episode.
        episodes: Which episodes to draw from.
        n_obs_steps: To.
        horizon: H.
    """

    def __init__(self, episode_ends: np.ndarray, episodes: np.ndarray, n_obs_steps: int, horizon: int):
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps={n_obs_steps}, horizon={horizon}; expected both >= 1")
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        eps = np.asarray(episodes, dtype=np.int64)
        lengths = ends[eps] - starts[eps]
        # One anchor per step of every selected episode.
        self.anchor = np.concatenate([np.arange(starts[i], ends[i]) for i in eps]) if eps.size else (
            np.zeros(0, np.int64))
        self.start = np.repeat(starts[eps], lengths)
        self.end = np.repeat(ends[eps], lengths)
        self.obs_offsets = np.arange(-n_obs_steps + 1, 1)
        self.action_offsets = np.arange(horizon)

    def __len__(self) -> int:
        return int(self.anchor.size)

    def indices(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat data indices of the windows of ``rows``.

        Returns:
            obs_idx [B, To] and action_idx [B, H], clamped to each window's episode.
        """
        a, s, e = self.anchor[rows, None], self.start[rows, None], self.end[rows, None]
        obs_idx = np.clip(a + self.obs_offsets, s, e - 1)
        act_idx = np.clip(a + self.action_offsets, s, e - 1)
        return obs_idx, act_idx

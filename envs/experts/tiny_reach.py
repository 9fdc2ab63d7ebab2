"""PD expert for TinyReach-v0."""

from __future__ import annotations

import numpy as np


class TinyReachExpert:
    """Proportional-derivative force toward the goal (gains tuned for the 0.5 kg cart)."""

    name = "scripted"
    mode = None

    def __init__(self, env, kp: float = 6.0, kd: float = 2.0) -> None:
        self.kp, self.kd = kp, kd

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Stateless: nothing to reset."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``[x, v, goal] -> [force]``."""
        x, v, goal = obs
        return np.clip([self.kp * (goal - x) - self.kd * v], -1.0, 1.0).astype(np.float32)

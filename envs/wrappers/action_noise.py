"""Gaussian noise on the executed action, for collecting demonstrations with DART.

DART (Laskey et al. 2017, "DART: Noise Injection for Robust Imitation Learning") runs the expert
with noise injected into the actions it executes and labels each visited state with the expert's
own clean action, so the demonstrations cover the states a slightly-off learner drifts into and
say how to come back. Under this wrapper the caller hands ``step`` the clean action (the one a
collector stores); the env executes ``clip(action + N(0, std^2), low, high)``.

The noise is drawn from a generator seeded by the episode's reset seed, so an episode replays
exactly from its seed.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np


class ActionNoise(gym.ActionWrapper):
    """Adds Gaussian noise of standard deviation ``std`` (action units) to every executed action.

    Args:
        env: A task with a ``Box`` action space.
        std: Noise standard deviation, in action units; 0 executes the actions as they are.
    """

    def __init__(self, env: gym.Env, std: float) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError(f"ActionNoise needs a Box action space; got {env.action_space}")
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"action noise std={std}; expected a finite standard deviation >= 0")
        self.std = float(std)
        self._low, self._high = env.action_space.low, env.action_space.high
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the task; a seeded reset also reseeds the noise (an episode replays from its seed)."""
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0xDA27])
        return self.env.reset(seed=seed, options=options)

    def action(self, action: np.ndarray) -> np.ndarray:
        """The action the env executes: the given one plus noise, clipped to the action bounds."""
        if self.std == 0.0:
            return action
        noisy = np.asarray(action, dtype=np.float64) + self._rng.normal(0.0, self.std, np.shape(action))
        return np.clip(noisy, self._low, self._high).astype(self.env.action_space.dtype)

"""Execute a chunk of Ta actions per ``step`` (receding-horizon execution as an env)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ActionChunk(gym.Wrapper):
    """One ``step`` takes ``[Ta, Da]`` actions and runs them in order.

    Rewards are summed; the chunk stops early at termination or truncation. ``info`` is the last
    step's, plus ``executed_steps``.

    Args:
        env: A Box-action env.
        n_action_steps: Ta.
    """

    def __init__(self, env: gym.Env, n_action_steps: int) -> None:
        super().__init__(env)
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps={n_action_steps}; expected >= 1")
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"action space {space} is not a Box; expected a continuous action space")
        self.n_action_steps = n_action_steps
        self.action_space = gym.spaces.Box(
            np.broadcast_to(space.low, (n_action_steps, *space.shape)),
            np.broadcast_to(space.high, (n_action_steps, *space.shape)), dtype=space.dtype)

    def step(self, actions):
        """Run up to Ta actions; returns the last observation and the summed reward."""
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"action chunk has shape {actions.shape}; expected {self.action_space.shape}")
        total, executed = 0.0, 0
        for action in actions:
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            executed += 1
            if terminated or truncated:
                break
        info = {**info, "executed_steps": executed}
        return obs, total, terminated, truncated, info

"""TinyReach-v0: a 1-D point mass reaches a goal on a rail. Tiny and deterministic, for fast tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from envs.mujoco_task import MujocoTaskEnv


class TinyReachEnv(MujocoTaskEnv):
    """A cart on a rail must stop at a goal.

    Observation ``[x, v, goal]``; action ``[force]`` in [-1, 1]; success: within 0.03 of the goal
    and slower than 0.1 m/s. The goal (0.1 to 0.5 from the start) is the only random draw of ``reset``.

    Args:
        render_mode: ``None`` or ``"rgb_array"``.
    """

    def __init__(self, render_mode: str | None = None) -> None:
        EzPickle.__init__(self, render_mode)
        space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        super().__init__("tiny_reach.xml", 2, space, render_mode, 160, 160)
        self.goal = 0.0
        self._prev_dist = 0.0
        self._success = False

    def _reset_task(self, options: dict) -> None:
        # At least 0.1 from the start, so no episode begins solved.
        side = 1.0 if self.np_random.random() < 0.5 else -1.0
        self.goal = side * float(self.np_random.uniform(0.1, 0.5))
        self.model.site("goal").pos[0] = self.goal
        self._prev_dist = abs(self.goal)
        self._success = False

    def _observation(self) -> np.ndarray:
        return np.array((self._qpos[0], self._qvel[0], self.goal), dtype=np.float32)

    def _reward_terms(self, action: np.ndarray) -> dict[str, float]:
        (x,), (v,) = self._qpos.tolist(), self._qvel.tolist()
        dist = abs(self.goal - x)
        progress, self._prev_dist = self._prev_dist - dist, dist
        self._success = dist < 0.03 and abs(v) < 0.1
        return {"progress": progress, "success": 1.0 if self._success else 0.0}

    def _is_success(self) -> bool:
        return self._success

    def _task_info(self) -> dict[str, Any]:
        return {"distance": self._prev_dist}

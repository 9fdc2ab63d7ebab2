"""Maze-v0: a point robot crosses a walled maze to a fixed goal, the long-horizon planning task.

Modelled on D4RL Maze2D: three layouts (``"u"``, ``"medium"``, ``"large"``), the goal fixed in the
far corner, the start in a uniformly drawn free cell other than the goal's, with a small jitter.
The grids live in :mod:`envs.maze_layouts`; ``env.layout`` exposes the one in use.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from envs.constraints import constraint_spec_from_model
from envs.maze_layouts import MazeLayout, make_layout
from envs.mujoco_task import MujocoTaskEnv
from envs.robot_models import point_mass_model


class MazeEnv(MujocoTaskEnv):
    """Point robot on slide joints with force actuators; reach the goal cell of a maze.

    Observation: ``[x, y, vx, vy, goal_x, goal_y]`` (float32). Action: ``[fx, fy]`` in ``[-1, 1]``
    (motor gear 2 N, joint damping 2 N s/m, so full force holds 1 m/s: an action is nearly a
    velocity command, as the 0.5 kg robot reaches its speed in ~0.25 s).
    Success: robot centre within ``0.1 * cell_size`` of the goal; the episode then terminates.
    Reward terms: ``progress`` (decrease of the straight-line distance to the goal), ``success``
    (10 on success) and ``control`` (``-0.01 |a|^2``). ``info["position"]`` is the robot's ``(x, y)``.
    With ``reward="sparse"`` the task scores as D4RL Maze2D does (the scores Diffuser reports): one
    term, ``at_goal`` (1 on every step the robot is within the goal radius), and the episode does
    not end at the goal but runs to its time limit, so the return counts the steps spent at the
    goal: arriving sooner and staying there score higher, passing through scores little.
    ``info["is_success"]`` then says whether the robot is at the goal on that step.

    Args:
        layout: ``"u"`` (5x5), ``"medium"`` (8x8) or ``"large"`` (9x12), D4RL's Maze2D grids.
        render_mode: ``None`` or ``"rgb_array"``.
        width: Rendered frame width.
        height: Rendered frame height.
        damping: Joint damping, N s/m (default: the MJCF's 2). D4RL's Maze2D point mass is weakly
            damped (its speed decays over ~4 s, so an action is an acceleration and errors in open-
            loop actions integrate twice); ``damping=0.125`` gives this robot the same 4 s.
        reward: ``"dense"`` (progress, success bonus, control cost; the episode ends at the goal)
            or ``"sparse"`` (D4RL Maze2D's: steps at the goal; the episode runs to its time limit).
    """

    def __init__(
        self,
        layout: str = "medium",
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
        damping: float | None = None,
        reward: str = "dense",
    ) -> None:
        maze = make_layout(layout)  # raises ValueError naming the valid layouts
        if damping is not None and not (math.isfinite(damping) and damping >= 0):
            raise ValueError(f"damping={damping}; expected a finite joint damping >= 0 N s/m")
        if reward not in ("dense", "sparse"):
            raise ValueError(f"reward={reward!r}; expected 'dense' or 'sparse'")
        EzPickle.__init__(self, layout, render_mode, width, height, damping, reward)
        self.reward_type = reward
        self.terminate_on_success = reward == "dense"
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32)
        super().__init__(f"maze_{layout}.xml", 5, obs_space, render_mode, width, height)
        if damping is not None:
            self.model.dof_damping[:] = damping
        self.layout: MazeLayout = maze
        self.goal_radius = 0.1 * maze.cell_size
        self.start_jitter = 0.1 * maze.cell_size
        self._starts = np.array([maze.cell_center(c) for c in maze.start_cells])
        self._goal_x, self._goal_y = (float(v) for v in maze.goal)
        self._obs = np.zeros(6, dtype=np.float32)
        self._obs[4:] = maze.goal
        # Distance to the goal after the last step; _reward_terms sets it and _is_success (which
        # the base calls right after) reads it, so the distance is computed once per step.
        self._dist = 0.0
        # The maze walls are the obstacles.
        self.constraint_spec = constraint_spec_from_model(
            self.model, obstacle_prefix="wall", min_robot_distance=0.0,
            robot=point_mass_model(self.model, self.frame_skip))

    def _reset_task(self, options: dict) -> None:
        start = self._starts[self.np_random.integers(len(self._starts))]
        jitter = self.np_random.uniform(-self.start_jitter, self.start_jitter, size=2)
        self.data.qpos[:] = start + jitter
        self.data.qvel[:] = 0.0
        self._dist = self._goal_distance()

    def _goal_distance(self) -> float:
        x, y = self.data.qpos.tolist()  # Python floats: cheaper than numpy scalar arithmetic
        return math.hypot(self._goal_x - x, self._goal_y - y)

    def _observation(self) -> np.ndarray:
        self._obs[:2] = self.data.qpos
        self._obs[2:4] = self.data.qvel
        return self._obs.copy()

    def _reward_terms(self, action: np.ndarray) -> dict[str, float]:
        dist = self._goal_distance()
        progress, self._dist = self._dist - dist, dist
        if self.reward_type == "sparse":
            return {"at_goal": 1.0 if dist <= self.goal_radius else 0.0}
        fx, fy = action.tolist()
        return {
            "progress": progress,
            "success": 10.0 if dist <= self.goal_radius else 0.0,
            "control": -0.01 * (fx * fx + fy * fy),
        }

    def _is_success(self) -> bool:
        return self._dist <= self.goal_radius

    def _task_info(self) -> dict[str, Any]:
        return {"position": self.data.qpos.copy()}

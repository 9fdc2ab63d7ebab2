"""PointObstacle-v0: a point robot reaches a goal behind a box, passing it on either side.

The quickstart task. It is built to be two-modal: the start is centred (only x is random, within
``start_spread``), the goal is fixed behind a flat-faced, high-friction box, and the expert drives
along the centre line before branching left or right shortly before the box. So the side cannot be
predicted from the observation, and a policy that averages the two modes drives into the box face
and sticks there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from envs.constraints import constraint_spec_from_model
from envs.layout_shift import check_layout_kind
from envs.mujoco_task import MujocoTaskEnv
from envs.robot_models import point_mass_model


@dataclass(frozen=True, kw_only=True)
class PointObstacleLayout:
    """Geometry of the scene, read from the MJCF so the expert and the plots share one truth."""

    obstacle_center: np.ndarray
    """(2,) centre of the box in the plane, metres."""
    obstacle_half: np.ndarray
    """(2,) half extents of the box in the plane, metres."""
    goal: np.ndarray
    """(2,) goal position, metres."""
    robot_radius: float
    """Radius of the robot's sphere, metres."""
    start_y: float
    """y of every start position, metres."""


# Layout shifts (``shift_layout``): the training data always has the box and the goal at their MJCF
# positions, so every draw below moves them at least ``min`` metres off those positions.
_OBSTACLE_SHIFT = {"x": (0.2, 0.4), "y": (-0.1, 0.1)}
"""Box centre offsets: |dx| in x (either side, so the box blocks one of the two lanes), dy in y."""
_GOAL_SHIFT = {"x": (0.4, 0.8), "y": (0.5, 1.0)}
"""Goal: |x| in x (either side) and y in y, metres; at least 0.4 m from the nominal goal."""


class PointObstacleEnv(MujocoTaskEnv):
    """Point robot on slide joints with force actuators; reach the goal behind the obstacle.

    Observation: ``[x, y, vx, vy]``. Action: ``[fx, fy]`` in ``[-1, 1]`` (motor gear 2 N).
    Success: robot centre within ``goal_radius`` of the goal; the episode then terminates.
    ``info["mode"]`` is ``"left"``/``"right"`` once the robot has passed the box's centre line.

    Args:
        start_spread: Half-width of the uniform start x range, metres.
        goal_radius: Success radius around the goal, metres.
        render_mode: ``None`` or ``"rgb_array"``.
        width: Rendered frame width.
        height: Rendered frame height.
    """

    def __init__(
        self,
        start_spread: float = 0.05,
        goal_radius: float = 0.1,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
    ) -> None:
        if not 0.0 <= start_spread <= 0.9:
            raise ValueError(f"start_spread {start_spread} is out of range; expected 0 <= s <= 0.9")
        if goal_radius <= 0:
            raise ValueError(f"goal_radius {goal_radius} must be > 0")
        EzPickle.__init__(self, start_spread, goal_radius, render_mode, width, height)
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        super().__init__("point_obstacle.xml", 5, obs_space, render_mode, width, height)
        self.start_spread = float(start_spread)
        self.goal_radius = float(goal_radius)
        m = self.model
        box = m.geom("obstacle")
        self.layout = PointObstacleLayout(
            obstacle_center=np.array(box.pos[:2], dtype=np.float64),
            obstacle_half=np.array(box.size[:2], dtype=np.float64),
            goal=np.array(m.site("goal").pos[:2], dtype=np.float64),
            robot_radius=float(m.geom("robot").size[0]),
            start_y=-0.8,
        )
        # Plain floats for the per-step math (cheaper than numpy on 2-vectors).
        self._goal_x, self._goal_y = (float(v) for v in self.layout.goal)
        self._obstacle_x, self._obstacle_y = (float(v) for v in self.layout.obstacle_center)
        self._prev_dist = 0.0
        self._mode: str | None = None
        self._nominal_layout = self.layout
        self._build_constraint_spec()

    def _build_constraint_spec(self) -> None:
        # The walls' inner faces bound the workspace (robot centre), the box is the obstacle.
        m = self.model
        self.constraint_spec = constraint_spec_from_model(
            m, workspace_low=[-1.0, -1.2], workspace_high=[1.0, 1.2], min_robot_distance=0.0,
            robot=point_mass_model(m, self.frame_skip))

    def shift_layout(self, rng: np.random.Generator, kind: str) -> dict[str, Any]:
        """Move the box or the goal outside the training support for the episodes that follow.

        ``obstacle`` moves the box 0.2-0.4 m sideways (either side, so it blocks one of the two
        lanes; the other stays open) and up to 0.1 m along y. ``goal`` moves the goal to 0.4-0.8 m
        either side and y in 0.5-1.0 m (the policy's observation does not contain the goal).
        ``none`` restores the MJCF scene. Each call starts from the nominal scene.

        Args:
            rng: Generator of the draws (the caller's, so the task's own draws are unchanged).
            kind: ``none``, ``obstacle`` or ``goal``.

        Returns:
            The layout now in force: ``obstacle_center`` and ``goal``, (2,) lists, metres.
        """
        check_layout_kind("PointObstacle-v0", kind)
        nominal = self._nominal_layout
        centre, goal = nominal.obstacle_center.copy(), nominal.goal.copy()
        if kind == "obstacle":
            side = rng.choice((-1.0, 1.0))
            centre += (side * rng.uniform(*_OBSTACLE_SHIFT["x"]), rng.uniform(*_OBSTACLE_SHIFT["y"]))
        elif kind == "goal":
            goal = np.array([rng.choice((-1.0, 1.0)) * rng.uniform(*_GOAL_SHIFT["x"]),
                             rng.uniform(*_GOAL_SHIFT["y"])])
        m = self.model
        m.geom_pos[m.geom("obstacle").id, :2] = centre
        m.site_pos[m.site("goal").id, :2] = goal
        self.layout = replace(nominal, obstacle_center=centre, goal=goal)
        self._goal_x, self._goal_y = (float(v) for v in goal)
        self._obstacle_x, self._obstacle_y = (float(v) for v in centre)
        self._build_constraint_spec()
        return {"obstacle_center": centre.tolist(), "goal": goal.tolist()}

    def _reset_task(self, options: dict) -> None:
        x0 = self.np_random.uniform(-self.start_spread, self.start_spread)
        self.data.qpos[:] = (x0, self.layout.start_y)
        self.data.qvel[:] = 0.0
        self._mode = None
        self._prev_dist = math.hypot(self._goal_x - x0, self._goal_y - self.layout.start_y)

    def _observation(self) -> np.ndarray:
        obs = np.empty(4, dtype=np.float32)
        obs[:2] = self._qpos
        obs[2:] = self._qvel
        return obs

    def _reward_terms(self, action: np.ndarray) -> dict[str, float]:
        x, y = self._qpos.tolist()
        dist = math.hypot(self._goal_x - x, self._goal_y - y)
        progress, self._prev_dist = self._prev_dist - dist, dist
        if self._mode is None and y >= self._obstacle_y:
            self._mode = "left" if x < self._obstacle_x else "right"
        a0, a1 = action.tolist()
        return {
            "progress": progress,
            "success": 10.0 if dist <= self.goal_radius else 0.0,
            "control": -0.01 * (a0 * a0 + a1 * a1),
        }

    def _is_success(self) -> bool:
        return self._prev_dist <= self.goal_radius

    def _task_info(self) -> dict[str, Any]:
        return {"mode": self._mode, "position": self._qpos[:2].copy()}

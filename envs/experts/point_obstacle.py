"""Scripted expert for PointObstacle-v0: centre line, then a branch left or right, then the goal.

Its action depends only on the state and the side chosen at reset (a velocity field tracked by a
feed-forward + proportional controller). Both sides share every state up to the branch point, so
the demonstrations are genuinely two-modal.
"""

from __future__ import annotations

import numpy as np

from envs.point_obstacle_v0 import PointObstacleEnv, PointObstacleLayout

SIDES = ("left", "right")


def _smoothstep(u: np.ndarray | float) -> float:
    u = float(np.clip(u, 0.0, 1.0))
    return u * u * (3.0 - 2.0 * u)


class PointObstacleExpert:
    """Scripted two-modal expert.

    Args:
        env: The unwrapped env (its ``layout`` gives the scene geometry).
        damping: Joint damping over motor gear, for the velocity feed-forward.
        speed: Cruise speed, m/s.
        branch_distance: How far before the box face (in y) the branch starts, metres.
        clearance: Lateral clearance beyond the box edge, metres.
    """

    name = "scripted"

    def __init__(
        self,
        env: PointObstacleEnv,
        damping: float = 1.0,
        speed: float = 0.5,
        branch_distance: float = 0.25,
        clearance: float = 0.12,
    ) -> None:
        self.layout: PointObstacleLayout = env.layout
        self.damping = damping
        self.speed = speed
        self.branch_distance = branch_distance
        self.clearance = clearance
        self._side = 1.0
        self._mode: str | None = None

    @property
    def mode(self) -> str | None:
        """The side chosen for the current episode."""
        return self._mode

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Alternate sides by episode index, so any even-sized collection is exactly balanced."""
        self._mode = SIDES[episode_index % 2]
        self._side = -1.0 if self._mode == "left" else 1.0

    def desired_velocity(self, pos: np.ndarray) -> np.ndarray:
        """Velocity field for the chosen side: (2,) position -> (2,) velocity."""
        lay = self.layout
        cx, cy = lay.obstacle_center
        hx, hy = lay.obstacle_half
        r = lay.robot_radius
        face = cy - hy - r  # y where the robot touches the near face
        behind = cy + hy + r + 0.05  # y past which the box no longer blocks
        if pos[1] >= behind:
            delta = lay.goal - pos
            dist = np.linalg.norm(delta)
            return delta / max(dist, 1e-9) * min(self.speed, 2.0 * dist)
        lateral_goal = cx + self._side * (hx + r + self.clearance)
        w = _smoothstep((pos[1] - (face - self.branch_distance)) / (0.5 * self.branch_distance))
        x_target = (1.0 - w) * cx + w * lateral_goal
        vx = np.clip(3.0 * (x_target - pos[0]), -self.speed * 1.6, self.speed * 1.6)
        # Slow the forward motion near the face until the robot is clear of the box edge.
        clear = _smoothstep((abs(pos[0] - cx) - hx - 0.5 * r) / (0.5 * r + 0.5 * self.clearance))
        near = _smoothstep((pos[1] - (face - 0.5 * self.branch_distance)) / (0.5 * self.branch_distance))
        vy = self.speed * (1.0 - near * (1.0 - clear))
        return np.array([vx, vy])

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Track the desired velocity: feed-forward for damping plus a proportional term."""
        pos, vel = obs[:2].astype(np.float64), obs[2:4].astype(np.float64)
        v_des = self.desired_velocity(pos)
        action = self.damping * v_des + 2.0 * (v_des - vel)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

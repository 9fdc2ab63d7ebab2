"""Scripted expert for Maze-v0: shortest grid path, line-of-sight shortcuts, velocity tracking.

The shortest path (breadth-first search from the goal, done once by the layout) gives cell-centre
waypoints from the robot's current cell. The robot heads for the furthest of the next few
waypoints it can reach in a straight line with clearance, at cruise speed, slowing only for the
goal. A feed-forward + proportional controller tracks that velocity. The action depends only on the
observation; the waypoints are cached by cell.
"""

from __future__ import annotations

import math

import numpy as np

from envs.maze_layouts import Cell, MazeLayout
from envs.maze_v0 import MazeEnv
from envs.robot_models import velocity_feedforward

_CORNERS = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


class MazeExpert:
    """Scripted shortest-path expert.

    Args:
        env: The unwrapped env (its ``layout`` gives the grid).
        damping: Joint damping over motor gear, for the velocity feed-forward (default: read off
            the env's model, 1 for the MJCF's own damping).
        speed: Cruise speed, m/s.
        approach_gain: Speed per metre of distance near the goal, 1/s (the robot slows to stop).
        lookahead: How many waypoints past the current cell may be aimed at directly.
        clearance: Margin kept from walls beyond the robot radius on a straight shortcut, metres.
    """

    name = "scripted"

    def __init__(
        self,
        env: MazeEnv,
        damping: float | None = None,
        speed: float = 0.7,
        approach_gain: float = 2.5,
        lookahead: int = 4,
        clearance: float = 0.04,
    ) -> None:
        self.layout: MazeLayout = env.layout
        if damping is None:
            damping = velocity_feedforward(env.model)
        self.damping = damping
        self.speed = speed
        self.approach_gain = approach_gain
        self.lookahead = lookahead
        self._margin = self.layout.robot_radius + clearance
        self._goal = np.array(self.layout.goal, dtype=np.float64)
        self._waypoints: dict[Cell, np.ndarray] = {}

    @property
    def mode(self) -> None:
        """The expert has a single mode."""
        return None

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Nothing to choose: the expert is deterministic and the path cache is per layout."""

    def waypoints(self, cell: Cell) -> np.ndarray:
        """``(K, 2)`` cell centres from ``cell`` along the shortest path, up to ``lookahead`` moves on."""
        cached = self._waypoints.get(cell)
        if cached is None:
            cells = [cell]
            while len(cells) <= self.lookahead and cells[-1] != self.layout.goal_cell:
                cells.append(self.layout.next_cell(cells[-1]))
            cached = np.array([self.layout.cell_center(c) for c in cells])
            self._waypoints[cell] = cached
        return cached

    def visible(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the robot can drive straight from ``a`` to ``b`` (``(2,)`` each) with clearance.

        The segment is swept by a square of half-side ``robot_radius + clearance``, sampled more
        densely than the square is wide, so no wall corner slips between samples.
        """
        lay = self.layout
        length = float(np.hypot(*(b - a)))
        n = max(2, math.ceil(length / self._margin) + 1)
        t = np.linspace(0.0, 1.0, n)[:, None]
        pts = (a + t * (b - a))[:, None, :] + self._margin * _CORNERS  # (n, 4, 2)
        rows, cols = lay.shape
        col = np.floor(pts[..., 0] / lay.cell_size + 0.5 * cols).astype(int)
        row = np.floor(0.5 * rows - pts[..., 1] / lay.cell_size).astype(int)
        inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        return bool(inside.all() and lay.free[row, col].all())

    def _current_cell(self, pos: np.ndarray) -> Cell:
        cell = self.layout.cell_of(pos)
        if self.layout.free[cell]:
            return cell
        # The centre has been pushed into a wall cell (contact penetration): use the nearest free
        # neighbour instead.
        r, c = cell
        near = [(r + dr, c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
        near = [n for n in near if self.layout.free[n]]
        return min(near, key=lambda n: float(np.hypot(*(self.layout.cell_center(n) - pos))))

    def target(self, pos: np.ndarray) -> np.ndarray:
        """``(2,)`` point to head for from ``pos``: the furthest waypoint in straight-line sight."""
        wps = self.waypoints(self._current_cell(pos))
        for wp in wps[:0:-1]:
            if self.visible(pos, wp):
                return wp
        # Nothing in sight with the full clearance (robot hugging a wall): the next cell centre is
        # still reachable in a straight line, as the current and the next cell form a rectangle.
        return wps[1] if len(wps) > 1 else wps[0]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Track the desired velocity: feed-forward for damping plus a proportional term."""
        pos, vel = obs[:2].astype(np.float64), obs[2:4].astype(np.float64)
        target = self.target(pos)
        delta = target - pos
        dist = float(np.hypot(*delta))
        speed = self.speed
        if np.array_equal(target, self._goal):
            speed = min(speed, self.approach_gain * dist)
        v_des = delta / max(dist, 1e-9) * speed
        action = self.damping * v_des + 2.0 * (v_des - vel)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

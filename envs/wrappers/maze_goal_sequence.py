"""A multi-stage Maze-v0: visit several goal cells in order, the maze's own goal last.

At each reset ``n_goals - 1`` intermediate goal cells are drawn (with the env's ``np_random``, so
``reset(seed=s)`` stays reproducible) among the free cells other than the start's and the goal's,
each reachable without crossing the goal cell (the env ends the episode there), and no two in a
row equal. The observation's goal slot holds the current goal. A goal counts as visited when the
robot's centre comes within the env's ``goal_radius`` of its cell centre.

Reward terms: ``progress`` (decrease of the distance to the current goal), ``success`` (10 per goal
visited) and the env's own ``control``; ``info["goal_index"]`` counts the goals visited and
``info["is_success"]`` is True once all are, which terminates the episode.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from envs.maze_layouts import Cell, MazeLayout

_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _reachable_without(layout: MazeLayout, start: Cell, blocked: Cell) -> set[Cell]:
    """Free cells reachable from ``start`` without entering ``blocked``."""
    seen, frontier = {start}, [start]
    while frontier:
        r, c = frontier.pop()
        for dr, dc in _STEPS:
            cell = (r + dr, c + dc)
            if cell != blocked and cell not in seen and layout.free[cell]:
                seen.add(cell)
                frontier.append(cell)
    return seen


class MazeGoalSequence(gym.Wrapper):
    """Visit ``n_goals`` maze cells in order; the last one is the maze's own goal.

    Args:
        env: A ``kinodiff/Maze-v0`` env (observation ``[x, y, vx, vy, goal_x, goal_y]``).
        n_goals: Goals per episode, >= 1 (1 is the plain task).
    """

    def __init__(self, env: gym.Env, n_goals: int = 3) -> None:
        super().__init__(env)
        layout = getattr(env.unwrapped, "layout", None)
        if not isinstance(layout, MazeLayout):
            raise ValueError(f"MazeGoalSequence needs a kinodiff/Maze-v0 env; got {env.unwrapped!r}")
        if int(n_goals) != n_goals or n_goals < 1:
            raise ValueError(f"n_goals {n_goals!r} must be an integer >= 1")
        self.n_goals = int(n_goals)
        self.layout = layout
        self.goals = np.zeros((self.n_goals, 2))
        self._index = 0
        self._dist = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the maze and draw the intermediate goals."""
        obs, info = self.env.reset(seed=seed, options=options)
        lay, rng = self.layout, self.env.unwrapped.np_random
        start = lay.cell_of(obs[:2])
        choices = sorted(_reachable_without(lay, start, lay.goal_cell) - {start, lay.goal_cell})
        cells: list[Cell] = []
        for _ in range(self.n_goals - 1):
            options_left = [c for c in choices if not cells or c != cells[-1]]
            cells.append(options_left[int(rng.integers(len(options_left)))])
        self.goals = np.array([lay.cell_center(c) for c in cells] + [np.asarray(lay.goal)], dtype=np.float64)
        self._index = 0
        self._dist = self._distance(obs)
        return self._observe(obs), {**info, "goal_index": 0, "goals": self.goals.copy()}

    def step(self, action):
        """Step the maze; advance the goal when it is reached."""
        obs, _, terminated, truncated, info = self.env.step(action)
        dist = self._distance(obs)
        progress, bonus = self._dist - dist, 0.0
        if dist <= self.env.unwrapped.goal_radius and self._index < self.n_goals:
            bonus, self._index = 10.0, self._index + 1
            dist = self._distance(obs)  # to the next goal: progress restarts from here
        self._dist = dist
        success = self._index == self.n_goals
        terms = {"progress": progress, "success": bonus, "control": info["reward_control"]}
        info = {**info, **{f"reward_{k}": v for k, v in terms.items()}, "is_success": success,
                "goal_index": self._index}
        # The maze ends the episode at its own goal (or on divergence): the sequence ends with it.
        return self._observe(obs), float(sum(terms.values())), bool(terminated or success), truncated, info

    def _current(self) -> np.ndarray:
        return self.goals[min(self._index, self.n_goals - 1)]

    def _distance(self, obs: np.ndarray) -> float:
        gx, gy = self._current()
        return math.hypot(gx - float(obs[0]), gy - float(obs[1]))

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        obs = np.array(obs, dtype=np.float32, copy=True)
        obs[4:6] = self._current()
        return obs

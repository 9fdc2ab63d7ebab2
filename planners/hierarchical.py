"""Hierarchical planning: graph search over a roadmap proposes subgoals, a low level reaches them.

The high level runs A* over a roadmap (a maze's free cells) from the robot's node to the goal's
and hands the low level the node ``lookahead`` steps along the path (the goal itself on the last
stretch). The low level is any planner with ``plan(state, goal)`` (the sampling MPC by default) or
any callable policy wrapped in :class:`CallableLowLevel`.

The path is recomputed on schedule (every ``replan_every`` calls), when the goal changes, on
failure (no progress towards the subgoal for ``stall_steps`` calls: the edge being followed gets a
penalty, so A* may route around it, and the low level's warm start is dropped), and when an
external alarm fires (``alarm(state, plan) -> bool``, e.g. an uncertainty monitor, or
:meth:`HierarchicalPlanner.request_replan`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planners.base import Plan, check_state
from planners.roadmap import Roadmap, grid_roadmap


@dataclass(kw_only=True)
class HierarchicalConfig:
    """Hierarchical planner settings."""

    low_level: str = "predictive_sampling"
    """Registered planner that reaches each subgoal."""
    low_level_settings: dict[str, Any] = field(default_factory=lambda: {
        "horizon": 24, "knots": 4, "substeps": 1, "samples": 48, "interpolation": "linear"})
    """Config fields of the low level (the defaults plan with a timestep of one control step)."""
    lookahead: int = 2
    """The subgoal is the path node this many edges ahead of the robot's node."""
    replan_every: int = 25
    """Recompute the path every this many calls (0: only on failure, goal change or alarm)."""
    stall_steps: int = 20
    """Calls without ``stall_progress`` towards the subgoal that count as a failure."""
    stall_progress: float = 0.02
    """Least decrease of the subgoal distance that counts as progress, metres."""
    edge_penalty: float = 2.0
    """Cost added to the edge followed when a failure is detected, metres."""
    position: tuple[int, int] = (0, 1)
    """qpos indices of the robot's position in the roadmap's plane."""
    seed: int = 0
    """Seed of the low level when ``reset`` is given none."""

    def __post_init__(self) -> None:
        if self.lookahead < 1:
            raise ValueError(f"lookahead {self.lookahead} must be >= 1")
        if self.replan_every < 0 or self.stall_steps < 1:
            raise ValueError(f"replan_every {self.replan_every} must be >= 0 and stall_steps "
                             f"{self.stall_steps} >= 1")
        if self.stall_progress < 0 or self.edge_penalty < 0:
            raise ValueError(f"stall_progress {self.stall_progress} and edge_penalty "
                             f"{self.edge_penalty} must be >= 0")


class CallableLowLevel:
    """Any policy ``fn(state, subgoal) -> action`` as a low level (one-step plans, clipped to bounds).

    Args:
        fn: The policy.
        ctrl_low: ``(Da,)`` lower action bounds.
        ctrl_high: ``(Da,)`` upper action bounds.
    """

    name = "callable"

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], ctrl_low: np.ndarray,
                 ctrl_high: np.ndarray) -> None:
        self.fn = fn
        self.ctrl_low, self.ctrl_high = np.asarray(ctrl_low, float), np.asarray(ctrl_high, float)

    def reset(self, seed: int | None = None) -> None:
        """Stateless."""

    def plan(self, state: np.ndarray, goal: np.ndarray | None = None) -> Plan:
        """One action towards ``goal``."""
        action = np.clip(np.asarray(self.fn(state, goal), float), self.ctrl_low, self.ctrl_high)
        return Plan(actions=action[None], states=None, cost=float("nan"))


class HierarchicalPlanner:
    """A* over a roadmap for subgoals, a low-level planner to reach them, and replanning.

    Args:
        roadmap: The graph the high level searches.
        low_level: Reaches subgoals: ``reset(seed)``, ``plan(state, goal) -> Plan``.
        nq: Joint positions in the state (positions are read at ``state[1:1 + nq]``).
        config: Settings.
        alarm: Optional ``alarm(state, last_plan) -> bool``; True forces a replan.
    """

    name = "hierarchical"
    config_class = HierarchicalConfig

    def __init__(self, roadmap: Roadmap, low_level, nq: int, config: HierarchicalConfig | None = None,
                 alarm: Callable[[np.ndarray, Plan | None], bool] | None = None) -> None:
        self.config = config or HierarchicalConfig()
        self.roadmap = roadmap
        self.low_level = low_level
        self.alarm = alarm
        self.ctrl_low, self.ctrl_high = low_level.ctrl_low, low_level.ctrl_high
        self._nq = nq
        self._nstate = getattr(getattr(low_level, "rollout", None), "nstate", None)
        self.reset()

    @classmethod
    def from_env(cls, env, config: HierarchicalConfig | None = None, cost=None):
        """Build for a grid-maze task (``env.unwrapped.layout``) with a registered low level."""
        from planners.registry import make_planner

        config = config or HierarchicalConfig()
        layout = getattr(env.unwrapped, "layout", None)
        if not all(hasattr(layout, a) for a in ("free", "cell_center", "cell_of")):
            name = env.spec.id if env.spec else env
            raise ValueError(f"planner 'hierarchical' needs a grid roadmap; {name} exposes no maze "
                             "layout (expected env.unwrapped.layout with free cells)")
        low = make_planner(config.low_level, env, cost, **config.low_level_settings)
        return cls(grid_roadmap(layout), low, env.unwrapped.model.nq, config)

    def reset(self, seed: int | None = None) -> None:
        """Forget the path, counters and the low level's warm start."""
        self._seed = self.config.seed if seed is None else seed
        self.low_level.reset(self._seed)
        self._path: list[int] = []
        self._goal: np.ndarray | None = None
        self._penalties: dict[tuple[int, int], float] = {}
        self._calls = self._since_replan = self._stalled = 0
        self._best_dist = np.inf
        self._subgoal: np.ndarray | None = None
        self._last: Plan | None = None
        self._pending: str | None = None
        self.replans: dict[str, int] = {"start": 0, "schedule": 0, "goal": 0, "failure": 0, "alarm": 0}
        """How often the path was recomputed, by reason."""

    def request_replan(self, reason: str = "alarm") -> None:
        """Recompute the path (and drop the low level's warm start) on the next call."""
        self._pending = reason

    def plan(self, state: np.ndarray, goal: np.ndarray | None = None) -> Plan:
        """The low level's plan towards the current subgoal on the way to ``goal``."""
        if self._nstate is not None:
            state = check_state(state, self._nstate)
        if goal is None:
            raise ValueError("planner 'hierarchical' needs a goal position; got None")
        goal = np.asarray(goal, dtype=np.float64)
        pos = np.asarray(state, dtype=np.float64)[1:1 + self._nq][list(self.config.position)]
        reason = self._replan_reason(state, goal)
        if reason is not None:
            self._replan(pos, goal, reason)
        node = self.roadmap.locate(pos)
        if node in self._path:
            # Progress along the path: drop the nodes behind the robot.
            self._path = self._path[self._path.index(node):]
        subgoal = self._pick_subgoal(goal)
        dist = float(np.linalg.norm(subgoal - pos))
        if self._subgoal is None or not np.array_equal(subgoal, self._subgoal):
            self._subgoal, self._best_dist, self._stalled = subgoal, dist, 0
        elif dist < self._best_dist - self.config.stall_progress:
            self._best_dist, self._stalled = dist, 0
        else:
            self._stalled += 1
        plan = self.low_level.plan(state, subgoal)
        plan.diagnostics.update(subgoal=subgoal.copy(), path=self.roadmap.nodes[self._path].copy(),
                                replans=dict(self.replans), replan_reason=reason)
        self._calls += 1
        self._since_replan += 1
        self._last = plan
        return plan

    def _replan_reason(self, state: np.ndarray, goal: np.ndarray) -> str | None:
        cfg = self.config
        if self._pending is not None:
            reason, self._pending = self._pending, None
            return reason
        if not self._path:
            return "start"
        if self._goal is None or not np.array_equal(goal, self._goal):
            return "goal"
        if self._stalled >= cfg.stall_steps:
            return "failure"
        if self.alarm is not None and self.alarm(state, self._last):
            return "alarm"
        if cfg.replan_every and self._since_replan >= cfg.replan_every:
            return "schedule"
        return None

    def _replan(self, pos: np.ndarray, goal: np.ndarray, reason: str) -> None:
        start = self.roadmap.locate(pos)
        if reason == "failure" and len(self._path) > 1:
            # Penalize the edge the robot could not get along, both ways.
            a, b = self._path[0], self._path[1]
            for edge in ((a, b), (b, a)):
                self._penalties[edge] = self._penalties.get(edge, 0.0) + self.config.edge_penalty
        if reason in ("failure", "alarm"):
            self.low_level.reset(self._seed + sum(self.replans.values()))
        path = self.roadmap.shortest_path(start, self.roadmap.locate(goal), self._penalties)
        if not path:
            raise ValueError(f"goal {goal.tolist()} cannot be reached on the roadmap from {pos.tolist()}")
        self._path, self._goal = path, goal.copy()
        self._since_replan, self._stalled, self._subgoal = 0, 0, None
        self.replans[reason] += 1

    def _pick_subgoal(self, goal: np.ndarray) -> np.ndarray:
        k = self.config.lookahead
        if len(self._path) <= k:
            return goal
        return self.roadmap.nodes[self._path[k]]

"""The planner contract: ``reset()``, ``plan(state) -> Plan``, actions inside the control bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from envs.physics_rollout import physics_state


@dataclass(kw_only=True)
class Plan:
    """One plan from a state: T actions, optionally the states they are predicted to reach."""

    actions: np.ndarray
    """``(T, Da)`` actions, inside the planner's bounds; the first is executed next."""
    states: np.ndarray | None
    """``(T, nq)`` predicted joint positions after each action, or ``None``."""
    cost: float
    """The plan's cost under the planner's objective (lower is better)."""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    """Planner-specific figures (sample costs, subgoals, replanning reasons, ...)."""


@runtime_checkable
class Planner(Protocol):
    """What every registered planner provides.

    ``plan`` takes the full-physics state vector of the task's simulation (``env_state(env)``) and
    an optional goal (task coordinates, e.g. a maze position); it never changes either.
    """

    name: str
    ctrl_low: np.ndarray
    """``(Da,)`` lower action bounds."""
    ctrl_high: np.ndarray
    """``(Da,)`` upper action bounds."""

    def reset(self, seed: int | None = None) -> None:
        """Forget warm starts and episode state; reseed the sampler."""
        ...

    def plan(self, state: np.ndarray, goal: np.ndarray | None = None) -> Plan:
        """Plan from ``state`` towards ``goal`` (or the task's own goal)."""
        ...


def env_state(env: gym.Env, out: np.ndarray | None = None) -> np.ndarray:
    """The full-physics state of a MuJoCo env (kinodiff or Gymnasium), read through ``unwrapped``."""
    u = env.unwrapped
    if not hasattr(u, "model") or not hasattr(u, "data"):
        raise ValueError(f"env {env.spec.id if env.spec else env!r} has no MuJoCo model/data; "
                         "expected a MuJoCo task (kinodiff/* or Gymnasium's MuJoCo envs)")
    return physics_state(u.model, u.data, out)


def check_state(state: np.ndarray, nstate: int) -> np.ndarray:
    """Return ``state`` as a float64 array after checking its shape and values."""
    arr = np.asarray(state, dtype=np.float64)
    if arr.shape != (nstate,):
        raise ValueError(f"state has shape {arr.shape}; expected ({nstate},), the full-physics "
                         "state from planners.env_state(env)")
    if not np.isfinite(arr).all():
        raise ValueError("state has non-finite values; expected a finite full-physics state")
    return arr

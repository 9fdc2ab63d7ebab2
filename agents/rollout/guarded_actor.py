"""An actor whose every command passes the runtime dynamics guard before the env steps it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from planners.dynamics_guard import DynamicsGuard, DynamicsGuardConfig


class GuardedActor:
    """Wraps an actor: each action is checked and repaired by ``planners.dynamics_guard``.

    The guard simulates the action on a cloned ``MjData`` of the env (plus a braking continuation)
    and moves it towards braking when a joint would leave its range or exceed its speed limit, so
    the limits of the task's ``constraint_spec`` hold on the executed trajectory, not only on the
    sampled actions.

    Args:
        actor: The wrapped actor (``agents.rollout.actors.Actor``).
        env: The env the actions go to (a MuJoCo task with ``constraint_spec``); read only.
        config: Guard settings.
    """

    def __init__(self, actor, env: gym.Env, config: DynamicsGuardConfig | None = None) -> None:
        task = env.unwrapped
        self.actor = actor
        self.source = actor.source
        self._data = task.data
        self.guard = DynamicsGuard(task.model, task.constraint_spec, task.frame_skip, config)

    def reset(self, episode_index: int, seed: int) -> None:
        """Start an episode (the guard reads the rate limit's reference from the env's controls)."""
        self.actor.reset(episode_index, seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The wrapped actor's action, made safe for the env's current state."""
        action = self.actor.act(obs)
        return self.guard.filter(action, self._data).sent.astype(np.asarray(action).dtype)

    def pop_latencies(self) -> list[float]:
        """The wrapped actor's chunk latencies."""
        return self.actor.pop_latencies()

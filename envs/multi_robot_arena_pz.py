"""MultiRobotArena as a PettingZoo ``ParallelEnv``: one agent per robot, one shared simulation.

It wraps :class:`~envs.multi_robot_arena_v0.MultiRobotArenaEnv` (the Gymnasium env over the
stacked robots), so both views step the same physics and see the same numbers: agent
``robot_i``'s observation is row ``i`` of the stacked observation, its action is
``action[2i:2i+2]``, and its reward is ``robot_rewards[i]`` (the team reward is their mean).

All robots live and end together: every agent is terminated when all robots are at their goals
(or the simulation diverged), and truncated after ``max_cycles`` steps. An agent that reached its
goal stays in play, since others may push it off and it must hold its place.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle
from pettingzoo import ParallelEnv

from envs.multi_robot_arena_v0 import MAX_EPISODE_STEPS, MultiRobotArenaEnv


class MultiRobotArenaParallelEnv(ParallelEnv, EzPickle):
    """N robots in one arena as PettingZoo agents ``robot_0`` .. ``robot_{N-1}``.

    Per agent: observation ``(D,)`` float32 (see :class:`MultiRobotArenaEnv`), action ``(2,)`` in
    ``[-1, 1]``, reward ``robot_rewards[i]``, info ``{"at_goal", "is_success", "diverged"}``
    (``is_success``: every robot at its goal). ``state()`` is the stacked observation.

    Args:
        n_robots: Number of robots, 2..64.
        max_cycles: Steps before every agent is truncated; the Gymnasium id's time limit by default.
        render_mode: ``None`` or ``"rgb_array"``.
        **env_kwargs: Passed on to :class:`MultiRobotArenaEnv` (``n_neighbors``, ``goal_radius``, ...).
    """

    metadata = {
        "name": "multi_robot_arena_v0",
        "render_modes": ["rgb_array"],
        "render_fps": 20,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        n_robots: int = 8,
        max_cycles: int = MAX_EPISODE_STEPS,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        if isinstance(max_cycles, bool) or int(max_cycles) != max_cycles or max_cycles < 1:
            raise ValueError(f"max_cycles {max_cycles!r} is invalid; expected an integer >= 1")
        EzPickle.__init__(self, n_robots, max_cycles, render_mode, **env_kwargs)
        self.env = MultiRobotArenaEnv(n_robots=n_robots, render_mode=render_mode, **env_kwargs)
        self.render_mode = render_mode
        self.max_cycles = int(max_cycles)
        lay = self.env.layout
        self.possible_agents = [f"robot_{i}" for i in range(lay.n_robots)]
        self.agents: list[str] = []
        # One space object per agent, built once: PettingZoo seeds each agent's space separately.
        self.observation_spaces = {
            a: gym.spaces.Box(-np.inf, np.inf, shape=(lay.obs_dim,), dtype=np.float32)
            for a in self.possible_agents
        }
        low, high = self.env.action_space.low[:2], self.env.action_space.high[:2]
        self.action_spaces = {
            a: gym.spaces.Box(low=low, high=high, dtype=np.float32) for a in self.possible_agents
        }
        self.state_space = self.env.observation_space
        self._state = np.zeros(self.state_space.shape, dtype=np.float32)
        self._cycles = 0

    def observation_space(self, agent: str) -> gym.spaces.Box:
        """The observation space of ``agent`` (the same object on every call)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gym.spaces.Box:
        """The action space of ``agent`` (the same object on every call)."""
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` makes it reproducible bit for bit (as the Gymnasium env)."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = self.possible_agents[:]
        self._cycles = 0
        self._state = obs
        return self._split(obs), self._agent_infos(info)

    def step(self, actions: dict[str, np.ndarray]):
        """Step every live agent; ``actions`` must hold one ``(2,)`` action per live agent.

        A missing or unknown agent, a wrong shape or a non-finite value raises ``ValueError``
        naming the agent; an out-of-range action is clipped (as the Gymnasium env does).
        """
        if not self.agents:
            raise RuntimeError("step() called with no live agents; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.observation_spaces]
        if missing or unknown:
            raise ValueError(
                f"actions for {sorted(actions)} do not match the live agents: missing {missing}, "
                f"unknown {unknown}; expected exactly {self.agents}"
            )
        parts = [np.asarray(actions[a], dtype=np.float64) for a in self.possible_agents]
        for agent, part in zip(self.possible_agents, parts, strict=True):
            if part.shape != (2,):  # checked per agent: a 3 and a 1 would stack to a valid total
                raise ValueError(f"action of agent {agent!r} has shape {part.shape}; expected (2,)")
        stacked = np.concatenate(parts)
        if not np.isfinite(stacked).all():  # the base would reject it too, but not name the agent
            agent, part = next((a, p) for a, p in zip(self.possible_agents, parts, strict=True)
                               if not np.isfinite(p).all())
            raise ValueError(f"action of agent {agent!r} {part.tolist()} has non-finite values; "
                             "expected finite numbers")
        obs, _, terminated, truncated, info = self.env.step(stacked)
        self._cycles += 1
        truncated = truncated or self._cycles >= self.max_cycles
        self._state = obs
        agents = self.agents
        # A diverged state is meaningless: zero rewards, as the Gymnasium env's team reward.
        robot_rewards = [0.0] * len(agents) if info["diverged"] else self.env.robot_rewards.tolist()
        rewards = dict(zip(agents, robot_rewards, strict=True))
        terminations = dict.fromkeys(agents, bool(terminated))
        truncations = dict.fromkeys(agents, bool(truncated and not terminated))
        observations, infos = self._split(obs), self._agent_infos(info)
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The stacked observation of all robots, ``(N * D,)``."""
        return self._state.copy()

    def render(self):
        """Top-camera frame of the arena (``render_mode="rgb_array"``)."""
        return self.env.render()

    def close(self):
        """Release the renderer."""
        self.env.close()

    def _split(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        rows = obs.reshape(len(self.possible_agents), -1)  # obs is a fresh copy: rows may be views
        return dict(zip(self.possible_agents, rows, strict=True))

    def _agent_infos(self, info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        at_goal = info["at_goal"].tolist()
        success, diverged = info["is_success"], info.get("diverged", False)
        return {
            a: {"at_goal": at_goal[i], "is_success": success, "diverged": diverged}
            for i, a in enumerate(self.possible_agents)
        }

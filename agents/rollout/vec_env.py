"""An SB3 ``VecEnv`` backed by the rollout workers, so any SB3 algorithm trains on Ray.

``RolloutVecEnv(env_factory, PoolConfig(workers=W, envs_per_worker=M))`` exposes ``W * M`` envs;
env ``k`` is slot ``k % M`` of worker ``k // M``. Each ``step`` sends every worker its slice of the
actions in one call and the workers step their envs in parallel, auto-resetting those that end
(``terminal_observation`` and ``TimeLimit.truncated`` in the infos, as SB3 expects). With
``workers=0`` the same worker runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from agents.rollout.pool import PoolConfig, RolloutPool


class RolloutVecEnv(VecEnv):
    """SB3 vectorized env over a :class:`~agents.rollout.pool.RolloutPool` (local or Ray).

    Args:
        env_factory: Picklable callable returning a fresh env (Box or Discrete spaces).
        config: Workers, envs per worker, Ray address, step timeout.
    """

    def __init__(self, env_factory: Callable[[], gym.Env], config: PoolConfig | None = None) -> None:
        probe = env_factory()
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
        self.pool = RolloutPool(env_factory, None, config)
        self._m = self.pool.config.envs_per_worker
        self._actions: np.ndarray | None = None
        super().__init__(self.pool.num_envs, obs_space, act_space)

    def _by_worker(self, indices: VecEnvIndices) -> list[list[int]]:
        """Env indices -> each worker's slot list (empty for workers not addressed)."""
        slots: list[list[int]] = [[] for _ in range(self.pool.n_workers)]
        for k in self._get_indices(indices):
            slots[k // self._m].append(k % self._m)
        return slots

    def reset(self) -> np.ndarray:
        """Reset every env with the seeds and options set since the last reset."""
        m = self._m
        args = [(self._seeds[w * m:(w + 1) * m], self._options[w * m:(w + 1) * m])
                for w in range(self.pool.n_workers)]
        parts = self.pool.call_workers("reset_envs", args)
        self.reset_infos = [info for _, infos in parts for info in infos]
        self._reset_seeds()
        self._reset_options()
        return np.stack([o for obs, _ in parts for o in obs])

    def step_async(self, actions: np.ndarray) -> None:
        """Hold the actions; ``step_wait`` sends every worker its slice in one call."""
        self._actions = np.asarray(actions)

    def step_wait(self):
        """Step all envs; returns ``(obs, rewards, dones, infos)`` in SB3's convention."""
        m, actions = self._m, self._actions
        parts = self.pool.call_workers(
            "step_envs", [(actions[w * m:(w + 1) * m],) for w in range(self.pool.n_workers)])
        obs = np.stack([o for p in parts for o in p[0]])
        rewards = np.concatenate([p[1] for p in parts])
        terminated = np.concatenate([p[2] for p in parts])
        truncated = np.concatenate([p[3] for p in parts])
        infos = [info for p in parts for info in p[4]]
        for k, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(truncated[k] and not terminated[k])
            if "reset_info" in info:
                self.reset_infos[k] = info.pop("reset_info")
        return obs, rewards, terminated | truncated, infos

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each env."""
        slots = self._by_worker(indices)
        out = self.pool.call_workers("get_env_attr", [(attr_name, s) for s in slots])
        return [x for part in out for x in part]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on each env."""
        slots = self._by_worker(indices)
        self.pool.call_workers("set_env_attr", [(attr_name, value, s) for s in slots])

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None,
                   **method_kwargs) -> list[Any]:
        """Call a method of each env."""
        slots = self._by_worker(indices)
        out = self.pool.call_workers("call_env", [(method_name, s, method_args, method_kwargs)
                                                  for s in slots])
        return [x for part in out for x in part]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        """Whether each env is wrapped by ``wrapper_class``."""
        slots = self._by_worker(indices)
        out = self.pool.call_workers("env_is_wrapped", [(wrapper_class, s) for s in slots])
        return [x for part in out for x in part]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's rendered frame."""
        return self.env_method("render")

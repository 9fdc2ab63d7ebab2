"""A VecEnv wrapper that runs a frozen chunked policy batched and adds a bounded residual.

ResiP (Ankile et al. 2024) and ResFiT: the RL agent sees ``[obs, base action]`` and outputs
``a`` in [-1, 1]; the env executes ``clip(base + scale * clip(a, -1, 1) * half_range)``. The
agent's action is bounded already (SB3's PPO clips its Gaussian into the Box, SAC squashes with
tanh), so the residual is linear in it and reaches the full ``scale``; a further tanh would cap it
at ``tanh(1) = 0.76`` of ``scale`` and flatten it near the bound. The base
policy keeps one action queue per env (receding horizon, Ta of H) and all envs whose queue ran out
or whose episode restarted get their next chunk from ONE batched network call.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from policies import Policy


class ResidualVecEnv(VecEnvWrapper):
    """Base policy + residual action, per env step.

    Args:
        venv: Vectorized task (flat Box observations and actions).
        base: Frozen chunked policy (``predict_action_chunk`` on ``[B, To, Do]``).
        scale: Largest residual as a fraction of the action half range.
        seed: Seed of the base policy's sampling noise.
    """

    def __init__(self, venv: VecEnv, base: Policy, scale: float = 0.2, seed: int = 0) -> None:
        if not 0 < scale <= 2:
            raise ValueError(f"residual scale={scale}; expected 0 < scale <= 2 (fraction of the range)")
        obs_space, act_space = venv.observation_space, venv.action_space
        c = base.config
        if obs_space.shape != (c.obs_dim,) or act_space.shape != (c.action_dim,):
            raise ValueError(f"task spaces {obs_space.shape}/{act_space.shape} do not fit the base "
                             f"policy's obs_dim={c.obs_dim}, action_dim={c.action_dim}")
        self.base, self.scale = base, float(scale)
        self.low, self.high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
        self.mid, self.half = (self.high + self.low) / 2, (self.high - self.low) / 2
        n, To, Ta = venv.num_envs, c.n_obs_steps, c.n_action_steps
        self.history = np.zeros((n, To, c.obs_dim), dtype=np.float32)
        self.queue = np.zeros((n, Ta, c.action_dim), dtype=np.float32)
        self.cursor = np.full(n, Ta)  # Ta = empty queue
        self.base_action = np.zeros((n, c.action_dim), dtype=np.float32)
        base.eval()
        base.reset(seed=seed)
        observation_space = gym.spaces.Box(-np.inf, np.inf, (c.obs_dim + c.action_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (c.action_dim,), np.float32)
        super().__init__(venv, observation_space=observation_space, action_space=action_space)

    def _chunks(self, history: np.ndarray) -> np.ndarray:
        """[m, To, Do] -> [m, Ta, Da] raw actions, one batched call."""
        return self.base.predict_action_chunk(torch.from_numpy(history)).numpy()

    def _advance(self, restart: np.ndarray) -> None:
        """Pop each env's next base action; refill (batched) the queues that ran out or restarted."""
        Ta = self.queue.shape[1]
        need = np.flatnonzero(restart | (self.cursor >= Ta))
        if need.size:
            self.queue[need] = self._chunks(self.history[need])
            self.cursor[need] = 0
        self.base_action = self.queue[np.arange(len(self.cursor)), self.cursor]
        self.cursor += 1

    def _augment(self, obs: np.ndarray, base_action: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, (base_action - self.mid) / self.half], axis=-1).astype(np.float32)

    def combined_action(self, actions: np.ndarray) -> np.ndarray:
        """[n, Da] agent actions in [-1, 1] -> [n, Da] executed actions (base + residual, clipped)."""
        a = np.clip(np.asarray(actions, dtype=np.float32), -1.0, 1.0)
        residual = self.scale * a * self.half
        return np.clip(self.base_action + residual, self.low, self.high)

    def reset(self) -> np.ndarray:
        """Reset every env and queue a fresh base chunk for each."""
        obs = self.venv.reset()
        self.history[:] = obs[:, None]
        self._advance(np.ones(len(obs), dtype=bool))
        return self._augment(obs, self.base_action)

    def step_async(self, actions: np.ndarray) -> None:
        """Send base + residual to the envs."""
        self.venv.step_async(self.combined_action(actions))

    def step_wait(self):
        """Step, keep per-env histories, and return ``[obs, next base action]``."""
        obs, rewards, dones, infos = self.venv.step_wait()
        truncated = [i for i in np.flatnonzero(dones) if infos[i].get("TimeLimit.truncated")]
        if truncated:
            # Value bootstrapping needs the base action the policy would take at the cut.
            hist = np.stack([np.concatenate([self.history[i, 1:], infos[i]["terminal_observation"][None]])
                             for i in truncated]).astype(np.float32)
            first = self._chunks(hist)[:, 0]
            for j, i in enumerate(truncated):
                infos[i]["terminal_observation"] = self._augment(infos[i]["terminal_observation"], first[j])
        for i in np.flatnonzero(dones):
            if i not in truncated:
                infos[i]["terminal_observation"] = self._augment(infos[i]["terminal_observation"],
                                                                 self.base_action[i])
        self.history[:, :-1] = self.history[:, 1:]
        self.history[:, -1] = obs
        self.history[dones] = obs[dones][:, None]  # a new episode: pad with its first observation
        self._advance(dones.astype(bool))
        return self._augment(obs, self.base_action), rewards, dones, infos

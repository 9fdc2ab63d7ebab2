"""Pieces every SB3-based trainer shares: env factories, vectorization, step counting, curves.

The RL trainers (experts, residual RL, DPPO) differ in the policy and the env wrapping; the env
construction, the count of real environment steps and the learning-curve log live here once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.rollout.env_factory import EnvFactory
from agents.train.checkpoint import latest_checkpoint
from envs.registry import ENV_SPECS
from envs.wrappers import ActionChunk, FrameStackObservation
from policies import Policy, load_policy


@dataclass(frozen=True)
class ChunkedEnvFactory:
    """Builds ``env_id`` seen by a chunked policy: To stacked observations in, Ta actions out.

    ``FrameStackObservation`` (reset padding, like ``Policy.select_action``) sits inside
    ``ActionChunk``, so the observation after a chunk is the last To consecutive env observations,
    exactly the history the policy was trained on. ``Monitor`` outside records episode returns,
    lengths in chunks, and ``is_success``.
    """

    env_id: str
    """Task id."""
    n_obs_steps: int
    """To."""
    n_action_steps: int
    """Ta."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""

    def __call__(self) -> gym.Env:
        """A fresh chunked env."""
        env = EnvFactory(self.env_id, self.kwargs)()
        env = ActionChunk(FrameStackObservation(env, self.n_obs_steps, padding_type="reset"),
                          self.n_action_steps)
        return monitored(env, self.env_id)


def monitored(env: gym.Env, env_id: str) -> Monitor:
    """SB3's ``Monitor``, recording ``is_success`` for kinodiff tasks (every step reports it)."""
    return Monitor(env, info_keywords=("is_success",) if env_id in ENV_SPECS else ())


REWARDS = ("env", "success")
"""What the RL trainers optimize: the task's own reward, or 1 on every step whose info says
``is_success`` (a sparse task-success reward, as DPPO and ResiP fine-tune with)."""


def check_reward(reward: str) -> None:
    """Raise a ValueError naming ``reward`` unless it is one of ``REWARDS``."""
    if reward not in REWARDS:
        raise ValueError(f"reward={reward!r}; expected one of {list(REWARDS)}")


class SuccessReward(gym.Wrapper):
    """Replaces the reward with ``float(info["is_success"])``; the info (reward terms) is untouched.

    Put it outside ``Monitor``, so episode returns in logs and evaluations stay the task's own.
    """

    def step(self, action):
        """Step, reward 1.0 where the task reports success, else 0.0.

        Raises:
            ValueError: The task does not report ``is_success`` (its reward would be 0 forever).
        """
        obs, _, terminated, truncated, info = self.env.step(action)
        if "is_success" not in info:
            name = self.env.spec.id if self.env.spec is not None else type(self.env.unwrapped).__name__
            raise ValueError(f"reward='success' needs info['is_success'] on every step; {name} does not "
                             "report it (use reward='env')")
        return obs, float(bool(info["is_success"])), terminated, truncated, info


def make_vec_env(factory, n_envs: int, seed: int, wrap=None) -> VecEnv:
    """``n_envs`` copies in one process (2 cores: no subprocesses), seeded ``seed + i``.

    Args:
        factory: Picklable callable returning a fresh env.
        n_envs: Number of envs.
        seed: Seed of the first env.
        wrap: Optional ``env -> env`` applied to each (e.g. an action decoder).
    """
    def build(i: int):
        def thunk():
            env = factory()
            return wrap(env) if wrap is not None else env
        return thunk

    venv = DummyVecEnv([build(i) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def load_base_policy(run: str) -> tuple[Policy, dict[str, Any], Path]:
    """A saved kinodiff policy from a run folder (latest checkpoint) or a policy folder."""
    path = Path(run)
    if not (path / "policy.json").is_file():
        ckpt = latest_checkpoint(path / "checkpoints")
        if ckpt is None:
            raise FileNotFoundError(f"no policy in {run!r}; expected a run folder with "
                                    "checkpoints/latest.json or a folder with policy.json")
        path = ckpt
    policy, meta = load_policy(path)
    return policy, meta, path


class EnvStepCounter(BaseCallback):
    """Counts real environment steps (a chunk of Ta actions is Ta steps, fewer when it ends early)."""

    def __init__(self) -> None:
        super().__init__()
        self.env_steps = 0

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        self.env_steps += sum(int(info.get("executed_steps", 1)) for info in infos)
        return True


class CurveLogger(BaseCallback):
    """Run after each ``EvalCallback`` evaluation: appends one JSON line to ``path``.

    Each line: ``timesteps`` (SB3 steps), ``env_steps`` (real), ``wall_s``, ``return_mean`` and
    ``success_rate`` of the evaluation.
    """

    def __init__(self, path: Path, counter: EnvStepCounter, step_scale: int = 1) -> None:
        super().__init__()
        self.path = Path(path)
        self.counter = counter
        self.step_scale = step_scale
        self.t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    def record(self, timesteps: int, env_steps: int, ret: float, success: float | None) -> None:
        """Append one row (also used for the evaluation before training)."""
        row = {"timesteps": int(timesteps), "env_steps": int(env_steps),
               "wall_s": round(time.perf_counter() - self.t0, 2), "return_mean": float(ret),
               "success_rate": None if success is None else float(success)}
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _on_step(self) -> bool:
        parent = self.parent
        success = parent.evaluations_successes[-1] if parent.evaluations_successes else None
        self.record(self.num_timesteps, self.counter.env_steps, parent.last_mean_reward,
                    None if success is None else float(np.mean(success)))
        return True


def within_budget(steps: int, per_rollout: int) -> int:
    """SB3 ``total_timesteps`` that stays within ``steps``: whole rollouts of ``per_rollout`` steps.

    SB3 finishes the rollout that crosses ``total_timesteps``, so asking for 200,000 with rollouts of
    2,048 runs 200,704; this asks for 198,656 (at least one rollout).
    """
    return max(per_rollout, steps - steps % per_rollout)


def sb3_progress_bar(progress: bool) -> bool:
    """Whether SB3's progress bar can be shown: it needs ``rich`` (an extra), else SB3 raises."""
    import importlib.util

    return progress and importlib.util.find_spec("rich") is not None


def evaluate_model(model, venv: VecEnv, episodes: int, deterministic: bool = True) -> tuple[float, float]:
    """Mean return and success rate of ``model`` over ``episodes`` episodes of ``venv``.

    Uses SB3's ``evaluate_policy`` (the same loop ``EvalCallback`` runs) and reads ``is_success``
    from each finished episode's last info.
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    successes: list[bool] = []

    def on_step(local: dict, _globals: dict) -> None:
        if local["done"]:
            successes.append(bool(local["info"].get("is_success", False)))

    returns, _ = evaluate_policy(model, venv, n_eval_episodes=episodes, deterministic=deterministic,
                                 return_episode_rewards=True, callback=on_step)
    return float(np.mean(returns)), float(np.mean(successes)) if successes else 0.0

"""``kinodiff train residual``: SB3 PPO or SAC learns a bounded residual over a frozen policy.

The run folder holds ``config.json``, ``model.zip`` (the SB3 residual agent), ``vecnormalize.pkl``
(observation statistics, PPO), ``checkpoints/`` and ``logs/`` (``curve.jsonl``, TensorBoard). The
base policy is referenced by path in ``config.json``; ``load_residual`` rebuilds the whole stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.rollout.env_factory import EnvFactory
from agents.train.residual_env import ResidualVecEnv
from agents.train.rl import read_obs_stats, save_obs_stats
from agents.train.sb3_common import (
    CurveLogger,
    EnvStepCounter,
    SuccessReward,
    check_reward,
    evaluate_model,
    load_base_policy,
    make_vec_env,
    monitored,
    sb3_progress_bar,
    within_budget,
)
from agents.train.sb3_safe import load_sb3
from agents.utils import seed_everything, versions, write_json_atomic

ALGOS = {"ppo": PPO, "sac": SAC}
# Defaults per algorithm; ``algo_kwargs`` overrides them. A small initial std keeps the first
# residuals close to zero, so training starts from the base policy's behaviour.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 256, "batch_size": 256, "n_epochs": 5, "learning_rate": 3e-4, "gamma": 0.99,
            "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0,
            "policy_kwargs": {"log_std_init": -1.0, "net_arch": [256, 256]}},
    "sac": {"learning_rate": 3e-4, "buffer_size": 200_000, "batch_size": 256, "learning_starts": 2_000,
            "gamma": 0.99, "train_freq": 1, "gradient_steps": 1, "ent_coef": "auto_0.05",
            "policy_kwargs": {"net_arch": [256, 256]}},
}


@dataclass(kw_only=True)
class ResidualConfig:
    """Residual RL over a frozen (diffusion) policy."""

    base: str
    """Run folder (latest checkpoint) or policy folder of the frozen base policy."""
    env: str = ""
    """Task id (default: the task the base policy was trained on)."""
    out: str = "runs/residual"
    """Run folder."""
    algo: str = "ppo"
    """SB3 algorithm learning the residual: ``ppo`` or ``sac``."""
    env_steps: int = 200_000
    """Budget of environment steps."""
    scale: float = 1.0
    """Largest residual as a fraction of the action half range. Training starts at a zero residual
    with a small spread, and the learned one stays small (mean |r| ~0.16 on PointObstacle), but a
    bound of 0.2 could not push the robot off the box face it was pressed against (friction)."""
    n_envs: int = 8
    """Parallel envs (one process; the base policy runs once per step for all of them)."""
    reward: str = "env"
    """What the agent maximizes: ``env`` (the task's reward) or ``success`` (1 on success, else 0)."""
    normalize_obs: bool = True
    """Running observation normalization (VecNormalize), saved with the model."""
    eval_every: int = 20_000
    """Env steps between evaluations."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    checkpoint_every: int = 50_000
    """Env steps between SB3 checkpoints."""
    seed: int = 0
    """Seed of SB3, torch, the envs and the base policy's noise."""
    threads: int = 1
    """torch CPU threads."""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of the SB3 algorithm's arguments (``ALGO_DEFAULTS``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo={self.algo!r}; expected one of {sorted(ALGOS)}")
        for name in ("env_steps", "n_envs", "eval_every", "eval_episodes", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if not 0 < self.scale <= 2:
            raise ValueError(f"scale={self.scale}; expected 0 < scale <= 2")
        check_reward(self.reward)


def residual_venv(env_id: str, base_run: str, n_envs: int, seed: int, scale: float,
                  env_kwargs: dict[str, Any] | None = None, reward: str = "env") -> ResidualVecEnv:
    """The task vectorized, each env under ``Monitor``, wrapped by a fresh copy of the base policy.

    ``reward="success"`` puts ``SuccessReward`` outside each ``Monitor`` (logged returns stay the task's).
    """
    check_reward(reward)
    base, _, _ = load_base_policy(base_run)
    factory = EnvFactory(env_id, dict(env_kwargs or {}))

    def wrap(env):
        env = monitored(env, env_id)
        return SuccessReward(env) if reward == "success" else env

    venv = make_vec_env(factory, n_envs, seed, wrap)
    return ResidualVecEnv(venv, base, scale=scale, seed=seed)


def _normalized(venv: VecEnv, config: ResidualConfig, training: bool) -> VecEnv:
    if not config.normalize_obs:
        return venv
    return VecNormalize(venv, norm_obs=True, norm_reward=False, training=training)


def build_residual(config: ResidualConfig):
    """(model, train venv, eval venv, info) for ``config``."""
    _, meta, base_path = load_base_policy(config.base)
    env_id = config.env or meta.get("env_id", "")
    if not env_id:
        raise ValueError(f"base policy {str(base_path)!r} records no env id; pass --env")
    venv = _normalized(residual_venv(env_id, str(base_path), config.n_envs, config.seed, config.scale,
                                     config.env_kwargs, config.reward), config, True)
    eval_venv = _normalized(residual_venv(env_id, str(base_path), min(config.n_envs, config.eval_episodes),
                                          config.seed + 10_000, config.scale, config.env_kwargs),
                            config, False)
    kwargs = {**ALGO_DEFAULTS[config.algo], **config.algo_kwargs}
    model = ALGOS[config.algo]("MlpPolicy", venv, seed=config.seed, device="cpu", verbose=0,
                               tensorboard_log=str(Path(config.out) / "logs" / "tensorboard"), **kwargs)
    zero_residual_head(model)
    return model, venv, eval_venv, {"env_id": env_id, "base_policy": str(base_path),
                                    "algo_resolved": kwargs}


def zero_residual_head(model) -> None:
    """Zero the layer that outputs the action mean, so training starts exactly at the base policy.

    SB3 initializes it small (orthogonal, gain 0.01) but not zero; a zero layer still learns (its
    gradient is the features times the output's gradient) while the first deterministic residual
    is exactly 0 whatever the observation, as in ResiP.
    """
    head = model.policy.action_net if hasattr(model.policy, "action_net") else model.policy.actor.mu
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()


def train_residual(config: ResidualConfig, progress: bool = True) -> Path:
    """Train a residual agent over ``config.base`` into ``config.out``; returns the run folder.

    Raises:
        FileExistsError: ``config.out`` already holds a run.
    """
    out = Path(config.out)
    if (out / "config.json").exists():
        raise FileExistsError(f"run folder {str(out)!r} already holds a run; choose a new --out")
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    model, venv, eval_venv, info = build_residual(config)
    write_json_atomic(out / "config.json", {"trainer": "residual", **dataclasses.asdict(config), **info,
                                            "versions": versions()})
    counter = EnvStepCounter()
    curve = CurveLogger(out / "logs" / "curve.jsonl", counter)
    ret, success = evaluate_model(model, eval_venv, config.eval_episodes)
    curve.record(0, 0, ret, success)
    eval_cb = EvalCallback(eval_venv, n_eval_episodes=config.eval_episodes,
                           eval_freq=max(1, config.eval_every // config.n_envs), deterministic=True,
                           callback_after_eval=curve, verbose=0, log_path=str(out / "logs"))
    ckpt_cb = CheckpointCallback(max(1, config.checkpoint_every // config.n_envs), str(out / "checkpoints"),
                                 name_prefix="residual", save_vecnormalize=True)
    per_rollout = model.n_steps * config.n_envs if config.algo == "ppo" else config.n_envs
    model.learn(total_timesteps=within_budget(config.env_steps, per_rollout),
                callback=CallbackList([counter, eval_cb, ckpt_cb]), progress_bar=sb3_progress_bar(progress))
    if isinstance(venv, VecNormalize):
        eval_venv.obs_rms = venv.obs_rms
    ret, success = evaluate_model(model, eval_venv, config.eval_episodes)
    curve.record(model.num_timesteps, counter.env_steps, ret, success)
    model.save(out / "model.zip")
    save_obs_stats(venv, out / "model.zip")
    if isinstance(venv, VecNormalize):
        venv.save(str(out / "vecnormalize.pkl"))
    venv.close()
    eval_venv.close()
    return out


def load_residual(run: str | Path, n_envs: int = 1, seed: int = 0):
    """Rebuild a trained residual stack: (SB3 model, env with base policy and saved statistics).

    Nothing is unpickled: the zip goes through ``load_sb3`` and the observation statistics are read
    from ``model.vecnormalize.json`` (``vecnormalize.pkl`` is written for SB3's own tools only).
    """
    import json

    run = Path(run)
    doc = json.loads((run / "config.json").read_text())
    venv: VecEnv = residual_venv(doc["env_id"], doc["base_policy"], n_envs, seed, doc["scale"],
                                 doc.get("env_kwargs"))
    if (stats := read_obs_stats(run / "model.zip")) is not None:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, training=False,
                            clip_obs=stats["clip_obs"], epsilon=stats["epsilon"])
        venv.obs_rms.mean = np.asarray(stats["mean"], np.float64)
        venv.obs_rms.var = np.asarray(stats["var"], np.float64)
    model = load_sb3(ALGOS[doc["algo"]], run / "model.zip", env=venv)
    return model, venv

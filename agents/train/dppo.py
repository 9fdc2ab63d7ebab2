"""``kinodiff train dppo``: PPO fine-tuning of a trained diffusion policy (DPPO, Ren et al. 2025).

The run folder holds ``config.json``, ``model.zip`` (SB3: actor, critic, optimizer), ``policy/``
(the fine-tuned diffusion policy as an ordinary kinodiff policy when every denoising step was
fine-tuned, so ``kinodiff eval --run RUN/policy`` evaluates it), ``checkpoints/``, and
``logs/`` (``curve.jsonl``: success and return vs env steps and wall-clock; TensorBoard).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback

from agents.train.dppo_policy import ChainToChunk, DppoPolicy, DppoPPO
from agents.train.sb3_common import (
    ChunkedEnvFactory,
    CurveLogger,
    EnvStepCounter,
    SuccessReward,
    check_reward,
    evaluate_model,
    load_base_policy,
    make_vec_env,
    sb3_progress_bar,
    within_budget,
)
from agents.utils import seed_everything, versions, write_json_atomic
from policies import make_policy, save_policy
from policies.diffusion.relative import require_absolute_actions


@dataclass(kw_only=True)
class DppoConfig:
    """DPPO fine-tuning of a diffusion policy."""

    base: str
    """Run folder (latest checkpoint) or policy folder of the trained diffusion policy."""
    env: str = ""
    """Task id (default: the task the base policy was trained on)."""
    out: str = "runs/dppo"
    """Run folder."""
    env_steps: int = 200_000
    """Budget of real environment steps (each decision executes Ta of them)."""
    ft_steps: int = 0
    """k: fine-tuned (Gaussian) denoising steps, the last k of K; 0 means all K."""
    noise_std: float = 0.1
    """Fixed std of each fine-tuned step, normalized action units (exploration)."""
    noise_clip: float = 3.0
    """Each step's standard-normal draw is clipped to +-noise_clip (DPPO's value)."""
    n_envs: int = 8
    """Parallel envs (in one process)."""
    n_steps: int = 32
    """Decisions per env per rollout."""
    batch_size: int = 256
    """PPO minibatch size (decisions)."""
    n_epochs: int = 10
    """PPO epochs per rollout."""
    actor_lr: float = 1e-4
    """Learning rate of the denoiser (DPPO's; per-step ratios clipped at 0.01 keep steps small)."""
    critic_lr: float = 1e-3
    """Learning rate of the critic."""
    clip_range: float = 0.01
    """PPO ratio clip; the ratio is per denoising step, of the mean log-probability per executed
    action element, so small values (DPPO uses 0.01) already allow real changes."""
    target_kl: float | None = 0.05
    """Stop an update's epochs early past this approximate KL (None: never)."""
    reward: str = "env"
    """What PPO maximizes: ``env`` (the task's reward) or ``success`` (1 on success, else 0)."""
    gamma: float = 0.99
    """Discount per decision (one decision spans Ta env steps)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    actor_warmup_updates: int = 2
    """Rollouts during which only the critic learns."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Critic MLP widths."""
    eval_every: int = 20_000
    """Env steps between evaluations (success and return curves)."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    checkpoint_every: int = 50_000
    """Env steps between SB3 checkpoints."""
    seed: int = 0
    """Seed of SB3, torch and the envs."""
    threads: int = 1
    """torch CPU threads."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""

    def __post_init__(self) -> None:
        for name in ("env_steps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_every",
                     "eval_episodes", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if self.ft_steps < 0:
            raise ValueError(f"ft_steps={self.ft_steps}; expected >= 0 (0 = all denoising steps)")
        for name in ("noise_std", "noise_clip", "actor_lr", "critic_lr", "clip_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected > 0")
        if not 0 < self.gamma <= 1 or not 0 < self.gae_lambda <= 1:
            raise ValueError(f"gamma={self.gamma}, gae_lambda={self.gae_lambda}; expected in (0, 1]")
        check_reward(self.reward)
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)


def build_dppo(config: DppoConfig, progress: bool = False):
    """The DPPO model, its training and evaluation envs, and the base policy's facts.

    Returns:
        (model, train venv, eval venv, info dict with env id, base path, Ta).
    """
    base, meta, base_path = load_base_policy(config.base)
    if base.name != "diffusion":
        raise ValueError(f"base policy {str(base_path)!r} is a {base.name!r} policy; expected diffusion")
    require_absolute_actions(base, "DPPO fine-tuning")
    c = base.config
    env_id = config.env or meta.get("env_id", "")
    if not env_id:
        raise ValueError(f"base policy {str(base_path)!r} records no env id; pass --env")
    k = config.ft_steps or c.num_inference_steps
    factory = ChunkedEnvFactory(env_id, c.n_obs_steps, c.n_action_steps, dict(config.env_kwargs))
    center = base.action_normalizer.center.numpy()
    half = base.action_normalizer.half_range.numpy()

    def wrap(env):
        return ChainToChunk(env, k, c.horizon, center, half)

    def wrap_train(env):
        return wrap(SuccessReward(env) if config.reward == "success" else env)

    venv = make_vec_env(factory, config.n_envs, config.seed, wrap_train)
    eval_venv = make_vec_env(factory, min(config.n_envs, config.eval_episodes), config.seed + 10_000, wrap)
    obs_dim = venv.observation_space.shape
    if tuple(obs_dim) != (c.n_obs_steps, c.obs_dim):
        raise ValueError(f"{env_id} gives observations {tuple(obs_dim)} after stacking; the base "
                         f"policy expects {(c.n_obs_steps, c.obs_dim)}")
    policy_kwargs = {"diffusion_config": dataclasses.asdict(c), "ft_steps": k,
                     "noise_std": config.noise_std, "noise_clip": config.noise_clip,
                     "critic_hidden": config.critic_hidden,
                     "critic_lr_scale": config.critic_lr / config.actor_lr}
    model = DppoPPO(DppoPolicy, venv, learning_rate=config.actor_lr, n_steps=config.n_steps,
                    batch_size=config.batch_size, n_epochs=config.n_epochs, gamma=config.gamma,
                    gae_lambda=config.gae_lambda, clip_range=config.clip_range, ent_coef=0.0,
                    target_kl=config.target_kl, actor_warmup_updates=config.actor_warmup_updates,
                    policy_kwargs=policy_kwargs, seed=config.seed, device="cpu", verbose=0,
                    tensorboard_log=str(Path(config.out) / "logs" / "tensorboard"))
    model.policy.load_base(base.state_dict())
    return model, venv, eval_venv, {"env_id": env_id, "base_policy": str(base_path),
                                    "n_action_steps": c.n_action_steps, "ft_steps": k}


def train_dppo(config: DppoConfig, progress: bool = True) -> Path:
    """Fine-tune ``config.base`` with DPPO into ``config.out``; returns the run folder.

    Raises:
        FileExistsError: ``config.out`` already holds a run.
        ValueError: A base policy that is not a DDPM diffusion policy, or shapes that do not fit.
    """
    out = Path(config.out)
    if (out / "config.json").exists():
        raise FileExistsError(f"run folder {str(out)!r} already holds a run; choose a new --out")
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    model, venv, eval_venv, info = build_dppo(config, progress)
    Ta = info["n_action_steps"]
    write_json_atomic(out / "config.json", {"trainer": "dppo", **dataclasses.asdict(config), **info,
                                            "versions": versions()})
    counter = EnvStepCounter()
    curve = CurveLogger(out / "logs" / "curve.jsonl", counter)
    ret, success = evaluate_model(model, eval_venv, config.eval_episodes)
    curve.record(0, 0, ret, success)
    per_decision = max(1, config.eval_every // (Ta * config.n_envs))
    eval_cb = EvalCallback(eval_venv, n_eval_episodes=config.eval_episodes, eval_freq=per_decision,
                           deterministic=True, callback_after_eval=curve, verbose=0,
                           best_model_save_path=None, log_path=str(out / "logs"))
    ckpt_cb = CheckpointCallback(max(1, config.checkpoint_every // (Ta * config.n_envs)),
                                 str(out / "checkpoints"), name_prefix="dppo")
    # Decisions: at most Ta env steps each, so Ta * decisions stays within env_steps.
    decisions = within_budget(config.env_steps // Ta, config.n_steps * config.n_envs)
    model.learn(total_timesteps=decisions, callback=CallbackList([counter, eval_cb, ckpt_cb]),
                progress_bar=sb3_progress_bar(progress))
    ret, success = evaluate_model(model, eval_venv, config.eval_episodes)
    curve.record(model.num_timesteps, counter.env_steps, ret, success)
    model.save(out / "model.zip")
    if info["ft_steps"] == model.policy.diffusion.config.num_inference_steps:
        # Every step fine-tuned: the deterministic chain is the diffusion policy's own DDIM sampler.
        # The exported sampler is plain DDIM (warm start and early stopping off): the mean chain.
        c = model.policy.diffusion.config
        exported = make_policy("diffusion", **{**dataclasses.asdict(c), "sampler": "ddim",
                                               "warm_start": 0.0, "adaptive_tol": 0.0})
        exported.load_state_dict(model.policy.diffusion.state_dict())
        save_policy(exported, out / "policy",
                    metadata={"env_id": info["env_id"], "finetuned_from": info["base_policy"],
                              "trainer": "dppo", "env_steps": counter.env_steps})
    venv.close()
    eval_venv.close()
    return out

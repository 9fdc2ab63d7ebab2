"""DPPO as an SB3 policy/algorithm pair: ``DppoPolicy(ActorCriticPolicy)`` and ``DppoPPO(PPO)``.

The SB3 "action" of one decision is the recorded denoising chain ``[k+1, H, Da]`` (normalized
units); ``ChainToChunk`` turns it into the Ta env actions the task executes.

As in the DPPO paper, every fine-tuned denoising step is its own PPO action: the policy's
log-probability is one value per step ``[B, k]`` (``chain_step_log_probs``), and
``DppoRolloutBuffer`` stores them per step and hands SB3's unchanged ``PPO.train`` the advantage as
``[B, 1]``, so the ratio, its clipping and the approximate KL are per step while each env
decision's advantage is shared by its k steps (and normalized over decisions, as SB3 does). A
ratio over the whole chain (a sum of k * H * Da Gaussian terms) moved by a tiny weight change and
made the updates erratic. SB3's GAE, callbacks, logger and save/load do the rest.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.utils import update_learning_rate

from policies import make_policy
from policies.diffusion.dppo import chain_step_log_probs, ddim_steps, gaussian_entropy, sample_chain
from policies.layers import mlp

CHAIN_BOUND = 1e3


def chain_space(k: int, horizon: int, action_dim: int) -> gym.spaces.Box:
    """The SB3 action space of a DPPO policy: chains ``[k+1, H, Da]``.

    SB3 insists on finite bounds; latents are Gaussian in normalized units, so +-1e3 never binds.
    """
    return gym.spaces.Box(-CHAIN_BOUND, CHAIN_BOUND, shape=(k + 1, horizon, action_dim), dtype=np.float32)


class ChainToChunk(gym.ActionWrapper):
    """Executes a recorded chain: its last latent, clipped to [-1, 1], unnormalized, first Ta steps.

    Args:
        env: A chunked env (``ActionChunk`` with Ta actions of Da features).
        k: Fine-tuned steps in the chain.
        horizon: H.
        center: [Da] action normalizer centre (raw units).
        half_range: [Da] action normalizer half range.
    """

    def __init__(self, env: gym.Env, k: int, horizon: int, center: np.ndarray,
                 half_range: np.ndarray) -> None:
        super().__init__(env)
        self.n_action_steps, action_dim = env.action_space.shape
        self.action_space = chain_space(k, horizon, action_dim)
        self.center = np.asarray(center, dtype=np.float32)
        self.half_range = np.asarray(half_range, dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """[k+1, H, Da] chain -> [Ta, Da] raw actions."""
        chunk = np.clip(np.asarray(action, dtype=np.float32)[-1, : self.n_action_steps], -1.0, 1.0)
        return chunk * self.half_range + self.center


class DppoPolicy(ActorCriticPolicy):
    """Diffusion actor over chains plus an MLP critic over the (normalized) observation history.

    Args:
        observation_space: ``[To, Do]`` Box.
        action_space: ``chain_space(k, H, Da)``.
        lr_schedule: SB3 learning-rate schedule (the actor's rate).
        diffusion_config: Config fields of the base ``DiffusionPolicy`` (DDPM objective).
        ft_steps: k, the last denoising steps that are fine-tuned (1 <= k <= K).
        noise_std: Fixed std of each fine-tuned step, normalized action units.
        noise_clip: Each step's standard-normal draw is clipped to +-``noise_clip`` (DPPO: 3).
        critic_hidden: Hidden widths of the value MLP.
        critic_lr_scale: Critic learning rate / actor learning rate.
        **kwargs: Passed to ``ActorCriticPolicy``.
    """

    def __init__(self, observation_space, action_space, lr_schedule, *, diffusion_config: dict[str, Any],
                 ft_steps: int, noise_std: float = 0.1, noise_clip: float = 3.0,
                 critic_hidden: tuple[int, ...] = (256, 256), critic_lr_scale: float = 10.0,
                 **kwargs) -> None:
        self.diffusion_config = dict(diffusion_config)
        self.ft_steps = int(ft_steps)
        self.noise_std = float(noise_std)
        self.noise_clip = float(noise_clip)
        if self.noise_clip <= 0:
            raise ValueError(f"noise_clip={noise_clip}; expected > 0 (in units of the step std)")
        self.critic_hidden = tuple(int(h) for h in critic_hidden)
        self.critic_lr_scale = float(critic_lr_scale)
        if self.noise_std <= 0:
            raise ValueError(f"noise_std={noise_std}; expected > 0 (the log-probability needs it)")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(diffusion_config=self.diffusion_config, ft_steps=self.ft_steps,
                    noise_std=self.noise_std, noise_clip=self.noise_clip,
                    critic_hidden=self.critic_hidden,
                    critic_lr_scale=self.critic_lr_scale)
        return data

    def _build(self, lr_schedule) -> None:
        self.diffusion = make_policy("diffusion", **self.diffusion_config)
        c = self.diffusion.config
        if c.objective != "ddpm" or c.sampler == "onestep":
            raise ValueError(f"DPPO needs a DDPM-objective diffusion policy with a multi-step sampler; "
                             f"got objective={c.objective!r}, sampler={c.sampler!r}")
        if c.obs_encoder != "state":
            raise ValueError(f"DPPO needs a state-observation diffusion policy; got "
                             f"obs_encoder={c.obs_encoder!r}")
        self.steps = ddim_steps(self.diffusion.alphas_cumprod, c.num_inference_steps)
        if not 1 <= self.ft_steps <= len(self.steps):
            raise ValueError(f"ft_steps={self.ft_steps}; expected 1 <= k <= num_inference_steps="
                             f"{len(self.steps)}")
        expected = (self.ft_steps + 1, c.horizon, c.action_dim)
        if tuple(self.action_space.shape) != expected:
            raise ValueError(f"action space {self.action_space.shape}; expected the chain shape {expected}")
        # The first K - k steps keep the base weights (as in DPPO): a frozen copy.
        self.base_denoiser = copy.deepcopy(self.diffusion.denoiser).requires_grad_(False)
        # The critic sees the actor's condition: with angle or keypoint features, those too.
        self.value_net = mlp(self.diffusion.obs_encoder.out_dim, self.critic_hidden, 1)
        actor = [p for p in self.diffusion.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(
            [{"params": actor, "lr_scale": 1.0},
             {"params": list(self.value_net.parameters()), "lr_scale": self.critic_lr_scale}],
            lr=lr_schedule(1), **self.optimizer_kwargs)
        # Per element, like the per-step log-probabilities (a mean over elements): a constant.
        self._entropy = gaussian_entropy(1, self.noise_std)

    def load_base(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Start from a trained diffusion policy: its weights go to the actor and the frozen copy."""
        self.diffusion.load_state_dict(state_dict)
        self.base_denoiser.load_state_dict(self.diffusion.denoiser.state_dict())

    def _cond(self, obs: torch.Tensor) -> torch.Tensor:
        # The policy's own encoding (the flat history, plus any angle / keypoint features): the
        # denoiser was trained on it.
        return self.diffusion.encode(self.diffusion.obs_normalizer.normalize(obs.float()))

    def _sample(self, cond: torch.Tensor, deterministic: bool) -> torch.Tensor:
        c = self.diffusion.config
        x = torch.randn(cond.shape[0], c.horizon, c.action_dim)
        chain, _ = sample_chain(self.base_denoiser, self.diffusion.denoiser, self.steps, self.ft_steps,
                                x, cond, self.noise_std, c.prediction_type, c.clip_sample,
                                deterministic, noise_clip=self.noise_clip)
        return chain

    def _step_log_probs(self, chain: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.diffusion.config
        return chain_step_log_probs(self.diffusion.denoiser, self.steps, chain, cond, self.noise_std,
                                    c.prediction_type, c.clip_sample, c.n_action_steps)

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        """Sample chains: (chain [B, k+1, H, Da], value [B, 1], per-step log-probabilities [B, k]).

        The log-probabilities are recomputed from the recorded chain by the same function
        ``evaluate_actions`` uses, so PPO's first ratio is exactly 1.
        """
        cond = self._cond(obs)
        chain = self._sample(cond, deterministic)
        return chain, self.value_net(cond), self._step_log_probs(chain, cond)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        """(value [B, 1], per-step log-probabilities [B, k], entropy [B]) of recorded chains."""
        cond = self._cond(obs)
        c = self.diffusion.config
        chain = actions.view(-1, self.ft_steps + 1, c.horizon, c.action_dim)
        log_prob = self._step_log_probs(chain, cond)
        # Fixed step std: the entropy of the Gaussian steps is a constant.
        entropy = torch.full((log_prob.shape[0],), self._entropy, dtype=log_prob.dtype)
        return self.value_net(cond), log_prob, entropy

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self._sample(self._cond(observation), deterministic)

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Critic values [B, 1]."""
        return self.value_net(self._cond(obs))

    def get_distribution(self, obs):
        """Not a closed-form distribution: chains are sampled by ``forward``."""
        raise NotImplementedError("a DPPO policy has no closed-form action distribution; use "
                                  "forward() or evaluate_actions()")


class DppoRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer with one log-probability per denoising step.

    ``log_probs`` is ``[n_steps, n_envs, k]`` (k read from the chain action space ``[k+1, H, Da]``).
    Samples carry ``old_log_prob`` as ``[B, k]`` and ``advantages`` as ``[B, 1]``: in SB3's
    ``PPO.train`` the ratio ``exp(log_prob - old_log_prob)`` is then per step, the advantage
    broadcasts over the k steps of its decision, and its normalization (mean and std over the
    minibatch) runs over decisions exactly as for any other policy.
    """

    def reset(self) -> None:
        """SB3's reset, then per-step log-probabilities."""
        super().reset()
        self.log_probs = np.zeros((self.buffer_size, self.n_envs, self.action_space.shape[0] - 1),
                                  dtype=np.float32)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> RolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        n = len(batch_inds)
        return samples._replace(old_log_prob=samples.old_log_prob.view(n, -1),
                                advantages=samples.advantages.view(n, 1))


class DppoPPO(PPO):
    """SB3's PPO over per-step denoising ratios, per-group learning rates and a critic warm-up.

    Args:
        *args: Passed to ``PPO``.
        actor_warmup_updates: PPO updates (``train`` calls) during which the actor's rate is 0,
            so the critic first learns values of the base policy.
        **kwargs: Passed to ``PPO``; ``rollout_buffer_class`` defaults to ``DppoRolloutBuffer``.
    """

    def __init__(self, *args, actor_warmup_updates: int = 0, **kwargs) -> None:
        self.actor_warmup_updates = int(actor_warmup_updates)
        self._train_calls = 0
        kwargs.setdefault("rollout_buffer_class", DppoRolloutBuffer)
        super().__init__(*args, **kwargs)

    def _update_learning_rate(self, optimizers) -> None:
        lr = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", lr)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            update_learning_rate(optimizer, lr)
            for group in optimizer.param_groups:
                scale = group.get("lr_scale", 1.0)
                warm = scale == 1.0 and self._train_calls < self.actor_warmup_updates
                group["lr"] = 0.0 if warm else lr * scale

    def train(self) -> None:
        """One PPO update (SB3's), counting calls for the actor warm-up."""
        super().train()
        self._train_calls += 1


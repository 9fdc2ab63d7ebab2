"""The diffusion policy (Chi et al. 2023): denoise an action chunk conditioned on observations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from policies.base import Policy
from policies.constraints import ChunkConstraint, ChunkConstraintConfig
from policies.diffusion.angles import angle_features, body_keypoints
from policies.diffusion.chunk_plan import ChunkPlan, chunk_plan
from policies.diffusion.config import (
    DENOISERS,
    ETA,
    FLOW_TIME_SCALE,
    SMALL_BATCH,
    DiffusionConfig,
)
from policies.diffusion.denoisers import ChunkCondition, MlpDenoiser, UNet1DDenoiser
from policies.diffusion.flow import data_estimate, euler_step, heun_step, interpolate
from policies.diffusion.relative import RelativeActions, require_absolute_actions
from policies.diffusion.sampling_log import SampledChunk
from policies.diffusion.schedule import (
    add_noise,
    cosine_alphas_cumprod,
    reverse_step,
    sampling_steps,
)
from policies.diffusion.transformer import TransformerDenoiser
from policies.diffusion.warm import LastChunk, warm_tail
from policies.encoders import ImageEncoder, LowDimEncoder
from policies.layers import all_finite
from policies.registered import Registered

__all__ = ["DENOISERS", "SMALL_BATCH", "DiffusionConfig", "DiffusionPolicy"]


class DiffusionPolicy(RelativeActions, Policy):
    """Conditional DDPM over action chunks; the observation history is the condition."""

    name = "diffusion"
    config_class = DiffusionConfig
    denoiser = Registered("_modules")
    obs_encoder = Registered("_modules")

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        c = config
        if c.obs_encoder == "image":
            H, W, C = c.image_shape
            self.obs_encoder: nn.Module = ImageEncoder(
                (C, H, W), n_obs_steps=c.n_obs_steps, agent_pos_dim=c.obs_dim,
                feature_dim=c.image_features, crop_shape=c.crop_shape,
                channels=c.encoder_channels, num_keypoints=c.num_keypoints)
        else:
            self.obs_encoder = LowDimEncoder(
                c.obs_dim + len(c.angle_features) + len(c.body_keypoints), c.n_obs_steps)
        cond_dim = self.obs_encoder.out_dim
        if c.denoiser == "mlp":
            self.denoiser: nn.Module = MlpDenoiser(c.horizon, c.action_dim, cond_dim, c.hidden_dims)
        elif c.denoiser == "unet":
            self.denoiser = UNet1DDenoiser(c.horizon, c.action_dim, cond_dim, c.unet_dims)
        else:
            # One condition token per observation step, as in Diffusion Policy's transformer.
            self.denoiser = TransformerDenoiser(c.horizon, c.action_dim, cond_dim, d_model=c.d_model,
                                                n_layers=c.n_layers, n_cond_tokens=c.n_obs_steps)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(c.num_train_timesteps),
                             persistent=False)
        self._step_cache: dict[tuple[int, str], list] = {}
        self._plan_cache: dict[tuple, ChunkPlan] = {}  # see _chunk_plan
        self._last_chunk = LastChunk()  # the warm start's tail and origin
        self._constraint: ChunkConstraint | None = None
        self.sampling_log: list[SampledChunk] | None = None
        """Set to a list to record every chunk the policy samples from its own noise (DAgger)."""

    def encode(self, obs: Any) -> torch.Tensor:
        """Normalized observations (as ``prepare_obs`` gives them) -> the condition [B, Dc]."""
        c, n = self.config, self.obs_normalizer
        if c.body_keypoints:
            points = torch.tensor(c.body_keypoints, dtype=obs.dtype).view(-1, 2)
            keypoints = body_keypoints(obs, points, c.body_pose, n)
        if c.angle_features:
            obs = angle_features(obs, c.angle_features, n)
        if c.body_keypoints:
            obs = torch.cat([obs, keypoints], dim=-1)
        return self.obs_encoder(obs)

    def set_constraints(self, spec: dict | None, **options) -> None:
        """Enforce a constraint spec while sampling (``None`` removes it).

        Args:
            spec: ``ConstraintSpec.to_dict()`` of the task (plain data; policies never see MuJoCo).
            **options: ``ChunkConstraintConfig`` fields; ``method`` defaults to
                ``config.constraint_method``.
        """
        options.setdefault("method", self.config.constraint_method)
        if spec is not None:
            require_absolute_actions(self, "set_constraints")
        config = ChunkConstraintConfig(**options)
        self._constraint = None if spec is None or config.method == "none" else ChunkConstraint(
            spec, self.action_normalizer.center, self.action_normalizer.half_range,
            self.config.horizon, self.config.n_action_steps, config)

    def _steps(self, num_steps: int, sampler: str):
        # Coefficients are plain floats computed once per (K, sampler): the loop stays lean.
        key = (num_steps, sampler)
        if key not in self._step_cache:
            self._step_cache[key] = sampling_steps(self.alphas_cumprod, num_steps, ETA[sampler])
        return self._step_cache[key]

    def predict_normalized_chunk(self, obs: torch.Tensor, noise: torch.Tensor | None = None,
                                 sampler: str | None = None) -> torch.Tensor:
        """[B, To, Do] normalized -> [B, H, Da] normalized, from noise by the configured sampler.

        Args:
            obs: [B, To, Do] normalized observations, or for ``obs_encoder=image`` the dict
                ``prepare_obs`` returns (the encoder runs once per chunk, over all B * To frames).
            noise: [B, H, Da] initial noise (default: drawn from the policy's generator).
            sampler: Override of ``config.sampler`` (distillation asks for a deterministic one).
        """
        threads = self.config.small_batch_threads
        if threads:
            batch = (obs["agent_pos"] if isinstance(obs, Mapping) else obs).shape[0]
            before = torch.get_num_threads()
            if batch <= SMALL_BATCH and threads != before:
                torch.set_num_threads(threads)
                try:
                    return self._sample_chunk(obs, noise, sampler)
                finally:
                    torch.set_num_threads(before)
        return self._sample_chunk(obs, noise, sampler)

    def _sample_chunk(self, obs: Any, noise: torch.Tensor | None, sampler: str | None) -> torch.Tensor:
        c = self.config
        cond = self.encode(obs)
        shape = (cond.shape[0], c.horizon, c.action_dim)
        last = self._last_chunk
        warm = noise is None and c.warm_start > 0 and last.chunk is not None and last.chunk.shape == shape
        x = torch.randn(shape, generator=self.generator) if noise is None else noise
        sampler = sampler or c.sampler
        if self._constraint is not None:
            state = obs["agent_pos"] if isinstance(obs, Mapping) else obs
            self._constraint.begin(self.obs_normalizer.unnormalize(state[:, -1]))
        start = int(round(c.warm_start * c.num_inference_steps)) if warm else 0
        origin = self.normalized_origin(obs)  # relative actions: the tail moves to the new origin
        tail = self.rebase_tail(warm_tail(last.chunk, c.n_action_steps, c.warm_pad), origin) if warm else None
        if self.sampling_log is not None and noise is None:
            self.sampling_log.append(SampledChunk(obs, x.clone(), start, tail))
        if sampler == "onestep":
            out = self._one_step(x, cond, start, tail)
        elif c.objective == "flow":
            out = self._integrate_flow(x, cond, sampler, start, tail)
        else:
            out = self._denoise(x, cond, sampler, start, tail)
        if self._constraint is not None:
            out = self._constraint.finish(out)
        if noise is None:
            last.chunk, last.origin = out, origin
        return out

    def _one_step(self, x: torch.Tensor, cond: torch.Tensor, start: int,
                  tail: torch.Tensor | None) -> torch.Tensor:
        """A distilled student's chunk: one call from noise, or from the tail noised to the warm level.

        The warm level is the teacher's (step ``start`` of its K-step schedule), where the student
        learnt the teacher's remaining steps (``policies.diffusion.distill.warm_pairs``).
        """
        step = self._steps(self.config.num_inference_steps, "ddim")[start] if tail is not None else None
        if step is not None:  # q(x_t | tail) with the schedule's scalars: two fused ops
            x = torch.add(tail * step.sqrt_ab, x, alpha=step.sqrt_one_minus_ab)
        t = self.config.num_train_timesteps - 1 if step is None else step.t
        if isinstance(self.denoiser, MlpDenoiser) and not torch.is_grad_enabled():
            out = self.denoiser.forward_at(x, t, cond)
        else:
            out = self.denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long), cond)
        return out.clamp(-1.0, 1.0) if self.config.clip_sample else out

    def reset(self, seed: int | None = None) -> None:
        """Forget queues, ensembles and the last chunk (warm start); optionally reseed."""
        super().reset(seed)
        self._last_chunk.chunk = self._last_chunk.origin = None
        if self._constraint is not None:
            self._constraint.reset()

    def _denoise(self, x: torch.Tensor, cond: torch.Tensor, sampler: str, start: int = 0,
                 tail: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        plan = self._chunk_plan(c.num_inference_steps, sampler, start, x)
        if tail is not None:
            x = add_noise(tail, x, torch.full((x.shape[0],), plan.steps[0].t, dtype=torch.long),
                          self.alphas_cumprod)
        scales = plan.scales
        if (c.prediction_type != "sample" or c.adaptive_tol
                or (self._constraint is not None and self._constraint.corrects_steps)):
            scales = None
        prepared = self._prepared_condition(plan.timesteps, cond, scales)
        if prepared is not None and scales is not None:
            return self._denoise_folded(x, plan.folded, prepared)
        t_batch = torch.empty(x.shape[0], dtype=torch.long)
        previous = None
        for i, step in enumerate(plan.steps):
            out = self._call_denoiser(x, i, step.t, cond, prepared, t_batch)
            noise = torch.randn(x.shape, generator=self.generator) if step.sigma > 0 else None
            x, x0 = reverse_step(x, out, step, c.prediction_type, c.clip_sample, noise)
            if self._constraint is not None and self._constraint.corrects_steps:
                # Correct the clean estimate; x_prev is linear in it.
                x = x + step.x0_coef * (self._constraint.step(x0, i, len(plan.steps)) - x0)
            if c.adaptive_tol and previous is not None and (x0 - previous).abs().max() < c.adaptive_tol:
                return x0
            previous = x0
        return x

    def _chunk_plan(self, num_steps: int, sampler: str, start: int, like: torch.Tensor) -> ChunkPlan:
        """The ``ChunkPlan`` of a chunk from step ``start`` of a ``num_steps`` schedule, kept per key."""
        key = (num_steps, sampler, start, like.dtype, like.device)
        plan = self._plan_cache.get(key)
        if plan is None:
            plan = self._plan_cache[key] = chunk_plan(self._steps(num_steps, sampler)[start:], like)
        return plan

    def _denoise_folded(self, x: torch.Tensor, folded: tuple, prepared: ChunkCondition) -> torch.Tensor:
        """``reverse_step`` of sample prediction, the clean estimate's weight folded into the denoiser.

        Each step is one forward giving ``a * x0`` (``a`` folded into the output layer), a clip to
        [-a, a] and ``+ b * x_t``: two small in-place ops instead of three new tensors.
        On a CPU the small ops between the matrix products run with caches the weights just
        flushed (~3-5 us each at batch 1, ~1 us timed alone), so their count and form are most of the
        sampler's own time.
        """
        clip, denoiser = self.config.clip_sample, self.denoiser
        for k, low, high, b, sigma in folded:
            out = denoiser(x, k, prepared)
            if clip:
                out.clamp_(low, high)
            if b:  # DDIM's last step keeps only the clean estimate (b == 0)
                out.add_(x, alpha=b)
            if sigma > 0:
                out.add_(torch.randn(x.shape, generator=self.generator), alpha=sigma)
            x = out
        return x

    def _prepared_condition(self, timesteps: tuple[float, ...], cond: torch.Tensor,
                            out_scale: tuple[float, ...] | None = None) -> ChunkCondition | None:
        # The MLP denoiser applies its input layer to the timesteps and the condition once per
        # chunk. Not while tracing (the export records the plain forward) or under autograd.
        if (isinstance(self.denoiser, MlpDenoiser) and not torch.is_grad_enabled()
                and not torch.jit.is_tracing()):
            return self.denoiser.condition(timesteps, cond, out_scale)
        return None

    def _call_denoiser(self, x: torch.Tensor, k: int, t: float, cond: torch.Tensor,
                       prepared: ChunkCondition | None, t_batch: torch.Tensor) -> torch.Tensor:
        """The denoiser at the chunk's k-th timestep ``t``: prepared, or the plain forward."""
        if prepared is None:
            return self.denoiser(x, t_batch.fill_(t), cond)
        return self.denoiser(x, k, prepared)

    def _integrate_flow(self, x: torch.Tensor, cond: torch.Tensor, sampler: str, start: int = 0,
                        tail: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        K = c.num_inference_steps
        ds = 1.0 / K
        s_batch = torch.empty(x.shape[0])
        previous = None
        if tail is not None:
            x = interpolate(tail, x, s_batch.fill_(start * ds))
        # Every time the integrator visits, in order (Heun also visits the end of each step).
        heun = [sampler == "heun" and k < K - 1 for k in range(start, K)]
        times = [t for k, h in zip(range(start, K), heun, strict=True)
                 for t in ((k * ds * FLOW_TIME_SCALE, (k * ds + ds) * FLOW_TIME_SCALE) if h
                           else (k * ds * FLOW_TIME_SCALE,))]
        prepared = self._prepared_condition(tuple(times), cond)
        j = 0  # index into times
        for k, h in zip(range(start, K), heun, strict=True):
            s = k * ds
            v = self._flow_velocity(x, s, self._call_denoiser(x, j, times[j], cond, prepared, s_batch))
            j += 1
            if h:
                x_pred = euler_step(x, v, ds)
                v_next = self._flow_velocity(
                    x_pred, s + ds, self._call_denoiser(x_pred, j, times[j], cond, prepared, s_batch))
                j += 1
                x = heun_step(x, v, v_next, ds)
            else:
                x = euler_step(x, v, ds)
            if self._constraint is not None:
                x = self._constraint.step(x, k - start, K - start)
            if c.adaptive_tol:
                x1 = data_estimate(x, v, s + ds)
                if previous is not None and (x1 - previous).abs().max() < c.adaptive_tol:
                    x = x1
                    break
                previous = x1
        return x.clamp(-1.0, 1.0) if c.clip_sample else x

    def _flow_velocity(self, x: torch.Tensor, s: float, out: torch.Tensor) -> torch.Tensor:
        """The network's output at time ``s`` (< 1) as a velocity (``flow_prediction``)."""
        if self.config.flow_prediction == "velocity":
            return out
        if self.config.clip_sample:  # as DDPM clips its clean-chunk estimate at every step
            out = out.clamp(-1.0, 1.0)
        return (out - x) / (1.0 - s)

    def prepare_obs(self, obs: Any) -> Any:
        """Raw observations -> checked, normalized input.

        With images the input is ``{image_key: [B, To, H, W, 3] uint8 (or float in [0, 1]),
        state_key: [B, To, Do]}`` and the output ``{"image": the frames unchanged, "agent_pos":
        [B, To, Do] normalized}``: the image encoder scales and crops the frames itself.
        """
        if self.config.obs_encoder != "image":
            return super().prepare_obs(obs)
        c = self.config
        if not isinstance(obs, Mapping) or not {c.image_key, c.state_key} <= obs.keys():
            got = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            raise ValueError(f"observation is {got}; expected a dict with keys {c.image_key!r} and "
                             f"{c.state_key!r}")
        image = _tensor(obs[c.image_key])
        state = _tensor(obs[c.state_key]).float()
        if image.ndim != 5 or image.shape[1:] != (c.n_obs_steps, *c.image_shape):
            raise ValueError(f"observation {c.image_key!r} has shape {tuple(image.shape)}; expected "
                             f"[B, {c.n_obs_steps}, {', '.join(map(str, c.image_shape))}]")
        if state.shape != (image.shape[0], c.n_obs_steps, c.obs_dim):
            raise ValueError(f"observation {c.state_key!r} has shape {tuple(state.shape)}; expected "
                             f"[{image.shape[0]}, {c.n_obs_steps}, {c.obs_dim}]")
        if not all_finite(state):
            raise ValueError(f"observation {c.state_key!r} has non-finite values; expected finite numbers")
        return {"image": image, "agent_pos": self.obs_normalizer.normalize(state)}

    def normalize_obs(self, obs: Any) -> Any:
        """Training batches: the same as ``prepare_obs`` for images, the range normalizer for states."""
        return self.prepare_obs(obs) if self.config.obs_encoder == "image" else super().normalize_obs(obs)

    def is_single_obs(self, obs: Any) -> bool:
        """One observation: a [Do] state, or a dict whose image is one [H, W, 3] frame."""
        return obs[self.config.image_key].ndim == 3 if isinstance(obs, Mapping) else obs.ndim == 1

    def fit_normalizers(self, obs, actions, episode_ends=None) -> None:
        """Fit the state and action ranges (a dict observation: its ``state_key`` features only).

        A student copies its teacher's statistics: its targets live in the teacher's units.
        """
        if isinstance(obs, Mapping):
            obs = obs[self.config.state_key]
        if self.config.sampler == "onestep" and self.config.teacher:
            teacher = self._teacher()
            self.obs_normalizer.load_state_dict(teacher.obs_normalizer.state_dict())
            self.action_normalizer.load_state_dict(teacher.action_normalizer.state_dict())
        else:
            super().fit_normalizers(obs, actions, episode_ends)

    def _teacher(self) -> DiffusionPolicy:
        # Kept out of the module tree (not a submodule): never trained, never saved with the student.
        if "_teacher_policy" not in self.__dict__:
            from policies.io import load_policy

            teacher, _ = load_policy(self.config.teacher)
            ours = (self.name, self.config.horizon, self.config.relative_action_origin)
            if (teacher.name, teacher.config.horizon, teacher.config.relative_action_origin) != ours:
                raise ValueError(f"teacher {self.config.teacher!r} is a {teacher.name} policy with "
                                 f"horizon {teacher.config.horizon}, relative_action_origin="
                                 f"{teacher.config.relative_action_origin}; expected {ours}")
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.__dict__["_teacher_policy"] = teacher
        return self.__dict__["_teacher_policy"]

    def compute_loss(self, batch):
        """The configured objective: DDPM denoising, flow matching, or distillation of a teacher."""
        obs, actions = self.normalized_batch(batch)
        c = self.config
        B = actions.shape[0]
        cond = self.encode(obs)
        noise = torch.randn_like(actions)
        if c.sampler == "onestep" and c.teacher:
            # The teacher's deterministic sampler (DDIM or Euler/Heun) from the same noise is the
            # target: precomputed pairs when the batch carries them (agents.train.distill), else
            # drawn now.
            if "teacher_sample" in batch:
                noise, target = batch["noise"], batch["teacher_sample"]
            else:
                from policies.diffusion.distill import deterministic_sampler

                teacher = self._teacher()
                with torch.no_grad():
                    target = teacher.predict_normalized_chunk(obs, noise=noise,
                                                              sampler=deterministic_sampler(teacher))
            # Warm pairs carry their own (intermediate) timestep and noised tail as the input.
            t = batch.get("timestep", torch.full((B,), c.num_train_timesteps - 1, dtype=torch.long))
            pred = self.denoiser(noise, t, cond)
        elif c.objective == "flow":
            s = torch.rand(B)
            pred = self.denoiser(interpolate(actions, noise, s), s * FLOW_TIME_SCALE, cond)
            target = actions - noise if c.flow_prediction == "velocity" else actions
        else:
            t = torch.randint(0, c.num_train_timesteps, (B,), device=actions.device)
            pred = self.denoiser(add_noise(actions, noise, t, self.alphas_cumprod), t, cond)
            target = noise if c.prediction_type == "epsilon" else actions
        loss = nn.functional.mse_loss(pred, target)
        return loss, {"mse": float(loss.detach())}


def _tensor(x: Any) -> torch.Tensor:
    return x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))

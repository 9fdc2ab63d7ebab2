"""Uncertainty scores for every chunk a policy predicts, at batch cost.

``UncertaintyEstimator(policy).predict(obs) -> (actions, scores)`` draws K chunks per observation in
one call of the policy on a batch expanded to [B*K, To, Do], executes the first sample and scores:

- ``dispersion``: spread of the K samples (aleatoric / multimodality);
- ``ensemble``: disagreement of a small stacked denoiser ensemble on the executed chunk (epistemic);
- ``rnd``: random network distillation error on the normalized observation history (OOD);
- ``temporal``: distance of the new samples to the unexecuted tail of the previous chunk (Sentinel).

Every score is in the policy's normalized action units. A policy with relative actions
(``relative_action_origin``) samples offsets from the latest observed origin; the previous chunk is
re-expressed from the new origin before the temporal score compares them, so the score measures
a change of plan, not the robot's own motion.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from policies.base import Policy
from policies.diffusion.relative import rebase
from policies.layers import all_finite
from policies.uncertainty.fused import FusedHeads
from policies.uncertainty.heads import DenoiserEnsemble, RandomNetworkDistillation, noise_chunk
from policies.uncertainty.scores import (
    ensemble_disagreement,
    rnd_error,
    sample_dispersion,
    temporal_inconsistency,
)

SCORES = ("dispersion", "ensemble", "rnd", "temporal")


@dataclass(kw_only=True)
class UncertaintyConfig:
    """Sizes of the uncertainty heads and the sampling budget."""

    num_samples: int = 8
    """K: chunks sampled per observation (one batched call)."""
    ensemble_size: int = 5
    """M: members of the denoiser ensemble."""
    ensemble_hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of each ensemble member."""
    ensemble_level: float = 0.5
    """Signal level at which the ensemble re-denoises the executed chunk (1 = no noise)."""
    level_range: tuple[float, float] = (0.2, 0.95)
    """Range of signal levels the ensemble is trained on."""
    rnd_hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the RND target and predictor."""
    rnd_dim: int = 32
    """Width of the RND random features."""
    seed: int = 0
    """Seed of head initialisation and of the ensemble's inference noise."""

    def __post_init__(self) -> None:
        self.ensemble_hidden = tuple(int(h) for h in self.ensemble_hidden)
        self.rnd_hidden = tuple(int(h) for h in self.rnd_hidden)
        self.level_range = tuple(float(v) for v in self.level_range)
        if self.num_samples < 2:
            raise ValueError(f"num_samples={self.num_samples}; expected K >= 2 (dispersion needs two)")
        if self.ensemble_size < 2:
            raise ValueError(f"ensemble_size={self.ensemble_size}; expected M >= 2")
        lo, hi = self.level_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"level_range={self.level_range}; expected 0 < low <= high <= 1")
        if not 0.0 < self.ensemble_level <= 1.0:
            raise ValueError(f"ensemble_level={self.ensemble_level}; expected 0 < level <= 1")
        if self.rnd_dim < 1 or min(self.ensemble_hidden + self.rnd_hidden, default=1) < 1:
            raise ValueError("rnd_dim and hidden widths must be >= 1")


class UncertaintyEstimator(nn.Module):
    """Heads trained beside a policy plus the per-chunk scoring loop.

    The policy is held outside the module tree: the estimator's ``state_dict`` holds only its heads,
    saved next to the policy (``policies.uncertainty.io``).

    Args:
        policy: A trained policy (its normalizers define the units of every score).
        config: Head sizes and K.
    """

    def __init__(self, policy: Policy, config: UncertaintyConfig | None = None) -> None:
        super().__init__()
        self.config = config or UncertaintyConfig()
        self.__dict__["policy"] = policy
        pc = policy.config
        cond_dim = pc.n_obs_steps * pc.obs_dim
        gen = torch.random.fork_rng()
        with gen:
            torch.manual_seed(self.config.seed)
            self.ensemble = DenoiserEnsemble(self.config.ensemble_size, pc.horizon, pc.action_dim,
                                             cond_dim, self.config.ensemble_hidden)
            self.rnd = RandomNetworkDistillation(cond_dim, self.config.rnd_hidden, self.config.rnd_dim)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self._previous: torch.Tensor | None = None
        # The raw origin [B, Da] the previous chunk's offsets start from (relative actions only).
        self._previous_origin: torch.Tensor | None = None
        # Both heads as one stacked MLP for scoring (rebuilt when their weights change).
        self.__dict__["_fused"] = None
        self._takes_noise = "noise" in inspect.signature(policy.predict_normalized_chunk).parameters

    def reset(self, seed: int | None = None) -> None:
        """Forget the previous chunk (temporal score); optionally reseed the ensemble noise."""
        self._previous = self._previous_origin = None
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def _sample(self, obs_n: torch.Tensor) -> torch.Tensor:
        """[B, To, Do] normalized -> [B, K, H, Da] normalized samples, one policy call on B*K rows."""
        pc, K = self.policy.config, self.config.num_samples
        B = obs_n.shape[0]
        rep = obs_n.repeat_interleave(K, dim=0)
        if self._takes_noise:
            noise = torch.randn((B * K, pc.horizon, pc.action_dim), generator=self.policy.generator)
            out = self.policy.predict_normalized_chunk(rep, noise=noise)
        else:  # a deterministic policy: all K samples agree and dispersion is 0
            out = self.policy.predict_normalized_chunk(rep)
        return out.view(B, K, pc.horizon, pc.action_dim)

    def _origin(self, obs_n: torch.Tensor) -> torch.Tensor | None:
        """The raw origin [B, Da] of this call's chunks (None for a policy with absolute actions)."""
        origin_of = getattr(self.policy, "normalized_origin", None)
        return None if origin_of is None else origin_of(obs_n)

    def _heads(self, noised: torch.Tensor, cond: torch.Tensor, level: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ensemble predictions, RND prediction, RND target), fused into one MLP where the widths allow."""
        fused = self._fused
        if fused is None or not fused.is_current(self.ensemble, self.rnd):
            fused = FusedHeads(self.ensemble, self.rnd) if FusedHeads.supports(self.ensemble, self.rnd) \
                else None
            self.__dict__["_fused"] = fused
        if fused is None:
            return (self.ensemble(noised, cond, level), *self.rnd(cond))
        return fused(noised, cond, level)

    @torch.inference_mode()
    def score_normalized(self, obs_n: torch.Tensor, samples: torch.Tensor,
                         shift: int | None = None) -> dict[str, torch.Tensor]:
        """Every score for given samples; updates the stored previous chunk.

        Args:
            obs_n: [B, To, Do] normalized observations.
            samples: [B, K, H, Da] normalized samples (offsets from this call's origin for a
                policy with relative actions); sample 0 is the executed one.
            shift: Steps executed since the last call (default Ta).

        Returns:
            ``{name: [B]}`` for every name in ``SCORES``.
        """
        pc, c = self.policy.config, self.config
        cond = obs_n.flatten(1)
        chosen = samples[:, 0]
        level = torch.full((obs_n.shape[0],), c.ensemble_level)
        noise = torch.randn(chosen.shape, generator=self.generator)
        noised = noise_chunk(chosen, noise, float(c.ensemble_level))
        preds, pred, target = self._heads(noised, cond, level)
        shift = pc.n_action_steps if shift is None else shift
        origin = self._origin(obs_n)
        previous = self._previous
        if previous is not None and previous.shape == chosen.shape and shift < pc.horizon:
            if origin is not None:  # the same absolute actions, as offsets from this origin
                previous = rebase(previous, self._previous_origin, origin,
                                  self.policy.action_normalizer.half_range)
            temporal = temporal_inconsistency(previous, samples, shift)
        else:
            temporal = torch.zeros(obs_n.shape[0])
        self._previous, self._previous_origin = chosen, origin
        return {"dispersion": sample_dispersion(samples), "ensemble": ensemble_disagreement(preds),
                "rnd": rnd_error(pred, target), "temporal": temporal}

    @torch.inference_mode()
    def predict(self, obs: torch.Tensor, shift: int | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Predict the next Ta actions and score them.

        Args:
            obs: [B, To, Do] raw observations (oldest first).
            shift: Steps executed since the last call (default Ta).

        Returns:
            (actions [B, Ta, Da] raw, ``{score name: [B]}``).
        """
        policy = self.policy
        obs = torch.as_tensor(obs, dtype=torch.float32)
        policy._check_obs(obs)
        if not all_finite(obs):
            raise ValueError("observation has non-finite values; expected finite numbers")
        obs_n = policy.obs_normalizer.normalize(obs)
        samples = self._sample(obs_n)
        scores = self.score_normalized(obs_n, samples, shift)
        actions = policy.action_normalizer.unnormalize(samples[:, 0, : policy.config.n_action_steps])
        return policy.absolute_actions(actions, obs), scores

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of the heads on raw ``batch["obs"]`` [N, To, Do], ``batch["action"]`` [N, H, Da].

        Each ensemble member trains on its own bootstrap resample of the batch, so members disagree
        where the data are thin.
        """
        obs_n, act_n = self.policy.normalized_batch(batch)
        cond = obs_n.flatten(1)
        N, M = cond.shape[0], self.config.ensemble_size
        idx = torch.randint(0, N, (M, N))
        lo, hi = self.config.level_range
        level = lo + (hi - lo) * torch.rand(M, N)
        clean = act_n[idx]
        pred = self.ensemble(noise_chunk(clean, torch.randn_like(clean), level), cond[idx], level)
        ens_loss = nn.functional.mse_loss(pred, clean)
        p, t = self.rnd(cond)
        rnd_loss = nn.functional.mse_loss(p, t)
        return ens_loss + rnd_loss, {"ensemble_mse": float(ens_loss.detach()),
                                     "rnd_mse": float(rnd_loss.detach())}

    def config_dict(self) -> dict[str, Any]:
        """The config as plain JSON data."""
        return asdict(self.config)

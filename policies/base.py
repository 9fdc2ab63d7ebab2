"""The policy contract: chunked action prediction, a one-step queue, a loss, saved normalizers."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policies.layers import all_finite
from policies.normalizer import RangeNormalizer
from policies.registered import Registered


def _as_tensor(x: Any) -> torch.Tensor:
    """An array as a tensor: uint8 (images) kept, anything else float32."""
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return t if t.dtype == torch.uint8 else t.float()


def tree_map(fn: Callable[[Any], Any], obs: Any) -> Any:
    """``fn`` on an observation, or on each value of a dict observation."""
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, Mapping) else fn(obs)


def stack_tree(items: list[Any], dim: int) -> Any:
    """``torch.stack`` of observations, key by key for dict observations."""
    if isinstance(items[0], Mapping):
        return {k: torch.stack([o[k] for o in items], dim=dim) for k in items[0]}
    return torch.stack(items, dim=dim)


@dataclass(kw_only=True)
class PolicyConfig:
    """Shapes shared by every policy."""

    obs_dim: int
    """Do: observation features per step."""
    action_dim: int
    """Da: action features per step."""
    n_obs_steps: int = 2
    """To: observation history fed to the policy."""
    horizon: int = 16
    """H: actions predicted per chunk."""
    n_action_steps: int = 8
    """Ta: actions executed from each chunk before predicting again (receding horizon)."""
    seed: int = 0
    """Seed of the policy's own sampling generator."""
    temporal_ensemble: float = 0.0
    """0: receding horizon (execute Ta of each H-step chunk). k > 0: predict a chunk every step and
    execute the average of all chunks' actions for the current step, weighted exp(-k * age) with the
    oldest chunk first (temporal ensembling, Zhao et al. 2023, ACT)."""

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "n_obs_steps", "horizon", "n_action_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is invalid; expected an integer >= 1")
        if self.temporal_ensemble < 0:
            raise ValueError(f"temporal_ensemble={self.temporal_ensemble}; expected >= 0 (0 = off)")
        if self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} exceeds horizon={self.horizon}; expected Ta <= H"
            )

    @classmethod
    def observation_fields(cls, shapes: tuple[int, ...] | Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
        """Config fields that fit observations of per-step ``shapes`` (a Box's shape, or a Dict's).

        Raises:
            ValueError: This policy cannot take such observations.
        """
        if isinstance(shapes, Mapping):
            raise ValueError(f"{cls.__name__} takes flat observations only; got dict observations "
                             f"{dict(shapes)} (expected a Box observation)")
        return {"obs_dim": int(np.prod(shapes))}


class Policy(nn.Module):
    """Base of every policy: normalizers, the observation history and the action queue.

    Subclasses implement ``predict_normalized_chunk`` and ``compute_loss``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    obs_normalizer = Registered("_modules")
    action_normalizer = Registered("_modules")

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.obs_normalizer = RangeNormalizer(config.obs_dim)
        self.action_normalizer = RangeNormalizer(config.action_dim)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._obs_history: deque[torch.Tensor] = deque(maxlen=config.n_obs_steps)
        self._action_queue: deque[torch.Tensor] = deque()
        self._ensemble: deque[torch.Tensor] = deque(maxlen=config.n_action_steps)

    def require_vector_observations(self, tool: str) -> None:
        """Refuse, in one line, a policy that reads camera frames where ``tool`` handles vectors only.

        Export, calibration, distillation and the Q-critic feed a policy one observation vector per
        step; an ``obs_encoder="image"`` policy takes a dict of frames and state instead.
        """
        encoder = getattr(self.config, "obs_encoder", "state")
        if encoder != "state":
            raise ValueError(f"{tool} takes policies that read one observation vector per step; this "
                             f"{self.name} policy has obs_encoder={encoder!r}; expected 'state'")

    def fit_normalizers(self, obs: np.ndarray, actions: np.ndarray,
                        episode_ends: np.ndarray | None = None) -> None:
        """Set normalization statistics from the training data ([N, Do], [N, Da]).

        ``episode_ends`` ([E], exclusive) is for policies whose statistics span a window; unused here.
        """
        self.obs_normalizer.fit(obs)
        self.action_normalizer.fit(actions)

    def reset(self, seed: int | None = None) -> None:
        """Forget the observation history and queued actions; optionally reseed sampling."""
        self._obs_history.clear()
        self._action_queue.clear()
        self._ensemble.clear()
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def _check_obs(self, obs: torch.Tensor) -> None:
        c = self.config
        if obs.ndim != 3 or obs.shape[1:] != (c.n_obs_steps, c.obs_dim):
            raise ValueError(
                f"observation batch has shape {tuple(obs.shape)}; "
                f"expected [B, {c.n_obs_steps}, {c.obs_dim}]"
            )

    def prepare_obs(self, obs: Any) -> Any:
        """Raw observations from a caller -> checked, normalized policy input.

        Args:
            obs: [B, To, Do] raw observations (oldest first); policies with dict observations
                override this.
        """
        obs = torch.as_tensor(obs, dtype=torch.float32)
        self._check_obs(obs)
        if not all_finite(obs):
            raise ValueError("observation has non-finite values; expected finite numbers")
        return self.normalize_obs(obs)

    def normalize_obs(self, obs: Any) -> Any:
        """Normalize a raw observation batch (training batches skip ``prepare_obs``'s checks)."""
        return self.obs_normalizer.normalize(obs)

    def is_single_obs(self, obs: Any) -> bool:
        """Whether ``select_action`` got one observation ([Do]) rather than a batch ([B, Do])."""
        return obs.ndim == 1

    @torch.inference_mode()
    def predict_action_chunk(self, obs: Any) -> torch.Tensor:
        """Predict the next Ta actions for a batch.

        Runs in ``torch.inference_mode``, whose lighter per-op bookkeeping matters at batch 1 (a
        PushT one-step student's chunk: 0.20 -> 0.18 ms): the result is an inference tensor, so
        clone it outside inference mode before changing it in place or using it in autograd.

        Args:
            obs: [B, To, Do] raw observations (oldest first), or a dict of [B, To, ...] arrays for
                policies that take dict observations.

        Returns:
            [B, Ta, Da] raw actions.
        """
        chunk = self.predict_normalized_chunk(self.prepare_obs(obs))
        return self.absolute_actions(
            self.action_normalizer.unnormalize(chunk[:, : self.config.n_action_steps]), obs)

    def absolute_actions(self, actions: torch.Tensor, obs: Any) -> torch.Tensor:
        """Unnormalized chunk actions [B, T, Da] for raw ``obs`` -> the actions the env takes.

        The identity here; a policy that predicts offsets from an observed origin adds it back.
        """
        return actions

    @torch.inference_mode()
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """One control step: queue a new chunk when the last one is used up.

        Args:
            obs: [Do] or [B, Do] current observation(s), or a dict of them.

        Returns:
            [Da] or [B, Da] action(s).
        """
        o = tree_map(_as_tensor, obs)
        single = self.is_single_obs(o)
        o = tree_map(lambda t: t[None], o) if single else o
        if not self._obs_history:  # pad the history with the first observation
            self._obs_history.extend([o] * self.config.n_obs_steps)
        else:
            self._obs_history.append(o)
        if self.config.temporal_ensemble > 0:
            action = self._ensembled_action(stack_tree(list(self._obs_history), dim=1)).numpy()
            return action[0] if single else action
        if not self._action_queue:
            chunk = self.predict_action_chunk(stack_tree(list(self._obs_history), dim=1))
            self._action_queue.extend(chunk.unbind(dim=1))
        action = self._action_queue.popleft().numpy()
        return action[0] if single else action

    def _ensembled_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Average of every live chunk's action for this step. obs: [B, To, Do] -> [B, Da]."""
        self._ensemble.append(self.predict_action_chunk(obs))  # [B, Ta, Da], newest last
        n = len(self._ensemble)
        # The chunk predicted i steps ago (i = n-1 .. 0) contributes its action at index i.
        actions = torch.stack([chunk[:, n - 1 - j] for j, chunk in enumerate(self._ensemble)], dim=0)
        weights = torch.exp(-self.config.temporal_ensemble * torch.arange(n, dtype=torch.float32))
        return torch.einsum("n,nbd->bd", weights / weights.sum(), actions)

    @property
    def chunk_pending(self) -> bool:
        """True when the next ``select_action`` will run the network."""
        return self.config.temporal_ensemble > 0 or not self._action_queue

    def predict_normalized_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, To, Do] normalized observations -> [B, H, Da] normalized actions."""
        raise NotImplementedError

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on raw ``batch["obs"]`` [B, To, Do] and ``batch["action"]`` [B, H, Da]."""
        raise NotImplementedError

    def normalized_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalize a training batch; returns (obs [B, To, Do], actions [B, H, Da])."""
        return (
            self.normalize_obs(batch["obs"]),
            self.action_normalizer.normalize(batch["action"]),
        )

    def extra_metadata(self) -> dict[str, Any]:
        """Facts saved beside the config (override to add)."""
        return {}

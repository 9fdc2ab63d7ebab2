"""MLP behaviour cloning: the baseline that averages modes, behind the same interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from policies.base import Policy, PolicyConfig
from policies.layers import mlp


@dataclass(kw_only=True)
class MlpBcConfig(PolicyConfig):
    """MLP behaviour cloning with an L2 loss on the whole action chunk."""

    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """Widths of the hidden layers."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"hidden_dims={self.hidden_dims}; expected positive widths")


class MlpBcPolicy(Policy):
    """Deterministic MLP: observation history -> action chunk."""

    name = "mlp"
    config_class = MlpBcConfig

    def __init__(self, config: MlpBcConfig) -> None:
        super().__init__(config)
        c = config
        self.net = mlp(c.n_obs_steps * c.obs_dim, c.hidden_dims, c.horizon * c.action_dim)

    def predict_normalized_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, To, Do] -> [B, H, Da]."""
        c = self.config
        return self.net(obs.flatten(1)).view(-1, c.horizon, c.action_dim)

    def compute_loss(self, batch):
        """Mean squared error over the normalized chunk."""
        obs, actions = self.normalized_batch(batch)
        loss = nn.functional.mse_loss(self.predict_normalized_chunk(obs), actions)
        return loss, {"mse": float(loss.detach())}

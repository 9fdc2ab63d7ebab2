"""Q-guided sampling (IDQL-style): draw K chunks in one batched call, keep the critic's favourite.

Hansen-Estruch et al. 2023, "IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion
Policies": the diffusion policy proposes, a learned critic ``Q(obs history, action chunk)`` picks.
``QGuidedPolicy`` wraps any chunked policy at inference time; the wrapped policy is not changed.

Shapes: B batch, K candidates, To observation steps, Do features, Ta executed actions, Da features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from policies.base import Policy
from policies.diffusion.relative import require_absolute_actions
from policies.io import atomic_write_text, load_tensors_verified, save_tensors_atomic
from policies.layers import mlp

CRITIC_WEIGHTS, CRITIC_CONFIG = "critic.safetensors", "critic.json"


@dataclass(kw_only=True)
class ChunkCriticConfig:
    """A Q-function over (normalized observation history, normalized executed chunk)."""

    cond_dim: int
    """To * Do."""
    chunk_dim: int
    """Ta * Da."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """MLP widths."""

    def __post_init__(self) -> None:
        if self.cond_dim < 1 or self.chunk_dim < 1:
            raise ValueError(f"cond_dim={self.cond_dim}, chunk_dim={self.chunk_dim}; expected >= 1")
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)


class ChunkCritic(nn.Module):
    """``Q(cond [B, To*Do], chunk [B, Ta, Da]) -> [B]`` in normalized units."""

    def __init__(self, config: ChunkCriticConfig) -> None:
        super().__init__()
        self.config = config
        self.net = mlp(config.cond_dim + config.chunk_dim, config.hidden_dims, 1)

    def forward(self, cond: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """[B, Dc], [B, Ta, Da] -> [B]."""
        return self.net(torch.cat([cond, chunk.flatten(1)], dim=-1)).squeeze(-1)


def save_critic(critic: ChunkCritic, folder: str | Path, metadata: dict | None = None) -> Path:
    """``critic.safetensors`` + ``critic.json`` (JSON renamed last); loading never unpickles."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = save_tensors_atomic(critic.state_dict(), folder / CRITIC_WEIGHTS)
    atomic_write_text(folder / CRITIC_CONFIG, json.dumps(
        {"config": asdict(critic.config), "weights_sha256": digest, "metadata": metadata or {}}, indent=2))
    return folder


def load_critic(folder: str | Path) -> ChunkCritic:
    """A critic saved by ``save_critic``."""
    folder = Path(folder)
    if not (folder / CRITIC_CONFIG).is_file():
        raise FileNotFoundError(f"no critic at {str(folder)!r}; expected {CRITIC_CONFIG} there")
    doc = json.loads((folder / CRITIC_CONFIG).read_text())
    tensors = load_tensors_verified(folder / CRITIC_WEIGHTS, doc["weights_sha256"], "critic weights")
    critic = ChunkCritic(ChunkCriticConfig(**doc["config"]))
    critic.load_state_dict(tensors)
    return critic.eval()


class QGuidedPolicy(Policy):
    """Any chunked policy plus a critic: K candidates per observation, one batched sampler call.

    Args:
        base: The proposal policy (its normalizers and sampler are used as they are).
        critic: ``ChunkCritic`` over the base's normalized units.
        num_samples: K candidates per observation.
        temperature: 0 keeps the argmax; > 0 samples a candidate with probability
            ``softmax(Q / temperature)`` (IDQL's "expectile" selection uses the same form).
    """

    def __init__(self, base: Policy, critic: ChunkCritic, num_samples: int = 16,
                 temperature: float = 0.0) -> None:
        super().__init__(base.config)
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}; expected >= 1")
        if temperature < 0:
            raise ValueError(f"temperature={temperature}; expected >= 0 (0 = argmax)")
        require_absolute_actions(base, "the Q-critic filter")
        c = base.config
        expected = (c.n_obs_steps * c.obs_dim, c.n_action_steps * c.action_dim)
        got = (critic.config.cond_dim, critic.config.chunk_dim)
        if got != expected:
            raise ValueError(f"critic takes (cond, chunk) dims {got}; the policy needs {expected}")
        self.base, self.critic = base, critic
        self.obs_normalizer, self.action_normalizer = base.obs_normalizer, base.action_normalizer
        self.generator = base.generator
        self.num_samples, self.temperature = int(num_samples), float(temperature)
        self.name = f"q-guided({base.name})"

    def scores(self, obs: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """Critic values of candidates. obs: [B, To, Do] normalized; chunks: [B, K, H, Da] -> [B, K]."""
        B, K = chunks.shape[:2]
        cond = obs.flatten(1).repeat_interleave(K, dim=0)
        executed = chunks[:, :, : self.config.n_action_steps].flatten(0, 1)
        return self.critic(cond, executed).view(B, K)

    def predict_normalized_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, To, Do] -> [B, H, Da]: K proposals per row in one call, then the critic's pick."""
        B, K = obs.shape[0], self.num_samples
        chunks = self.base.predict_normalized_chunk(obs.repeat_interleave(K, dim=0))
        chunks = chunks.view(B, K, *chunks.shape[1:])
        q = self.scores(obs, chunks)
        if self.temperature > 0:
            pick = torch.multinomial(torch.softmax(q / self.temperature, dim=1), 1,
                                     generator=self.generator).squeeze(1)
        else:
            pick = q.argmax(dim=1)
        return chunks[torch.arange(B), pick]

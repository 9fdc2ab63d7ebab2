import pytest
import torch

from policies import make_policy
from policies.critic import ChunkCritic, ChunkCriticConfig, QGuidedPolicy, load_critic, save_critic


class _PreferRight(ChunkCritic):
    """Q = mean of the first action feature over the executed chunk (a hand-checkable critic)."""

    def forward(self, cond, chunk):
        return chunk[..., 0].mean(dim=1)


def _base():
    torch.manual_seed(0)
    return make_policy("diffusion", obs_dim=3, action_dim=2, horizon=8, n_action_steps=4,
                       hidden_dims=(32, 32), num_inference_steps=3)


def test_q_guided_policy_keeps_the_critics_favourite_of_k_batched_proposals():
    base = _base()
    critic = _PreferRight(ChunkCriticConfig(cond_dim=6, chunk_dim=8))
    guided = QGuidedPolicy(base, critic, num_samples=5)
    obs = torch.randn(2, 2, 3)
    base.reset(seed=1)
    proposals = base.predict_normalized_chunk(obs.repeat_interleave(5, dim=0)).view(2, 5, 8, 2)
    base.reset(seed=1)
    picked = guided.predict_normalized_chunk(obs)
    best = proposals[..., :4, 0].mean(-1).argmax(1)  # by hand: the largest mean first feature
    assert torch.equal(picked, proposals[torch.arange(2), best])
    assert guided.select_action(torch.zeros(3).numpy()).shape == (2,)


def test_critic_save_load_round_trip(tmp_path):
    critic = ChunkCritic(ChunkCriticConfig(cond_dim=6, chunk_dim=8, hidden_dims=(16,)))
    save_critic(critic, tmp_path / "c", metadata={"env_id": "x"})
    loaded = load_critic(tmp_path / "c")
    cond, chunk = torch.randn(3, 6), torch.randn(3, 4, 2)
    assert torch.equal(critic(cond, chunk), loaded(cond, chunk))


def test_mismatched_critic_is_named():
    critic = ChunkCritic(ChunkCriticConfig(cond_dim=5, chunk_dim=8))
    with pytest.raises(ValueError, match="the policy needs"):
        QGuidedPolicy(_base(), critic)

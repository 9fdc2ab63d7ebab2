"""Behaviour cloning hands the episode boundaries to a policy with relative actions."""

import numpy as np
import torch

from agents.data.episode_store import EpisodeStore
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.train.checkpoint import latest_checkpoint
from policies import load_policy
from policies.diffusion.relative import chunk_offsets


def test_relative_actions_are_fitted_per_episode_and_saved(tiny_store, tmp_path):
    config = {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4,
              "horizon": 8, "n_action_steps": 4, "relative_action_origin": (0, 1)}
    train = BcTrainConfig(steps=10, batch_size=16, val_every=5, checkpoint_every=10, log_every=5)
    run = BcRunConfig(data=str(tiny_store), policy="diffusion", out=str(tmp_path / "run"),
                      policy_config=config, train=train)
    policy, _ = load_policy(latest_checkpoint(train_bc(run, progress=False) / "checkpoints"))
    store = EpisodeStore.open(tiny_store)
    data = store.load(["obs", "action"])
    offsets = chunk_offsets(data["obs"], data["action"], store.episode_ends, (0, 1), 8)
    lo, hi = offsets.min(0), offsets.max(0)
    assert policy.config.relative_action_origin == (0, 1)
    assert np.allclose(policy.action_normalizer.center.numpy(), (hi + lo) / 2, atol=1e-6)
    assert np.allclose(policy.action_normalizer.half_range.numpy(), (hi - lo) / 2, atol=1e-6)
    obs = torch.as_tensor(data["obs"][:3, None].repeat(2, axis=1))  # To = 2
    chunk = policy.predict_action_chunk(obs)
    center, half = policy.action_normalizer.center, policy.action_normalizer.half_range
    assert ((chunk - obs[:, -1:, :2] - center).abs() <= half + 1e-5).all()

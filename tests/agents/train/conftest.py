import numpy as np
import pytest
import torch

from policies import make_policy, save_policy


@pytest.fixture
def tiny_base(tmp_path):
    """A small untrained diffusion policy for PointObstacle-v0, saved like a BC run's checkpoint."""
    torch.manual_seed(0)
    policy = make_policy("diffusion", obs_dim=4, action_dim=2, horizon=8, n_action_steps=4,
                         hidden_dims=(32, 32), num_inference_steps=4)
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.uniform(-1, 1, (100, 4)), rng.uniform(-1, 1, (100, 2)))
    return save_policy(policy, tmp_path / "base", metadata={"env_id": "kinodiff/PointObstacle-v0"})

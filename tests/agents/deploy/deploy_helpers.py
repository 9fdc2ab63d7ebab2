"""Shared helpers of the deploy tests (imported by name: tests have no packages)."""

import numpy as np

from policies import make_policy, save_policy

TASK = "kinodiff/TinyReach-v0"  # obs (3,) [x, v, goal], action (1,) force
SHAPES = {"obs_dim": 3, "action_dim": 1, "n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}
SMALL = {"diffusion": {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4},
         "mlp": {"hidden_dims": (32, 32)}}


def save_untrained(folder, name="diffusion", **overrides):
    """A saved policy with random weights and fitted normalizers (no training needed to export)."""
    policy = make_policy(name, **{**SHAPES, **SMALL[name], **overrides})
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.uniform([-1, -2, -1], [1, 2, 1], size=(256, 3)),
                           rng.uniform(-0.8, 0.8, size=(256, 1)))
    save_policy(policy, folder, metadata={"env_id": TASK})
    return folder

"""ONNX export of a policy whose actions are offsets from an observed origin."""

import numpy as np
import torch
from deploy_helpers import SHAPES, SMALL, TASK

from agents.deploy.export import ExportConfig, PolicyGraph, export_policy
from agents.deploy.runtime import OnnxPolicy
from policies import load_policy, make_policy, save_policy


def test_exported_relative_policy_adds_the_origin_inside_the_graph(tmp_path):
    # TinyReach's action (a force) measured from obs feature 2 (the goal): plumbing, not physics.
    policy = make_policy("diffusion", **{**SHAPES, **SMALL["diffusion"]}, relative_action_origin=(2,))
    rng = np.random.default_rng(0)
    obs = rng.uniform([-1, -2, -1], [1, 2, 1], size=(256, 3))
    policy.fit_normalizers(obs, obs[:, 2:] + rng.uniform(-0.1, 0.1, size=(256, 1)), np.array([128, 256]))
    save_policy(policy, tmp_path / "p", metadata={"env_id": TASK})
    doc = export_policy(ExportConfig(run=str(tmp_path / "p"), out=str(tmp_path / "p.onnx"), check_inputs=8))
    runtime = OnnxPolicy(tmp_path / "p.onnx")
    loaded, _ = load_policy(tmp_path / "p")
    graph = PolicyGraph(loaded, doc["action"]["low"], doc["action"]["high"]).eval()
    x = rng.uniform([-0.5, -1, -0.5], [0.5, 1, 0.5], size=(50, 2, 3)).astype(np.float32)
    noise = rng.standard_normal((50, 8, 1), dtype=np.float32)
    with torch.no_grad():
        want = graph(torch.from_numpy(x), torch.from_numpy(noise)).numpy()
    assert np.abs(runtime.predict_chunk(x, noise) - want).max() <= 1e-5
    # The graph's actions are the policy's own: absolute, within the offsets' range of the goal.
    loaded.reset(seed=3)
    own = loaded.predict_action_chunk(torch.from_numpy(x)).numpy()
    loaded.reset(seed=3)
    noise = torch.randn(50, 8, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = graph(torch.from_numpy(x), noise).numpy()[:, :4]
    low, high = np.asarray(doc["action"]["low"]), np.asarray(doc["action"]["high"])
    assert np.abs(got - np.clip(own, low, high)).max() <= 1e-5
    center, half = loaded.action_normalizer.center.numpy(), loaded.action_normalizer.half_range.numpy()
    assert (np.abs(own - x[:, -1:, 2:] - center) <= half + 1e-5).all()
    assert np.abs(own - x[:, -1:, 2:]).max() > 0.05  # and not the goal itself

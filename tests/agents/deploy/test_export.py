import json

import numpy as np
import pytest
import torch
from deploy_helpers import SHAPES, TASK, save_untrained

from agents.deploy.export import ExportConfig, PolicyGraph, export_policy
from agents.deploy.runtime import OnnxPolicy
from agents.deploy.sidecar import read_sidecar, sidecar_path
from policies import load_policy

VARIANTS = {
    "ddim-mlp": ("diffusion", {}),
    "ddim-unet": ("diffusion", {"denoiser": "unet", "unet_dims": (16, 32)}),
    "ddim-transformer": ("diffusion", {"denoiser": "transformer", "d_model": 32, "n_layers": 1}),
    "flow-euler": ("diffusion", {"objective": "flow", "sampler": "euler"}),
    "flow-heun": ("diffusion", {"objective": "flow", "sampler": "heun"}),
    "epsilon-ddim": ("diffusion", {"prediction_type": "epsilon"}),
    "mlp-bc": ("mlp", {}),
}


SLOW = ("ddim-unet", "ddim-transformer")  # ~20 s each to trace and export on 2 cores


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.slow) if v in SLOW else v
                                     for v in sorted(VARIANTS)])
def test_onnx_equals_torch_on_recorded_observations_with_the_same_noise(tmp_path, variant):
    name, overrides = VARIANTS[variant]
    folder = save_untrained(tmp_path / "p", name, **overrides)
    doc = export_policy(ExportConfig(run=str(folder), out=str(tmp_path / "p.onnx"), check_inputs=8))
    runtime = OnnxPolicy(tmp_path / "p.onnx")
    policy, _ = load_policy(folder)
    graph = PolicyGraph(policy, doc["action"]["low"], doc["action"]["high"]).eval()
    rng = np.random.default_rng(1)
    obs = rng.uniform([-1.5, -3, -1.5], [1.5, 3, 1.5], size=(200, 2, 3)).astype(np.float32)
    noise = rng.standard_normal((200, 8, 1), dtype=np.float32)
    got = runtime.predict_chunk(obs, noise)
    with torch.no_grad():
        want = graph(torch.from_numpy(obs), torch.from_numpy(noise)).numpy()
    assert got.shape == (200, 8, 1)
    assert np.abs(got - want).max() <= 1e-5
    # Batch 1 runs through the same graph (dynamic batch axis).
    assert np.abs(runtime.predict_chunk(obs[3], noise[3:4][0][None])[None] - want[3]).max() <= 1e-5
    assert runtime.uses_noise == (name == "diffusion")


def test_graph_equals_the_policys_own_chunk(saved_policy):
    # The graph adds only clipping to the policy's predict_action_chunk (first Ta actions).
    policy, _ = load_policy(saved_policy)
    graph = PolicyGraph(policy, [-1.0], [1.0]).eval()
    obs = torch.randn(5, 2, 3)
    policy.reset(seed=3)
    want = policy.predict_action_chunk(obs)
    noise = torch.randn(5, 8, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = graph(obs, noise)[:, :4]
    assert torch.allclose(got, want.clamp(-1, 1), atol=1e-6)


def test_sidecar_records_layout_rates_limits_version_and_hash(saved_policy, tmp_path):
    out = tmp_path / "deep" / "policy.onnx"
    export_policy(ExportConfig(run=str(saved_policy), out=str(out)))
    doc = read_sidecar(out)
    assert doc["env_id"] == TASK and doc["policy"] == "diffusion"
    assert (doc["n_obs_steps"], doc["horizon"], doc["n_action_steps"]) == (2, 8, 4)
    assert doc["observation"]["dim"] == SHAPES["obs_dim"] and doc["action"]["dim"] == 1
    assert doc["action"]["low"] == [-1.0] and doc["action"]["high"] == [1.0]  # TinyReach ctrlrange
    assert doc["control_hz"] == pytest.approx(1.0 / doc["dt"])
    assert doc["inputs"]["noise"]["shape"] == ["B", 8, 1]
    assert len(doc["onnx_sha256"]) == 64 and doc["kinodiff_version"]
    assert doc["export_check"]["max_abs_diff_vs_torch"] <= 1e-5


def test_actions_are_clipped_to_the_task_limits_inside_the_graph(saved_policy, tmp_path):
    policy, _ = load_policy(saved_policy)
    policy.action_normalizer.half_range.mul_(50.0)  # unnormalized actions now far outside +-1
    graph = PolicyGraph(policy, [-1.0], [1.0]).eval()
    with torch.no_grad():
        out = graph(torch.randn(64, 2, 3), torch.randn(64, 8, 1))
    assert out.min() >= -1.0 and out.max() <= 1.0 and (out.abs() == 1.0).any()


def test_a_modified_model_file_is_refused(saved_policy, tmp_path):
    out = tmp_path / "p.onnx"
    export_policy(ExportConfig(run=str(saved_policy), out=str(out)))
    out.write_bytes(out.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="corrupt or mismatched"):
        OnnxPolicy(out)
    sidecar_path(out).unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        OnnxPolicy(out)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"sampler": "ddpm"}, "sampler='ddpm' draws fresh noise"),
    ({"adaptive_tol": 0.01}, "adaptive_tol=0.01"),
    ({"warm_start": 0.5}, "warm_start=0.5"),
    ({"temporal_ensemble": 0.1}, "temporal_ensemble=0.1"),
])
def test_settings_that_cannot_be_a_fixed_graph_are_refused(tmp_path, overrides, message):
    folder = save_untrained(tmp_path / "p", **overrides)
    with pytest.raises(ValueError, match=message):
        export_policy(ExportConfig(run=str(folder), out=str(tmp_path / "p.onnx")))
    assert not (tmp_path / "p.onnx").exists()


def test_inference_overrides_make_a_ddpm_policy_exportable(tmp_path):
    folder = save_untrained(tmp_path / "p", sampler="ddpm")
    doc = export_policy(ExportConfig(run=str(folder), out=str(tmp_path / "p.onnx"),
                                     overrides={"sampler": "ddim", "num_inference_steps": 2}))
    assert doc["source"]["policy_config"]["sampler"] == "ddim"
    assert doc["source"]["policy_config"]["num_inference_steps"] == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"format": "tflite"}, "format='tflite'"),
    ({"out": "policy.bin"}, "ending in .onnx"),
    ({"overrides": {"horizon": 4}}, "cannot change at export"),
])
def test_bad_export_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExportConfig(**{"run": "r", "out": "p.onnx", **kwargs})


def test_a_policy_for_another_task_is_refused(saved_policy, tmp_path):
    with pytest.raises(ValueError, match="obs_dim=3"):
        export_policy(ExportConfig(run=str(saved_policy), out=str(tmp_path / "p.onnx"),
                                   env="kinodiff/PointObstacle-v0"))


def test_cli_exports_a_trained_run(tiny_store, tmp_path, capsys):
    from agents.cli.main import main
    from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc

    run = train_bc(BcRunConfig(data=str(tiny_store), policy="mlp", out=str(tmp_path / "run"),
                               policy_config={"hidden_dims": (16,)},
                               train=BcTrainConfig(steps=3, batch_size=8, val_every=3,
                                                   checkpoint_every=3, log_every=1)), progress=False)
    out = tmp_path / "mlp.onnx"
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert "exported mlp policy (kinodiff/PointObstacle-v0, 20 Hz)" in capsys.readouterr().out
    assert json.loads(sidecar_path(out).read_text())["source"]["step"] == 3
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2

"""The policy contract, run over every registered policy (and each diffusion denoiser)."""

import numpy as np
import pytest
import torch

from policies import POLICIES, load_policy, make_policy, save_policy

SMALL = {"mlp": {"hidden_dims": (32, 32)},
         "diffusion": {"hidden_dims": (32, 32), "unet_dims": (16, 32), "num_train_timesteps": 20,
                       "num_inference_steps": 4}}
VARIANTS = [(name, {}) for name in sorted(POLICIES)] + [
    ("diffusion", {"denoiser": "unet"}),
    ("diffusion", {"sampler": "ddpm"}),
    ("diffusion", {"prediction_type": "sample"}),
]
IDS = [f"{n}-{'-'.join(map(str, kw.values())) or 'default'}" for n, kw in VARIANTS]
DO, DA, TO, H, TA = 5, 3, 2, 8, 4


def _policy(name, **kw):
    p = make_policy(name, obs_dim=DO, action_dim=DA, n_obs_steps=TO, horizon=H, n_action_steps=TA,
                    **{**SMALL.get(name, {}), **kw})
    g = torch.Generator().manual_seed(0)
    p.fit_normalizers(torch.randn(100, DO, generator=g) * 3 + 1,
                      torch.rand(100, DA, generator=g) * 2 - 1)
    return p


def _batch(B=6):
    g = torch.Generator().manual_seed(1)
    return {"obs": torch.randn(B, TO, DO, generator=g), "action": torch.rand(B, H, DA, generator=g)}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_builds_from_defaults(name):
    p = make_policy(name, obs_dim=DO, action_dim=DA)
    assert sum(t.numel() for t in p.parameters()) > 0


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_loss_and_gradients_are_finite(name, kw):
    p = _policy(name, **kw)
    loss, metrics = p.compute_loss(_batch())
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and metrics
    grads = [t.grad for t in p.parameters() if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_chunk_shapes_and_input_not_mutated(name, kw):
    p = _policy(name, **kw).eval()
    obs = _batch(B=7)["obs"]
    before = obs.clone()
    chunk = p.predict_action_chunk(obs)
    assert chunk.shape == (7, TA, DA) and torch.isfinite(chunk).all()
    assert torch.equal(obs, before)
    with pytest.raises(ValueError, match=r"\[B, 2, 5\]"):
        p.predict_action_chunk(torch.zeros(7, 3, DO))


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_save_load_gives_identical_actions(name, kw, tmp_path):
    p = _policy(name, **kw).eval()
    save_policy(p, tmp_path / "p", metadata={"env_id": "x"})
    q, meta = load_policy(tmp_path / "p")
    assert meta["env_id"] == "x" and type(q) is type(p)
    obs = _batch()["obs"]
    p.reset(seed=3)
    q.reset(seed=3)
    assert torch.equal(p.predict_action_chunk(obs), q.predict_action_chunk(obs))


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_select_action_serves_a_chunk_of_ta_steps(name, kw):
    p = _policy(name, **kw).eval()
    calls = []
    original = p.predict_action_chunk
    p.predict_action_chunk = lambda o: calls.append(o.shape) or original(o)
    p.reset(seed=0)
    obs = np.zeros(DO, np.float32)
    actions = [p.select_action(obs) for _ in range(2 * TA + 1)]
    assert len(calls) == 3 and calls[0] == (1, TO, DO)
    assert all(a.shape == (DA,) for a in actions)
    p.reset()
    assert p.select_action(np.zeros((4, DO), np.float32)).shape == (4, DA)  # many envs, one call


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_normalizer_is_saved_inside_the_policy(name, tmp_path):
    p = _policy(name)
    save_policy(p, tmp_path / "p")
    q, _ = load_policy(tmp_path / "p")
    assert torch.equal(q.obs_normalizer.center, p.obs_normalizer.center)
    assert torch.equal(q.action_normalizer.half_range, p.action_normalizer.half_range)


def test_corrupt_weights_fail_the_checksum_before_parsing(tmp_path):
    p = _policy("mlp")
    save_policy(p, tmp_path / "p")
    w = tmp_path / "p" / "policy.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_policy(tmp_path / "p")


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="sampler='euler'"):
        make_policy("diffusion", obs_dim=2, action_dim=2, sampler="euler")
    with pytest.raises(ValueError, match="n_action_steps=9"):
        make_policy("mlp", obs_dim=2, action_dim=2, horizon=8, n_action_steps=9)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope", obs_dim=2, action_dim=2)
    with pytest.raises(ValueError, match="unknown config fields"):
        make_policy("mlp", obs_dim=2, action_dim=2, widths=3)

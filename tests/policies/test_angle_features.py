"""Angle observation features of the diffusion policy (``angle_features``)."""

import math

import pytest
import torch

from policies import load_policy, make_policy, save_policy
from policies.diffusion.angles import angle_features
from policies.normalizer import RangeNormalizer

SMALL = {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4,
         "horizon": 8, "n_action_steps": 4}


def _policy(**kw):
    p = make_policy("diffusion", obs_dim=5, action_dim=2, angle_features=(4,), **{**SMALL, **kw})
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(200, 5, generator=g) * 0.4 - 0.2
    obs[:, 4] = torch.rand(200, generator=g) * 2 * math.pi - math.pi
    p.fit_normalizers(obs, torch.rand(200, 2, generator=g) * 0.4 - 0.2)
    return p


def test_features_are_continuous_across_the_wrap():
    n = _normalizer(torch.tensor([0.5, 0.1]), torch.tensor([2.0, math.pi]))
    raw = torch.tensor([[0.3, math.pi - 1e-3], [0.3, -math.pi + 1e-3]])
    out = angle_features(n.normalize(raw), (1,), n)
    assert out.shape == (2, 3)
    # The normalized angles are ~2 apart; their (sin, cos) features are ~2e-3 apart.
    assert (out[0] - out[1]).abs().max() < 3e-3
    assert torch.allclose(out[:, 0], (raw[:, 0] - 0.5) / 2.0)
    assert torch.allclose(out[0, 1:], torch.tensor([math.sin(math.pi - 1e-3), math.cos(math.pi - 1e-3)]),
                          atol=1e-6)


def test_no_angles_is_the_identity():
    x = torch.randn(3, 2, 5)
    assert angle_features(x, (), RangeNormalizer(5)) is x


def test_the_selected_statistics_follow_a_refit_a_load_and_a_replaced_buffer():
    n = _normalizer(torch.tensor([0.5, 0.1]), torch.tensor([2.0, math.pi]))
    x = torch.tensor([[0.2, 0.5]])
    before = angle_features(x, (1,), n)
    n.fit(torch.tensor([[0.0, -1.0], [1.0, 1.0]]))  # in place: the version counters move
    assert torch.allclose(angle_features(x, (1,), n)[:, 1], torch.sin(torch.tensor([0.5])))
    n.load_state_dict({"center": torch.tensor([0.5, 0.1]), "half_range": torch.tensor([2.0, math.pi])})
    assert torch.equal(angle_features(x, (1,), n), before)
    n.half_range = torch.tensor([2.0, 1.0])  # a new tensor
    assert torch.allclose(angle_features(x, (1,), n)[:, 1], torch.sin(torch.tensor([0.6])))
    with torch.inference_mode():
        in_inference = angle_features(x, (1,), n)
    assert not n.selected((1,))[0].is_inference()  # training may reuse what inference selected
    assert torch.equal(in_inference, angle_features(x, (1,), n))


def _normalizer(center: torch.Tensor, half: torch.Tensor) -> RangeNormalizer:
    n = RangeNormalizer(len(center))
    n.center.copy_(center)
    n.half_range.copy_(half)
    return n


@pytest.mark.parametrize("bad", [(5,), (-1,), (4, 4)])
def test_config_rejects_bad_indices(bad):
    with pytest.raises(ValueError, match="angle_features"):
        make_policy("diffusion", obs_dim=5, action_dim=2, angle_features=bad)


def test_config_rejects_image_encoder():
    with pytest.raises(ValueError, match="obs_encoder='state'"):
        make_policy("diffusion", obs_dim=2, action_dim=2, obs_encoder="image", angle_features=(0,))


def test_condition_sees_the_wrap_as_no_jump():
    p = _policy().eval()
    obs = torch.zeros(2, 2, 5)
    obs[0, :, 4], obs[1, :, 4] = math.pi - 1e-3, -math.pi + 1e-3
    cond = p.encode(p.prepare_obs(obs))
    assert cond.shape == (2, 2 * 6)
    assert (cond[0] - cond[1]).abs().max() < 3e-3


def test_trains_predicts_and_round_trips(tmp_path):
    p = _policy()
    g = torch.Generator().manual_seed(1)
    batch = {"obs": torch.rand(6, 2, 5, generator=g), "action": torch.rand(6, 8, 2, generator=g)}
    loss, _ = p.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(t.grad is not None and t.grad.abs().sum() > 0 for t in p.denoiser.parameters())
    p.eval()
    obs = torch.rand(3, 2, 5, generator=g)
    p.reset(seed=7)
    a = p.predict_action_chunk(obs)
    assert a.shape == (3, 4, 2) and torch.isfinite(a).all()
    save_policy(p, tmp_path / "pol")
    q, _ = load_policy(tmp_path / "pol")
    assert q.config.angle_features == (4,)
    q.reset(seed=7)
    assert torch.allclose(q.predict_action_chunk(obs), a)


def test_config_takes_one_bare_index():
    p = make_policy("diffusion", obs_dim=5, action_dim=2, angle_features=4)
    assert p.config.angle_features == (4,)


def test_body_keypoints_are_world_positions_in_normalized_units():
    from policies.diffusion.angles import body_keypoints

    n = _normalizer(torch.tensor([0.0, 0.1, -0.1, 0.0]), torch.tensor([1.0, 0.2, 0.5, math.pi]))
    raw = torch.tensor([[9.0, 0.2, 0.0, math.pi / 2]])  # body at (0.2, 0.0), turned 90 degrees
    points = torch.tensor([[0.1, 0.0], [0.0, 0.05]])
    out = body_keypoints(n.normalize(raw), points, (1, 2, 3), n)
    world = torch.tensor([[0.2, 0.1], [0.15, 0.0]])  # R(90) (0.1, 0) = (0, 0.1); (0, .05) -> (-.05, 0)
    expected = torch.stack([(world[:, 0] - 0.1) / 0.2, (world[:, 1] + 0.1) / 0.5], dim=-1).flatten()
    assert out.shape == (1, 4)
    assert torch.allclose(out[0], expected, atol=1e-6)


def test_keypoint_policy_conditions_on_them_and_round_trips(tmp_path):
    p = _policy(body_keypoints=(0.06, 0.01, -0.015, -0.08), body_pose=(2, 3, 4))
    obs = torch.zeros(1, 2, 5)
    assert p.encode(p.prepare_obs(obs)).shape == (1, 2 * (5 + 1 + 4))
    with pytest.raises(ValueError, match="body_pose"):
        make_policy("diffusion", obs_dim=5, action_dim=2, body_keypoints=(0.1, 0.0), body_pose=(2, 3))
    with pytest.raises(ValueError, match="pairs"):
        make_policy("diffusion", obs_dim=5, action_dim=2, body_keypoints=(0.1,))
    p.eval()
    p.reset(seed=3)
    a = p.predict_action_chunk(obs)
    save_policy(p, tmp_path / "kp")
    q, _ = load_policy(tmp_path / "kp")
    q.reset(seed=3)
    assert torch.allclose(q.predict_action_chunk(obs), a)

import pytest
import torch

from policies.encoders import ImageEncoder, LowDimEncoder

# Small frames keep the tests fast; one test runs the default 96x96 with Diffusion Policy's 84 crop.
SHAPE, CROP, TO, P, F = (3, 32, 32), (28, 28), 2, 2, 16


def _encoder(crop=CROP, **kw):
    torch.manual_seed(0)
    return ImageEncoder(SHAPE, n_obs_steps=TO, agent_pos_dim=P, feature_dim=F, crop_shape=crop,
                        channels=(8, 16, 16, 16), num_keypoints=8, **kw)


def _obs(b, shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    return {"image": torch.randint(0, 256, (b, TO, h, w, c), dtype=torch.uint8, generator=g),
            "agent_pos": torch.randn(b, TO, P, generator=g)}


def test_low_dim_encoder_flattens_the_history():
    enc = LowDimEncoder(obs_dim=3, n_obs_steps=2)
    obs = torch.arange(12.0).view(2, 2, 3)
    out = enc(obs)
    assert enc.out_dim == 6 and out.shape == (2, 6)
    # Step-major: [o_0, o_1] of row 1 are 6..8 then 9..11.
    assert torch.equal(out[1], torch.arange(6.0, 12.0))


def test_low_dim_encoder_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        LowDimEncoder(3, 2)(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="obs_dim=0"):
        LowDimEncoder(0, 2)


def test_default_image_encoder_output_shape():
    enc = ImageEncoder(crop_shape=(84, 84))
    out = enc(_obs(2, shape=(3, 96, 96)))
    # To * (F + P) = 2 * (64 + 2)
    assert enc.out_dim == 132 and out.shape == (2, 132) and torch.isfinite(out).all()


def test_output_keeps_each_step_contiguous_with_its_agent_pos():
    enc = _encoder().eval()
    obs = _obs(3)
    with torch.no_grad():
        out = enc(obs).view(3, TO, F + P)
    assert enc.out_dim == TO * (F + P)
    assert torch.equal(out[..., F:], obs["agent_pos"])


def test_gradients_are_finite_and_reach_every_parameter():
    enc = _encoder().train()
    (enc(_obs(2)) * torch.randn(2, enc.out_dim)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_uint8_and_float_images_give_the_same_features_in_eval_mode():
    enc = _encoder().eval()
    obs = _obs(2)
    as_float = {"image": obs["image"].float() / 255.0, "agent_pos": obs["agent_pos"]}
    with torch.no_grad():
        assert torch.allclose(enc(obs), enc(as_float), atol=1e-6)


def test_input_is_not_mutated():
    enc = _encoder().train()
    obs = _obs(2)
    copy = {k: v.clone() for k, v in obs.items()}
    enc(obs)
    assert all(torch.equal(obs[k], copy[k]) for k in obs)


def _coordinate_frames(n):
    # Pixel (r, c) holds (r, c, 0): a crop's content tells where it was taken.
    _, h, w = SHAPE
    rows = torch.arange(h).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(n, h, w)
    return torch.stack([rows, cols, torch.zeros_like(rows)], dim=-1).to(torch.uint8)


def test_eval_mode_takes_the_centre_crop():
    enc = _encoder().eval()
    crop = enc._crop(_coordinate_frames(4))
    # (32 - 28) // 2 = 2: rows and columns 2..29.
    assert crop.shape == (4, 28, 28, 3)
    assert torch.equal(crop[:, :, 0, 0], torch.arange(2, 30).expand(4, 28).to(torch.uint8))
    assert torch.equal(crop[:, 0, :, 1], torch.arange(2, 30).expand(4, 28).to(torch.uint8))


def test_train_mode_takes_random_windows_per_frame():
    enc = _encoder().train()
    torch.manual_seed(1)
    crop = enc._crop(_coordinate_frames(64)).long()
    assert crop.shape == (64, 28, 28, 3)
    top, left = crop[:, 0, 0, 0], crop[:, 0, 0, 1]
    # Each crop is a contiguous window inside the frame ...
    steps = torch.arange(28)
    assert (crop[..., 0] == top.view(-1, 1, 1) + steps.view(1, 28, 1)).all()
    assert (crop[..., 1] == left.view(-1, 1, 1) + steps.view(1, 1, 28)).all()
    assert top.min() >= 0 and top.max() <= 4 and left.min() >= 0 and left.max() <= 4
    # ... and the offsets vary from frame to frame (5 x 5 choices, 64 draws).
    assert len({(int(a), int(b)) for a, b in zip(top, left, strict=True)}) > 5


def test_train_mode_is_random_and_eval_mode_deterministic():
    enc = _encoder()
    obs = _obs(2)
    with torch.no_grad():
        enc.train()
        assert not torch.allclose(enc(obs), enc(obs))
        enc.eval()
        assert torch.equal(enc(obs), enc(obs))


def test_without_a_crop_train_and_eval_agree():
    enc = _encoder(crop=None)
    obs = _obs(2)
    with torch.no_grad():
        assert torch.allclose(enc.train()(obs), enc.eval()(obs), atol=1e-6)


def test_rows_of_a_batch_are_independent():
    enc = _encoder().eval()
    obs, other = _obs(2), _obs(2, seed=1)
    mixed = {k: torch.stack([obs[k][0], other[k][1]]) for k in obs}
    with torch.no_grad():
        assert torch.allclose(enc(obs)[0], enc(mixed)[0], atol=1e-6)


@pytest.mark.parametrize(("obs", "message"), [
    ({"image": torch.zeros(2, TO, 24, 24, 3, dtype=torch.uint8), "agent_pos": torch.zeros(2, TO, P)},
     r"image has shape \(2, 2, 24, 24, 3\)"),
    ({"image": torch.zeros(2, TO, 3, 32, 32, dtype=torch.uint8), "agent_pos": torch.zeros(2, TO, P)},
     r"image has shape \(2, 2, 3, 32, 32\)"),
    ({"image": torch.zeros(2, 3, 32, 32, 3, dtype=torch.uint8), "agent_pos": torch.zeros(2, 3, P)},
     r"image has shape \(2, 3, 32, 32, 3\)"),
    ({"image": torch.zeros(2, TO, 32, 32, 3, dtype=torch.uint8), "agent_pos": torch.zeros(2, TO, 5)},
     r"agent_pos has shape \(2, 2, 5\)"),
    ({"image": torch.zeros(2, TO, 32, 32, 3, dtype=torch.uint8)}, "agent_pos"),
])
def test_bad_observations_raise_naming_the_shape(obs, message):
    with pytest.raises(ValueError, match=message):
        _encoder()(obs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"crop_shape": (40, 28)}, "crop_shape"),
    ({"image_shape": (1, 32, 32)}, "image_shape"),
    ({"channels": (8, 12, 16, 16)}, "channels"),
    ({"feature_dim": 0}, "feature_dim=0"),
])
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageEncoder(**{"image_shape": SHAPE, **kwargs})

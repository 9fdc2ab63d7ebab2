import math

import torch

from policies.diffusion.schedule import (
    add_noise,
    cosine_alphas_cumprod,
    reverse_step,
    sampling_steps,
)


def test_cosine_schedule_decreases_from_near_one():
    ab = cosine_alphas_cumprod(100)
    assert ab.shape == (100,) and ab[0] > 0.999 and ab[-1] < 1e-3
    assert torch.all(ab[1:] < ab[:-1])


def test_add_noise_matches_the_closed_form():
    ab = torch.tensor([0.64, 0.36], dtype=torch.float64)
    x0, noise = torch.ones(1, 2, 1), torch.full((1, 2, 1), 2.0)
    # sqrt(0.36) * 1 + sqrt(0.64) * 2 = 0.6 + 1.6 = 2.2
    assert torch.allclose(add_noise(x0, noise, torch.tensor([1]), ab), torch.full((1, 2, 1), 2.2))


def test_strided_steps_end_at_a_clean_sample():
    steps = sampling_steps(cosine_alphas_cumprod(100), 10, eta=0.0)
    assert [s.t for s in steps] == list(range(90, -1, -10))
    assert steps[-1].sqrt_ab_prev == 1.0 and all(s.sigma == 0 for s in steps)


def test_eta_one_with_every_step_is_the_ddpm_posterior():
    ab = cosine_alphas_cumprod(10)
    step = sampling_steps(ab, 10, eta=1.0)[3]  # t = 6, t_prev = 5
    a_t, a_p = float(ab[6]), float(ab[5])
    beta = 1 - a_t / a_p
    x_t, eps = torch.tensor([[[0.3]]]), torch.tensor([[[-0.5]]])
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    # DDPM posterior mean (Ho et al. eq. 7) and variance beta~_t.
    mean = (math.sqrt(a_p) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_p) / (1 - a_t)) * x_t
    var = (1 - a_p) / (1 - a_t) * beta
    assert math.isclose(step.sigma**2, var, rel_tol=1e-9)
    out, _ = reverse_step(x_t, eps, step, "epsilon", clip_sample=False, noise=torch.zeros(1, 1, 1))
    assert torch.allclose(out, mean, atol=1e-6)


def test_sample_prediction_with_clipping():
    step = sampling_steps(cosine_alphas_cumprod(10), 1, eta=0.0)[0]
    # One step from t=0 to a clean sample returns the clipped clean estimate itself.
    out, x0 = reverse_step(torch.zeros(1, 1, 2), torch.tensor([[[3.0, -0.5]]]), step, "sample", True, None)
    assert torch.equal(out, x0)
    assert torch.allclose(out, torch.tensor([[[1.0, -0.5]]]))


def test_flow_path_and_integrators():
    from policies.diffusion.flow import data_estimate, euler_step, heun_step, interpolate

    x1, x0 = torch.full((1, 1, 1), 2.0), torch.zeros(1, 1, 1)
    # s = 0.25: 0.25 * 2 + 0.75 * 0 = 0.5
    assert torch.allclose(interpolate(x1, x0, torch.tensor([0.25])), torch.tensor([[[0.5]]]))
    # Constant velocity 2 from 0.5 at s = 0.25 reaches 0.5 + 0.75 * 2 = 2 at s = 1.
    assert torch.allclose(data_estimate(torch.tensor(0.5), torch.tensor(2.0), 0.25), torch.tensor(2.0))
    # dx/ds = s integrated over [0, 1] from 0 is 0.5; Heun (trapezoid) is exact, Euler gives 0.
    assert heun_step(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), 1.0) == 0.5
    assert euler_step(torch.tensor(0.0), torch.tensor(0.0), 1.0) == 0.0


def test_flow_sample_prediction_integrates_along_the_straight_path():
    """With ``flow_prediction=sample`` a network that returns the data point exactly sends every
    Euler and Heun integration to it, from any noise (the velocity (x1 - x_s) / (1 - s) is exact)."""
    import torch

    from policies import make_policy

    target = torch.tensor([[[0.3, -0.5]] * 4])
    for sampler in ("euler", "heun"):
        p = make_policy("diffusion", obs_dim=2, action_dim=2, n_obs_steps=1, horizon=4,
                        n_action_steps=2, hidden_dims=(8,), objective="flow", sampler=sampler,
                        flow_prediction="sample", num_inference_steps=3)
        p._call_denoiser = lambda x, *args: target.expand_as(x)
        out = p.predict_normalized_chunk(torch.zeros(2, 1, 2), noise=torch.randn(2, 4, 2))
        assert torch.allclose(out, target.expand(2, 4, 2), atol=1e-6)
    velocity = make_policy("diffusion", obs_dim=2, action_dim=2, hidden_dims=(8,), objective="flow",
                           sampler="euler")
    assert velocity.config.flow_prediction == "velocity"  # the default: saved policies keep their meaning


def test_flow_prediction_is_checked():
    import pytest

    from policies import make_policy

    with pytest.raises(ValueError, match="flow_prediction='x1'"):
        make_policy("diffusion", obs_dim=2, action_dim=2, objective="flow", sampler="euler",
                    flow_prediction="x1")

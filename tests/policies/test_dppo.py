import math

import pytest
import torch

from policies import make_policy
from policies.diffusion.dppo import (
    chain_log_prob,
    ddim_steps,
    gaussian_entropy,
    gaussian_log_prob,
    sample_chain,
)


def _policy(prediction_type="sample", steps=5):
    torch.manual_seed(0)
    return make_policy("diffusion", obs_dim=3, action_dim=2, horizon=8, n_action_steps=4,
                       hidden_dims=(32, 32), num_inference_steps=steps,
                       prediction_type=prediction_type)


def _independent_log_prob(policy, chain, cond, std, k):
    """The chain log-probability recomputed step by step from the textbook formulas.

    For each fine-tuned DDIM step from t to t_prev (alpha-bars a, a_prev):
    x0 = f(x_t) (clipped), eps = (x_t - sqrt(a) x0) / sqrt(1 - a),
    mean = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, and log N(x_next; mean, std^2) per element.
    """
    c = policy.config
    T = c.num_train_timesteps
    stride = T // c.num_inference_steps
    ab = policy.alphas_cumprod.double()
    total = torch.zeros(chain.shape[0], dtype=torch.float64)
    ts = [j * stride for j in reversed(range(c.num_inference_steps))][-k:]
    for j, t in enumerate(ts):
        x = chain[:, j]
        a = ab[t]
        a_prev = ab[t - stride] if t - stride >= 0 else torch.tensor(1.0, dtype=torch.float64)
        out = policy.denoiser(x, torch.full((x.shape[0],), t), cond).double()
        x64 = x.double()
        x0 = out if c.prediction_type == "sample" else (x64 - (1 - a).sqrt() * out) / a.sqrt()
        x0 = x0.clamp(-1, 1)
        eps = (x64 - a.sqrt() * x0) / (1 - a).sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        dist = torch.distributions.Normal(mean, std)
        total += dist.log_prob(chain[:, j + 1].double()).flatten(1).sum(1)
    return total


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_recorded_chain_log_prob_matches_an_independent_recomputation(prediction_type, k):
    policy = _policy(prediction_type)
    steps = ddim_steps(policy.alphas_cumprod, 5)
    B = 6
    cond = torch.randn(B, 6, generator=torch.Generator().manual_seed(1))
    x = torch.randn(B, 8, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        chain, recorded = sample_chain(policy.denoiser, policy.denoiser, steps, k, x, cond, 0.1,
                                       prediction_type, True, generator=torch.Generator().manual_seed(3))
        batched = chain_log_prob(policy.denoiser, steps, chain, cond, 0.1, prediction_type, True)
        independent = _independent_log_prob(policy, chain, cond, 0.1, k)
    assert chain.shape == (B, k + 1, 8, 2)
    assert torch.allclose(recorded.double(), independent, atol=1e-5, rtol=0)
    assert torch.allclose(batched.double(), independent, atol=1e-5, rtol=0)


def test_deterministic_chain_is_the_policys_ddim_sampler():
    policy = _policy()
    steps = ddim_steps(policy.alphas_cumprod, 5)
    cond = torch.randn(4, 6)
    x = torch.randn(4, 8, 2)
    with torch.no_grad():
        chain, _ = sample_chain(policy.denoiser, policy.denoiser, steps, 5, x, cond, 0.1, "sample",
                                True, deterministic=True)
        ddim = policy.predict_normalized_chunk(cond.view(4, 2, 3), noise=x.clone())
    assert torch.allclose(chain[:, 0], x)  # k = K: the chain starts at the initial noise
    assert torch.allclose(chain[:, -1], ddim, atol=1e-6)


def test_gaussian_helpers_by_hand():
    # log N(1; 0, 2) = -0.5 * 0.25 - log 2 - 0.5 log(2 pi) per element; two elements.
    x = torch.tensor([[1.0, 1.0]])
    expected = 2 * (-0.125 - math.log(2.0) - 0.5 * math.log(2 * math.pi))
    assert gaussian_log_prob(x, torch.zeros(1, 2), 2.0).item() == pytest.approx(expected, abs=1e-6)
    # Entropy of a 1-D unit Gaussian: 0.5 log(2 pi e) ~ 1.4189.
    assert gaussian_entropy(1, 1.0) == pytest.approx(1.4189385, abs=1e-6)


def test_bad_k_is_named():
    policy = _policy()
    steps = ddim_steps(policy.alphas_cumprod, 5)
    with pytest.raises(ValueError, match="k=6"):
        sample_chain(policy.denoiser, policy.denoiser, steps, 6, torch.randn(1, 8, 2),
                     torch.randn(1, 6), 0.1, "sample", True)

import math

import pytest
import torch

from policies import make_policy
from policies.diffusion.dppo import (
    chain_log_prob,
    chain_step_log_probs,
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
    stride = c.num_train_timesteps // c.num_inference_steps
    total = torch.zeros(chain.shape[0], dtype=torch.float64)
    ts = [j * stride for j in reversed(range(c.num_inference_steps))][-k:]
    for j, t in enumerate(ts):
        dist = torch.distributions.Normal(_textbook_mean(policy, chain[:, j], t, cond), std)
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



def _textbook_mean(policy, x, t, cond):
    """The DDIM mean of one step from ``x`` at timestep ``t`` (float64), formulas as above.

    With alpha-bars a at t and a_prev at t - stride (1 past the end): x0 = f(x_t) (clipped),
    eps = (x_t - sqrt(a) x0) / sqrt(1 - a), mean = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps.
    """
    c = policy.config
    stride = c.num_train_timesteps // c.num_inference_steps
    ab = policy.alphas_cumprod.double()
    a = ab[t]
    a_prev = ab[t - stride] if t - stride >= 0 else torch.tensor(1.0, dtype=torch.float64)
    out = policy.denoiser(x, torch.full((x.shape[0],), t), cond).double()
    x64 = x.double()
    x0 = out if c.prediction_type == "sample" else (x64 - (1 - a).sqrt() * out) / a.sqrt()
    x0 = x0.clamp(-1, 1)
    eps = (x64 - a.sqrt() * x0) / (1 - a).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_per_step_log_probs_are_the_mean_over_the_executed_elements(prediction_type):
    policy = _policy(prediction_type)
    steps = ddim_steps(policy.alphas_cumprod, 5)
    k, B, Ta = 3, 4, 3
    cond = torch.randn(B, 6, generator=torch.Generator().manual_seed(1))
    x = torch.randn(B, 8, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        chain, recorded = sample_chain(policy.denoiser, policy.denoiser, steps, k, x, cond, 0.1,
                                       prediction_type, True, generator=torch.Generator().manual_seed(3),
                                       noise_clip=3.0)
        per_step = chain_step_log_probs(policy.denoiser, steps, chain, cond, 0.1, prediction_type, True, Ta)
        whole = chain_step_log_probs(policy.denoiser, steps, chain, cond, 0.1, prediction_type, True, 8)
        stride = 100 // 5
        for j in range(k):
            t = (k - 1 - j) * stride  # the last k of 80, 60, 40, 20, 0: 40, 20, 0 for k = 3
            mean = _textbook_mean(policy, chain[:, j], t, cond)
            # Mean over the first Ta rows and both features of log N(x_next; mean, 0.1^2).
            dist = torch.distributions.Normal(mean[:, :Ta], 0.1)
            expected = dist.log_prob(chain[:, j + 1, :Ta].double()).mean((1, 2))
            assert torch.allclose(per_step[:, j], expected, atol=1e-6, rtol=0)
    assert per_step.shape == (B, k)
    # With Ta = H, each step's mean times its H * Da = 16 elements, summed over steps, is the chain's.
    assert torch.allclose(whole.sum(1) * 16, recorded, atol=1e-5, rtol=0)
    # noise_clip = 3: no recorded step is further than 3 std from its mean.
    assert per_step.min() >= -0.5 * 9 - math.log(0.1) - 0.5 * math.log(2 * math.pi)
    with pytest.raises(ValueError, match="n_action_steps=9"):
        chain_step_log_probs(policy.denoiser, steps, chain, cond, 0.1, prediction_type, True, 9)

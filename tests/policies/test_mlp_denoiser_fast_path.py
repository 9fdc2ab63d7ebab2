"""The MLP denoiser's per-chunk conditioning gives the plain forward's outputs, and the thread option."""

import pickle

import pytest
import torch

from policies import make_policy
from policies.diffusion import denoisers
from policies.diffusion.denoisers import MlpDenoiser
from policies.diffusion.policy import SMALL_BATCH, DiffusionConfig

H, DA, DC = 8, 3, 10


def _denoiser():
    torch.manual_seed(0)
    return MlpDenoiser(H, DA, DC, hidden_dims=(64, 48, 32), time_dim=16).eval()


@pytest.mark.parametrize("presum", [True, False])
@pytest.mark.parametrize("batch", [5, 80])  # 80 x 64 hidden units: the one-exp Mish
def test_prepared_forward_equals_the_plain_forward(monkeypatch, presum, batch):
    if not presum:  # the large-batch path: per-step sums instead of K sums made ahead
        monkeypatch.setattr(denoisers, "PRESUM_LIMIT", 0)
    d = _denoiser()
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(batch, H, DA, generator=g), torch.randn(batch, DC, generator=g)
    timesteps = (90.0, 45.0, 0.0, 12.5)
    with torch.no_grad():
        prepared = d.condition(timesteps, cond)
        assert bool(prepared.pre) == presum
        for k, t in enumerate(timesteps):
            plain = d(x, torch.full((batch,), t), cond)
            fast = d(x, k, prepared)
            assert fast.shape == (batch, H, DA)
            assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
            assert not torch.equal(fast, torch.zeros_like(fast))


def test_condition_refuses_autograd_and_a_wrong_number_of_scales():
    d = _denoiser()
    with pytest.raises(RuntimeError, match="torch.no_grad"):
        d.condition((1.0,), torch.zeros(1, DC))
    with torch.no_grad(), pytest.raises(ValueError, match="out_scale has 1 factors; expected one per"):
        d.condition((1.0, 2.0), torch.zeros(1, DC), out_scale=(0.5,))


def test_out_scale_multiplies_the_prepared_output():
    d = _denoiser()
    x, cond = torch.randn(2, H, DA), torch.randn(2, DC)
    with torch.no_grad():
        plain = d(x, 1, d.condition((3.0, 7.0), cond))
        scaled = d(x, 1, d.condition((3.0, 7.0), cond, out_scale=(1.0, 0.25)))
    assert torch.allclose(scaled, 0.25 * plain, atol=1e-6)


def _policy(**kw):
    p = make_policy("diffusion", obs_dim=4, action_dim=DA, n_obs_steps=2, horizon=H, n_action_steps=4,
                    hidden_dims=(64, 64), num_train_timesteps=20, num_inference_steps=5, **kw)
    g = torch.Generator().manual_seed(0)
    p.fit_normalizers(torch.randn(50, 4, generator=g), torch.rand(50, DA, generator=g) * 2 - 1)
    return p.eval()


# The default (DDIM, sample prediction, clipped) and DDPM with fresh noise per step fold the step
# weight into the output layer; epsilon prediction and flow take the prepared forward only.
@pytest.mark.parametrize("kw", [{}, {"sampler": "ddpm"}, {"clip_sample": False},
                                {"sampler": "ddpm", "prediction_type": "epsilon"},
                                {"objective": "flow", "sampler": "euler"},
                                {"objective": "flow", "sampler": "heun"}])
def test_chunk_follows_the_weights_and_equals_the_plain_loop(kw):
    p = _policy(**kw)
    g = torch.Generator().manual_seed(2)
    obs, noise = torch.randn(3, 2, 4, generator=g), torch.randn(3, H, DA, generator=g)

    def both(seed):
        p.reset(seed=seed)
        with torch.no_grad():  # the MLP's per-chunk conditioning
            fast = p.predict_normalized_chunk(obs, noise=noise.clone())
        p.reset(seed=seed)
        with torch.enable_grad():  # the plain forward at every step
            plain = p.predict_normalized_chunk(obs, noise=noise.clone()).detach()
        return fast, plain

    fast, plain = both(0)
    assert torch.allclose(fast, plain, atol=1e-5)
    # A training step changes the weights in place: the next chunk must use the new ones.
    loss, _ = p.compute_loss({"obs": torch.randn(8, 2, 4, generator=g),
                              "action": torch.rand(8, H, DA, generator=g)})
    loss.backward()
    torch.optim.SGD(p.parameters(), lr=1.0).step()
    fast2, plain2 = both(0)
    assert torch.allclose(fast2, plain2, atol=1e-5)
    assert not torch.allclose(fast2, fast, atol=1e-4)


def test_small_batch_threads_applies_to_small_batches_only_and_restores_the_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        p = _policy(small_batch_threads=1)
        seen = []
        forward = p.denoiser.forward
        p.denoiser.forward = lambda *a: seen.append(torch.get_num_threads()) or forward(*a)
        small = p.predict_action_chunk(torch.randn(1, 2, 4))
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        p.predict_action_chunk(torch.randn(SMALL_BATCH + 1, 2, 4))
        assert set(seen) == {2} and torch.get_num_threads() == 2
        assert small.shape == (1, 4, DA) and torch.isfinite(small).all()
    finally:
        torch.set_num_threads(before)


def test_negative_small_batch_threads_is_named():
    with pytest.raises(ValueError, match="small_batch_threads=-1"):
        DiffusionConfig(obs_dim=4, action_dim=2, small_batch_threads=-1)


def test_forward_at_equals_the_plain_forward_and_follows_the_time_layer():
    d = _denoiser()
    g = torch.Generator().manual_seed(2)
    x, cond = torch.randn(4, H, DA, generator=g), torch.randn(4, DC, generator=g)
    with torch.no_grad():
        for t in (99, 49, 99):  # the second 99 comes from the cache
            assert torch.allclose(d.forward_at(x, t, cond), d(x, torch.full((4,), t), cond), atol=1e-6)
        before = d.forward_at(x, 99, cond)
    # An optimizer step on the time layer moves its version counter: the cached embedding is stale.
    optimizer = torch.optim.SGD(d.parameters(), lr=0.5)
    d(x, torch.full((4,), 99), cond).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        after = d.forward_at(x, 99, cond)
        assert not torch.allclose(after, before, atol=1e-4)
        assert torch.allclose(after, d(x, torch.full((4,), 99), cond), atol=1e-6)
        d.load_state_dict(_denoiser().state_dict())  # a load copies in place: also seen
        assert torch.allclose(d.forward_at(x, 99, cond), before, atol=1e-6)
    with pytest.raises(RuntimeError, match="expected torch.no_grad"):
        d.forward_at(x, 99, cond)


def test_forward_at_is_the_plain_forward_bit_for_bit_at_batch_1_and_follows_replaced_parameters():
    # Bit for bit at batch 1 (a rollout's chunks); a larger batch's time embedding comes from a
    # one-row product, which may round differently from the plain forward's batched one.
    d = _denoiser()
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        x, cond = torch.randn(1, H, DA, generator=g), torch.randn(1, DC, generator=g)
        assert torch.equal(d.forward_at(x, 70, cond), d(x, torch.full((1,), 70), cond))
        d.double()  # ``.to``/``.double`` replace the parameters: the kept views must go
        x, cond = x.double(), cond.double()
        out = d.forward_at(x, 70, cond)
        assert out.dtype == torch.float64
        assert torch.equal(out, d(x, torch.full((1,), 70), cond))
        torch.manual_seed(5)
        other = MlpDenoiser(H, DA, DC, hidden_dims=(64, 48, 32), time_dim=16).double()
        d.load_state_dict(other.state_dict(), assign=True)  # new parameter tensors, not copies
        assert torch.equal(d.forward_at(x, 70, cond), other(x, torch.full((1,), 70), cond))
        copy = pickle.loads(pickle.dumps(d))  # the load hook keeps the module picklable
        assert torch.equal(copy.forward_at(x, 70, cond), other(x, torch.full((1,), 70), cond))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_ddim_clips_with_kept_bounds_as_the_scalar_clamp_does(dtype):
    # The folded loop clamps with 0-dim bound tensors kept per schedule, dtype and device; they
    # must be the scalar clamp's values bit for bit, also for values one rounding off a bound.
    p = _policy().to(dtype)
    x = torch.zeros(1, H, DA, dtype=dtype)
    plan = p._chunk_plan(p.config.num_inference_steps, "ddim", 0, x)
    assert plan is p._chunk_plan(p.config.num_inference_steps, "ddim", 0, x)  # kept
    other = x.float() if dtype == torch.float64 else x.double()
    assert p._chunk_plan(p.config.num_inference_steps, "ddim", 0, other) is not plan
    for step, (_, lo, hi, b, sigma) in zip(plan.steps, plan.folded, strict=True):
        a = step.x0_coef
        assert (b, sigma) == (step.x_coef, step.sigma)
        assert lo.dtype == hi.dtype == dtype and lo.dim() == 0
        edge = torch.tensor([a, -a], dtype=dtype)
        near = torch.cat([edge, torch.nextafter(edge, edge * 2), torch.nextafter(edge, edge * 0),
                          torch.randn(64, dtype=dtype, generator=torch.Generator().manual_seed(1)) * a])
        assert torch.equal(near.clone().clamp_(lo, hi), near.clone().clamp_(-a, a))
    assert [k for k, *_ in plan.folded] == list(range(len(plan.steps)))
    g = torch.Generator().manual_seed(4)
    obs = torch.randn(2, 2, 4, generator=g, dtype=dtype)
    noise = torch.randn(2, H, DA, generator=g, dtype=dtype)
    with torch.no_grad():
        fast = p.predict_normalized_chunk(obs, noise=noise.clone())
    with torch.enable_grad():
        plain = p.predict_normalized_chunk(obs, noise=noise.clone()).detach()
    assert fast.dtype == dtype and torch.allclose(fast, plain, atol=1e-5)

"""Uncertainty heads: the fused scoring path equals the separate networks and never goes stale."""

import pytest
import torch

from policies.uncertainty.fused import FusedHeads
from policies.uncertainty.heads import DenoiserEnsemble, RandomNetworkDistillation, noise_chunk

H, DA, C, E = 6, 2, 5, 8


def _heads(rnd_hidden=(16, 16)):
    torch.manual_seed(0)
    return DenoiserEnsemble(3, H, DA, C, (16, 16)), RandomNetworkDistillation(C, rnd_hidden, E)


def _inputs(n=4):
    return torch.randn(n, H, DA), torch.randn(n, C), torch.full((n,), 0.5)


def _separate(ensemble, rnd, noised, cond, level):
    return (ensemble(noised, cond, level), *rnd(cond))


def test_fused_heads_equal_the_separate_networks_after_updates_and_loads():
    ensemble, rnd = _heads()
    noised, cond, level = _inputs()
    params = [*ensemble.parameters(), *rnd.predictor.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    fused = None
    for _ in range(3):
        with torch.no_grad():
            assert fused is None or not fused.is_current(ensemble, rnd)
            fused = FusedHeads(ensemble, rnd)
            assert fused.is_current(ensemble, rnd)
            got, want = fused(noised, cond, level), _separate(ensemble, rnd, noised, cond, level)
        assert [tuple(g.shape) for g in got] == [(3, 4, H, DA), (4, E), (4, E)]
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        # A training step changes the weights: the next call must rebuild the fused copy.
        preds, pred, target = _separate(ensemble, rnd, noised, cond, level)
        opt.zero_grad()
        (preds.square().mean() + (pred - target).square().mean()).backward()
        opt.step()
    assert not fused.is_current(ensemble, rnd)  # the last step changed the weights
    fresh = FusedHeads(ensemble, rnd)
    assert fresh.is_current(ensemble, rnd)
    torch.manual_seed(1)
    rnd.load_state_dict(RandomNetworkDistillation(C, (16, 16), E).state_dict())
    assert not fresh.is_current(ensemble, rnd)  # a load copies in place: seen
    assert not FusedHeads(ensemble, rnd).is_current(ensemble, _heads()[1])  # other modules
    with torch.no_grad():
        got = FusedHeads(ensemble, rnd)(noised, cond, level)
        torch.testing.assert_close(got[1], rnd.predictor(cond), rtol=1e-5, atol=1e-6)


def test_estimator_scores_with_fresh_heads_after_training():
    from policies import make_policy
    from policies.uncertainty import UncertaintyConfig, UncertaintyEstimator

    policy = make_policy("diffusion", obs_dim=3, action_dim=2, horizon=8, n_action_steps=4,
                         hidden_dims=(32,)).eval()
    est = UncertaintyEstimator(policy, UncertaintyConfig(num_samples=3, ensemble_size=3,
                                                         ensemble_hidden=(16,), rnd_hidden=(16,)))
    obs = torch.randn(2, 2, 3)
    est.predict(obs)
    first = est._fused
    batch = {"obs": torch.randn(16, 2, 3), "action": torch.rand(16, 8, 2)}
    opt = torch.optim.SGD(est.parameters(), lr=0.5)
    loss, _ = est.compute_loss(batch)
    loss.backward()
    opt.step()
    _, scores = est.predict(obs)
    assert est._fused is not first and est._fused.is_current(est.ensemble, est.rnd)
    cond = policy.obs_normalizer.normalize(obs).flatten(1)
    with torch.no_grad():
        torch.testing.assert_close(scores["rnd"], (est.rnd.predictor(cond) - est.rnd.target(cond))
                                   .square().mean(-1), rtol=1e-5, atol=1e-7)


def test_unequal_widths_are_not_fused():
    ensemble, rnd = _heads(rnd_hidden=(32,))
    assert not FusedHeads.supports(ensemble, rnd)
    with pytest.raises(ValueError, match="hidden widths differ"):
        FusedHeads(ensemble, rnd)
    assert FusedHeads.supports(*_heads())


def test_noise_chunk_float_level_equals_the_tensor_form():
    chunk, noise = torch.randn(4, H, DA), torch.randn(4, H, DA)
    torch.testing.assert_close(noise_chunk(chunk, noise, 0.3),
                               noise_chunk(chunk, noise, torch.full((4,), 0.3)))

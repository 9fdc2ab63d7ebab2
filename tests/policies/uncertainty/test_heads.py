"""Uncertainty heads: the stacked RND inference path matches the two plain MLPs and never goes stale."""

import torch

from policies.uncertainty.heads import RandomNetworkDistillation


def test_rnd_stacked_inference_matches_the_plain_networks_after_training_steps():
    torch.manual_seed(0)
    rnd = RandomNetworkDistillation(5, (32, 32), 8)
    x = torch.randn(4, 5)
    opt = torch.optim.SGD(rnd.predictor.parameters(), lr=0.1)
    for _ in range(3):
        with torch.no_grad():
            fast = rnd(x)  # the stacked path, cached weights
        slow = rnd.predictor(x), rnd.target(x)
        for f, s in zip(fast, slow, strict=True):
            assert f.shape == (4, 8)
            torch.testing.assert_close(f, s.detach(), rtol=1e-5, atol=1e-6)
        # A training step changes the predictor: the next no-grad call must see the new weights.
        pred, target = rnd(x)
        assert pred.requires_grad and not target.requires_grad
        opt.zero_grad()
        (pred - target).square().mean().backward()
        opt.step()
    with torch.no_grad():
        before = rnd(x)[0].clone()
        rnd.load_state_dict(RandomNetworkDistillation(5, (32, 32), 8).state_dict())
        after = rnd(x)[0]
    assert not torch.allclose(before, after)  # loaded weights replace the cached stack
    torch.testing.assert_close(after, rnd.predictor(x).detach(), rtol=1e-5, atol=1e-6)

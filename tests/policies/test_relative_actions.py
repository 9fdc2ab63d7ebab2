"""Actions relative to an observed origin (``relative_action_origin``): transform, training, sampling."""

import numpy as np
import pytest
import torch

from agents.data.sampler import SequenceSampler
from policies import load_policy, make_policy, save_policy
from policies.diffusion.config import DiffusionConfig
from policies.diffusion.relative import chunk_offsets, rebase, relative_batch, to_absolute
from policies.diffusion.warm import warm_tail

DO, DA, TO, H, TA = 4, 2, 2, 6, 3
ORIGIN = (1, 3)  # action feature i is measured from observation feature ORIGIN[i]
OFFSET = np.array([0.02, -0.01], dtype=np.float32)  # the demonstrated step, times 1 + phase
# Trained for seconds, the policy misses the demonstrated offsets by millimetres; a policy that
# forgot the origin would miss by the positions' spread (+-1).
TOL = 1e-2
SMALL = {"hidden_dims": (64, 64), "num_train_timesteps": 20, "num_inference_steps": 4}


def _policy(**kw):
    return make_policy("diffusion", obs_dim=DO, action_dim=DA, n_obs_steps=TO, horizon=H,
                       n_action_steps=TA, relative_action_origin=ORIGIN, **{**SMALL, **kw})


def _episodes(n=20, length=15, seed=0):
    """Each episode holds its origin at one position drawn over +-1 (far more than a step).

    Observation feature 0 is a phase min(t, 2); the action at step t is ``(1 + phase) * OFFSET``
    from the origin, so the offsets a window holds vary, and the next actions follow from the phase.
    """
    rng = np.random.default_rng(seed)
    phase = np.tile(np.minimum(np.arange(length), 2), n).astype(np.float32)
    obs = rng.uniform(-1, 1, (n * length, DO)).astype(np.float32)
    obs[:, 0] = phase
    obs[:, list(ORIGIN)] = np.repeat(rng.uniform(-1, 1, (n, DA)), length, axis=0)
    actions = obs[:, list(ORIGIN)] + (1 + phase[:, None]) * OFFSET
    return obs, actions, np.arange(1, n + 1) * length


def _trained(steps=300, **kw):
    obs, actions, ends = _episodes()
    p = _policy(**kw)
    p.fit_normalizers(obs, actions, ends)
    torch.manual_seed(0)  # the loss draws noise and timesteps from torch's global generator
    sampler = SequenceSampler(ends, np.arange(len(ends)), TO, H)
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        oi, ai = sampler.indices(rng.integers(0, len(sampler), 64))
        loss, _ = p.compute_loss({"obs": torch.as_tensor(obs[oi]), "action": torch.as_tensor(actions[ai])})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return p.eval()


def test_relative_batch_and_to_absolute_are_inverse():
    g = torch.Generator().manual_seed(0)
    obs, actions = torch.randn(5, TO, DO, generator=g), torch.randn(5, H, DA, generator=g)
    rel = relative_batch({"obs": obs, "action": actions}, ORIGIN)["action"]
    assert torch.allclose(rel, actions - obs[:, -1, list(ORIGIN)].unsqueeze(1))
    assert torch.allclose(to_absolute(rel, obs, ORIGIN), actions, atol=1e-6)
    # A dict observation takes the origin from its state key; an empty origin changes nothing.
    assert torch.allclose(to_absolute(rel, {"agent_pos": obs}, ORIGIN), actions, atol=1e-6)
    assert to_absolute(actions, obs, ()) is actions


def test_rebase_keeps_the_absolute_actions():
    g = torch.Generator().manual_seed(1)
    chunk = torch.randn(3, H, DA, generator=g)
    old, new = torch.randn(3, DA, generator=g), torch.randn(3, DA, generator=g)
    half, center = torch.tensor([0.5, 2.0]), torch.tensor([0.1, -0.3])
    before = chunk * half + center + old.unsqueeze(1)
    after = rebase(chunk, old, new, half) * half + center + new.unsqueeze(1)
    assert torch.allclose(before, after, atol=1e-5)


def test_chunk_offsets_are_the_sampler_windows_offsets():
    obs, actions, ends = _episodes(n=3, length=5)
    sampler = SequenceSampler(ends, np.arange(3), 1, H)
    oi, ai = sampler.indices(np.arange(len(sampler)))
    want = actions[ai] - obs[oi[:, -1]][:, None, list(ORIGIN)]  # [N, H, Da]
    got = chunk_offsets(obs, actions, ends, ORIGIN, H).reshape(H, -1, DA).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kw, message", [
    ({"relative_action_origin": (0,)}, r"relative_action_origin=\(0,\) is invalid; expected \(\) or 2"),
    ({"relative_action_origin": (0, 4)}, r"in \[0, 4\)"),
    ({"relative_action_origin": (0, -1)}, r"in \[0, 4\)"),
    ({"relative_action_origin": (0, 1), "relative_action_quantile": 0.5}, "expected 0 <= q < 0.5"),
])
def test_config_refuses_bad_origins_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as err:
        DiffusionConfig(obs_dim=DO, action_dim=DA, **kw)
    assert "\n" not in str(err.value)


def test_a_bare_index_is_an_origin_of_one():
    assert DiffusionConfig(obs_dim=DO, action_dim=1, relative_action_origin=2).relative_action_origin == (2,)


def test_fitting_needs_episode_ends_and_spans_the_offsets_not_the_positions():
    obs, actions, ends = _episodes()
    p = _policy()
    with pytest.raises(ValueError, match="expected episode_ends"):
        p.fit_normalizers(obs, actions)
    p.fit_normalizers(obs, actions, ends)
    # Offsets run from 1 to 3 times OFFSET; the positions span +-1.
    assert torch.allclose(p.action_normalizer.center, torch.as_tensor(2 * OFFSET), atol=1e-6)
    assert torch.allclose(p.action_normalizer.half_range, torch.as_tensor(np.abs(OFFSET)), atol=1e-6)
    # The quantile option fits the [q, 1 - q] range of the offsets.
    q = _policy(relative_action_quantile=0.1)
    noisy = actions + np.random.default_rng(0).uniform(-0.01, 0.01, actions.shape).astype(np.float32)
    q.fit_normalizers(obs, noisy, ends)
    full = _policy()
    full.fit_normalizers(obs, noisy, ends)
    assert (q.action_normalizer.half_range < full.action_normalizer.half_range).all()


def test_a_trained_policy_returns_absolute_actions_on_every_path(tmp_path):
    p = _trained()
    obs, actions, _ = _episodes(n=4, length=TO, seed=5)
    obs = torch.as_tensor(obs).view(-1, TO, DO)  # unseen positions, batched
    want = torch.as_tensor(actions).view(-1, TO, DA)[:, -1]
    chunk = p.predict_action_chunk(obs)
    phase = (obs[:, -1, :1, None] + torch.arange(TA).view(1, TA, 1)).clamp(max=2)  # [B, Ta, 1]
    assert chunk.shape == (4, TA, DA)
    assert (chunk - (obs[:, -1:, list(ORIGIN)] + (1 + phase) * torch.as_tensor(OFFSET))).abs().max() < TOL
    # One step at a time (the queue), with temporal ensembling, and after a save/load round trip.
    p.reset(seed=0)
    assert np.abs(p.select_action(obs[0, -1].numpy()) - want[0].numpy()).max() < TOL
    save_policy(p, tmp_path / "rel")
    loaded, _ = load_policy(tmp_path / "rel")
    assert loaded.config.relative_action_origin == ORIGIN
    assert torch.allclose(loaded.action_normalizer.center, p.action_normalizer.center)
    # Temporal ensembling averages absolute actions of chunks planned from where the origin was.
    loaded.config.temporal_ensemble = 0.5  # read at every step
    loaded.reset(seed=0)
    still = obs[2, -1].clone()
    still[0] = 2.0  # phase 2: every action of the chunk is 3 * OFFSET from the origin
    for _ in range(TA + 1):
        action = loaded.select_action(still.numpy())
        assert np.abs(action - (still[list(ORIGIN)].numpy() + 3 * OFFSET)).max() < TOL


@pytest.mark.parametrize("kw", [{"warm_start": 0.5}, {"warm_start": 0.75, "objective": "flow",
                                                         "sampler": "euler"}])
def test_warm_start_moves_the_last_tail_to_the_new_origin(kw):
    p = _trained(steps=1, **kw)
    seen = []
    method = "_integrate_flow" if kw.get("objective") == "flow" else "_denoise"
    inner = getattr(p, method)
    setattr(p, method, lambda x, cond, sampler, start=0, tail=None: seen.append(tail) or inner(
        x, cond, sampler, start, tail))
    g = torch.Generator().manual_seed(3)
    first, second = torch.rand(2, TO, DO, generator=g), torch.rand(2, TO, DO, generator=g)
    p.reset(seed=0)
    last = p.predict_normalized_chunk(p.prepare_obs(first))
    p.predict_normalized_chunk(p.prepare_obs(second))
    assert seen[0] is None
    old, new = first[:, -1, list(ORIGIN)], second[:, -1, list(ORIGIN)]
    want = rebase(warm_tail(last, TA), old, new, p.action_normalizer.half_range)
    assert torch.allclose(seen[1], want, atol=1e-5)
    # The absolute actions of the tail are those of the last chunk.
    n = p.action_normalizer
    assert torch.allclose(n.unnormalize(seen[1]) + new.unsqueeze(1),
                          n.unnormalize(warm_tail(last, TA)) + old.unsqueeze(1), atol=1e-5)


def test_tools_that_need_absolute_actions_refuse_in_one_line():
    p = _trained(steps=1)
    with pytest.raises(ValueError, match=r"set_constraints takes policies with absolute actions.*"
                                         r"relative_action_origin=\(1, 3\); expected \(\)"):
        p.set_constraints({"unused": True})


def test_warm_distillation_pairs_start_from_the_demos_offsets():
    from policies.diffusion.distill import warm_pairs
    from policies.diffusion.warm import demo_tail

    teacher = _trained(steps=1)
    obs, actions, ends = _episodes(n=2, length=H)
    sampler = SequenceSampler(ends, np.arange(2), TO, H)
    oi, ai = sampler.indices(np.arange(len(sampler)))
    o, a = torch.as_tensor(obs[oi]), torch.as_tensor(actions[ai])
    x_t, t, _ = warm_pairs(teacher, o, a, torch.zeros_like(a), warm_start=0.5)
    step = teacher._steps(SMALL["num_inference_steps"], "ddim")[2]
    offsets = teacher.action_normalizer.normalize(a - o[:, -1:, list(ORIGIN)])
    assert torch.allclose(x_t, demo_tail(offsets, TA) * step.sqrt_ab, atol=1e-5)

import numpy as np
import pytest
import torch

from policies import make_policy, save_policy
from policies.uncertainty import (
    SCORES,
    Calibration,
    Fallback,
    MonitoredPolicy,
    UncertaintyConfig,
    UncertaintyEstimator,
    load_estimator,
    save_estimator,
)


def _policy(name="diffusion", **kw):
    p = make_policy(name, obs_dim=3, action_dim=2, horizon=8, n_action_steps=4,
                    **({"hidden_dims": (32, 32)} | kw))
    p.eval()
    return p


def _estimator(policy, k=4):
    return UncertaintyEstimator(policy, UncertaintyConfig(num_samples=k, ensemble_size=3,
                                                          ensemble_hidden=(16,), rnd_hidden=(16,),
                                                          rnd_dim=8))


def test_scores_come_from_one_batched_policy_call():
    policy = _policy()
    est = _estimator(policy, k=4)
    calls = []
    original = policy.predict_normalized_chunk

    def counting(obs, **kw):
        calls.append(obs.shape[0])
        return original(obs, **kw)

    policy.predict_normalized_chunk = counting
    obs = torch.randn(5, 2, 3)
    before = obs.clone()
    actions, scores = est.predict(obs)
    assert calls == [20]  # B * K rows in one call, never K calls
    assert actions.shape == (5, 4, 2)
    assert set(scores) == set(SCORES) and all(v.shape == (5,) for v in scores.values())
    assert torch.equal(obs, before)
    assert float(scores["temporal"].abs().max()) == 0.0  # no previous chunk yet
    _, again = est.predict(obs)
    assert float(again["temporal"].min()) > 0.0
    assert all(torch.isfinite(v).all() for v in again.values())


def test_deterministic_policy_has_zero_dispersion():
    est = _estimator(_policy("mlp", hidden_dims=(16,)))
    _, scores = est.predict(torch.randn(2, 2, 3))
    assert float(scores["dispersion"].abs().max()) == 0.0


def test_heads_train_and_save_load_round_trip(tmp_path):
    policy = _policy()
    est = _estimator(policy)
    batch = {"obs": torch.randn(32, 2, 3), "action": torch.rand(32, 8, 2)}
    policy.fit_normalizers(batch["obs"].reshape(-1, 3).numpy(), batch["action"].reshape(-1, 2).numpy())
    loss, metrics = est.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["ensemble_mse"] > 0
    assert est.rnd.target[0].weight.grad is None  # the RND target stays frozen
    assert est.rnd.predictor[0].weight.grad is not None
    save_policy(policy, tmp_path)
    cal = Calibration(alpha=0.1, names=SCORES, thresholds=dict.fromkeys(SCORES, 1.0),
                      scales=dict.fromkeys(SCORES, 1.0), combined_threshold=1.0)
    save_estimator(est, tmp_path, cal)
    loaded, loaded_cal = load_estimator(tmp_path, policy)
    assert loaded_cal == cal
    obs = torch.randn(3, 2, 3)
    for e in (est, loaded):
        e.reset(seed=7)
        policy.reset(seed=7)
    a1, s1 = est.predict(obs)
    policy.reset(seed=7)
    a2, s2 = loaded.predict(obs)
    assert torch.equal(a1, a2) and all(torch.equal(s1[n], s2[n]) for n in SCORES)
    (tmp_path / "uncertainty.safetensors").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="sha256"):
        load_estimator(tmp_path, policy)


def test_monitored_policy_hands_over_and_logs():
    policy = _policy()
    est = _estimator(policy)
    # Thresholds so low that the first chunk raises the alarm.
    cal = Calibration(alpha=0.1, names=SCORES, thresholds=dict.fromkeys(SCORES, 0.0),
                      scales=dict.fromkeys(SCORES, 1.0), combined_threshold=-1.0)
    fallback_action = np.array([0.25, -0.5], dtype=np.float32)
    mon = MonitoredPolicy(est, cal, lambda obs: fallback_action)
    mon.reset(seed=0)
    actions = [mon.select_action(np.zeros(3, dtype=np.float32)) for _ in range(6)]
    assert all(np.array_equal(a, fallback_action) for a in actions)
    assert len(mon.handovers) == 1 and mon.handovers[0].step == 0
    assert set(mon.handovers[0].scores) == set(SCORES)
    # The log holds the threshold crossed, the fallback's first action and the steps it served.
    log = mon.handovers[0]
    assert log.threshold == -1.0 and log.combined > log.threshold
    assert log.first_action == [0.25, -0.5] and log.fallback_steps == 6
    assert isinstance(lambda obs: fallback_action, Fallback)  # any obs -> action callable fits the seam
    assert mon.episode_trace().shape == (2, len(SCORES))  # chunks at steps 0 and 4
    # Disabled: the alarm is recorded but the policy keeps control; default fallback is a stop.
    bare = MonitoredPolicy(est, cal, enabled=False)
    bare.reset(seed=0)
    a = bare.select_action(np.zeros(3, dtype=np.float32))
    assert bare.alarm_steps == {0: 0} and not bare.handovers
    assert not np.array_equal(a, fallback_action)
    stop = MonitoredPolicy(est, cal)
    stop.reset(seed=0)
    assert np.array_equal(stop.select_action(np.zeros((2, 3), dtype=np.float32)), np.zeros((2, 2)))


def test_monitored_policy_rejects_temporal_ensembling():
    est = _estimator(_policy(temporal_ensemble=0.1))
    with pytest.raises(ValueError, match="temporal_ensemble=0.1"):
        MonitoredPolicy(est)


def _relative_policy():
    """A relative-action policy (offsets from obs features 0, 1) with fitted normalizers."""
    policy = _policy(relative_action_origin=(0, 1))
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (40, 3)).astype(np.float32)
    actions = (obs[:, :2] + rng.uniform(-0.1, 0.1, (40, 2))).astype(np.float32)
    policy.fit_normalizers(obs, actions, np.array([20, 40]))
    return policy


def test_relative_action_policy_gets_absolute_actions_and_a_rebased_temporal_score():
    policy = _relative_policy()
    est = _estimator(policy, k=3)
    obs = torch.tensor([[[0.2, -0.3, 0.0], [0.5, 0.1, 0.0]]])  # origin (0.5, 0.1)
    est.reset(seed=0)
    policy.reset(seed=0)
    actions, _ = est.predict(obs)
    policy.reset(seed=0)
    chunk = policy.predict_action_chunk(obs)
    assert actions.shape == (1, 4, 2) and float((chunk - torch.tensor([0.5, 0.1])).abs().max()) < 0.5
    # The executed sample is the policy's own chunk for the same noise: absolute, like the policy's.
    torch.testing.assert_close(actions, policy.absolute_actions(
        policy.action_normalizer.unnormalize(est._previous[:, :4]), obs))

    # A plan that continues exactly in absolute terms while the robot moved scores 0: the previous
    # chunk is re-expressed from the new origin before the comparison.
    est.reset()
    path = torch.linspace(0, 0.7, 12)[:, None] * torch.tensor([1.0, -0.5]) + torch.tensor([0.1, 0.2])
    scores = []
    for start, origin in ((0, torch.tensor([0.1, 0.2])), (2, torch.tensor([0.3, 0.05]))):
        raw_obs = torch.cat([origin, torch.zeros(1)]).expand(1, 2, 3)
        obs_n = policy.obs_normalizer.normalize(raw_obs)
        offsets = policy.action_normalizer.normalize(path[start:start + 8] - origin)
        scores.append(est.score_normalized(obs_n, offsets.expand(1, 3, 8, 2), shift=2)["temporal"])
    assert float(scores[1].abs().max()) < 1e-10
    # Without the rebase the same chunks would differ by the origin's move.
    moved = policy.action_normalizer.normalize(path[2:10] - torch.tensor([0.1, 0.2])) - offsets
    assert float(moved.abs().min()) > 0.05

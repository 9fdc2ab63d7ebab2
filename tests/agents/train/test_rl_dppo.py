import numpy as np
import pytest
import torch

from agents.train.dppo import DppoConfig, build_dppo, train_dppo
from agents.train.dppo_policy import ChainToChunk, DppoPPO, DppoRolloutBuffer
from agents.train.sb3_common import ChunkedEnvFactory
from agents.train.sb3_safe import load_sb3
from policies import load_policy, make_policy, save_policy


def _model(tiny_base, tmp_path, **kw):
    cfg = DppoConfig(base=str(tiny_base), out=str(tmp_path / "run"), n_envs=2, n_steps=8, batch_size=8,
                     n_epochs=2, eval_episodes=2, actor_warmup_updates=0, **kw)
    return build_dppo(cfg)


def _params(model):
    return torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])


def test_one_ppo_update_on_a_fixed_batch_is_deterministic_under_a_seed(tiny_base, tmp_path):
    model, venv, _, _ = _model(tiny_base, tmp_path)
    from stable_baselines3.common.utils import set_random_seed

    _, callback = model._setup_learn(16, None)
    callback.init_callback(model)
    model.collect_rollouts(venv, callback, model.rollout_buffer, n_rollout_steps=8)
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    optim = model.policy.optimizer.state_dict()
    before = _params(model)
    results = []
    for _ in range(2):
        model.policy.load_state_dict(start)
        model.policy.optimizer.load_state_dict(optim)
        set_random_seed(123)
        model.train()
        results.append(_params(model))
    assert not torch.equal(results[0], before)  # the update moved the weights
    assert torch.equal(results[0], results[1])


def test_ppo_ratio_is_per_denoising_step_with_the_decision_advantage_shared(tiny_base, tmp_path):
    model, venv, _, _ = _model(tiny_base, tmp_path, clip_range=0.05, target_kl=None)
    model.n_epochs, model.batch_size = 1, 16  # one minibatch: the whole buffer of 2 envs x 8 decisions
    model.lr_schedule = lambda _: 0.0  # weights stay put, so train() measures the perturbed policy
    _, callback = model._setup_learn(16, None)
    callback.init_callback(model)
    model.collect_rollouts(venv, callback, model.rollout_buffer, n_rollout_steps=8)
    batch = next(model.rollout_buffer.get(None))
    assert batch.old_log_prob.shape == (16, 4) and batch.advantages.shape == (16, 1)  # k = K = 4
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions)
        assert torch.allclose(log_prob, batch.old_log_prob.double(), atol=1e-5)  # first ratio is 1
        torch.manual_seed(0)
        for p in model.policy.diffusion.denoiser.parameters():
            p.add_(0.02 * torch.randn_like(p))
        _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions)
    # The PPO objective by hand: one ratio per (decision, step), the decision's normalized advantage
    # for all its steps, the clipped surrogate averaged over all 16 x 4 of them.
    ratio = torch.exp(log_prob - batch.old_log_prob)
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    expected_loss = -torch.min(adv * ratio, adv * ratio.clamp(0.95, 1.05)).mean().item()
    expected_clip = (torch.abs(ratio - 1) > 0.05).double().mean().item()
    assert 0.0 < expected_clip < 1.0  # some steps clipped, others not: the clip acts per step
    model.train()
    logged = model.logger.name_to_value
    # abs: the loss is a mean of terms of size ~1 that nearly cancel (float32 buffer values).
    assert logged["train/policy_gradient_loss"] == pytest.approx(expected_loss, abs=1e-6)
    assert logged["train/clip_fraction"] == pytest.approx(expected_clip, abs=1e-9)


def test_sb3_save_load_round_trip_gives_identical_actions(tiny_base, tmp_path):
    model, venv, _, _ = _model(tiny_base, tmp_path)
    model.learn(16)
    model.save(tmp_path / "dppo.zip")
    # kinodiff's loader (nothing unpickled) rebuilds the policy and the per-step rollout buffer.
    loaded = load_sb3(DppoPPO, tmp_path / "dppo.zip")
    assert loaded.rollout_buffer_class is DppoRolloutBuffer
    obs = venv.reset()
    for deterministic in (True, False):
        torch.manual_seed(7)
        a, _ = model.predict(obs, deterministic=deterministic)
        torch.manual_seed(7)
        b, _ = loaded.predict(obs, deterministic=deterministic)
        assert a.shape == (2, 5, 8, 2)  # [n_envs, k+1, H, Da] with k = K = 4
        np.testing.assert_array_equal(a, b)


def test_evaluate_actions_reproduces_the_rollout_log_prob(tiny_base, tmp_path):
    model, venv, _, _ = _model(tiny_base, tmp_path)
    obs = torch.as_tensor(venv.reset())
    with torch.no_grad():
        chain, _, log_prob = model.policy(obs)
        _, again, entropy = model.policy.evaluate_actions(obs, chain.flatten(1))
    assert torch.allclose(log_prob, again, atol=1e-5)
    assert torch.all(entropy == entropy[0])  # fixed std: a constant entropy


def test_chain_decodes_to_the_first_ta_unnormalized_actions():
    env = ChunkedEnvFactory("kinodiff/PointObstacle-v0", 2, 3)()
    wrapped = ChainToChunk(env, k=1, horizon=4, center=np.array([0.5, 0.0]), half_range=np.array([0.5, 1.0]))
    chain = np.zeros((2, 4, 2), np.float32)
    chain[-1] = [[2.0, -0.5], [0.0, 0.5], [-1.0, 1.0], [9.0, 9.0]]
    # clip to [-1, 1], then x * half + center: (2 -> 1) -> 1.0; -0.5 -> -0.5; 0 -> 0.5; ...
    expected = np.array([[1.0, -0.5], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(wrapped.action(chain), expected)
    assert wrapped.action_space.shape == (2, 4, 2)


def test_train_dppo_writes_a_run_and_an_exported_policy(tiny_base, tmp_path):
    out = train_dppo(DppoConfig(base=str(tiny_base), out=str(tmp_path / "run"), env_steps=256, n_envs=2,
                                n_steps=8, batch_size=8, n_epochs=1, eval_every=128, eval_episodes=2,
                                checkpoint_every=10_000), progress=False)
    rows = (out / "logs" / "curve.jsonl").read_text().splitlines()
    assert len(rows) >= 2 and (out / "model.zip").is_file()
    policy, meta = load_policy(out / "policy")
    assert meta["trainer"] == "dppo" and meta["env_id"] == "kinodiff/PointObstacle-v0"
    model = DppoPPO.load(out / "model.zip", device="cpu")
    obs = torch.randn(3, 2, 4)
    x = torch.randn(3, 8, 2)
    with torch.no_grad():
        # The exported policy's DDIM sampler is the fine-tuned deterministic chain.
        c = model.policy.diffusion.config
        from policies.diffusion.dppo import sample_chain
        cond = model.policy._cond(obs)
        chain, _ = sample_chain(model.policy.base_denoiser, model.policy.diffusion.denoiser,
                                model.policy.steps, 4, x, cond, 0.1, c.prediction_type, True,
                                deterministic=True)
        ddim = policy.predict_normalized_chunk(policy.obs_normalizer.normalize(obs), noise=x)
    assert torch.allclose(chain[:, -1], ddim, atol=1e-6)


def test_non_diffusion_base_is_refused(tmp_path):
    mlp = make_policy("mlp", obs_dim=4, action_dim=2)
    save_policy(mlp, tmp_path / "mlp", metadata={"env_id": "kinodiff/PointObstacle-v0"})
    with pytest.raises(ValueError, match="expected diffusion"):
        build_dppo(DppoConfig(base=str(tmp_path / "mlp"), out=str(tmp_path / "run")))


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="noise_std"):
        DppoConfig(base="x", noise_std=0.0)
    with pytest.raises(ValueError, match="ft_steps"):
        DppoConfig(base="x", ft_steps=-1)


def test_actor_and_critic_see_the_policys_own_encoding(tmp_path):
    """A base with angle features: the actor's deterministic chain ends at the base policy's DDIM
    sample from the same noise, and the critic takes the encoded width (obs 4 + 1 angle, x 2 steps)."""
    torch.manual_seed(0)
    policy = make_policy("diffusion", obs_dim=4, action_dim=2, horizon=8, n_action_steps=4,
                         hidden_dims=(32, 32), num_inference_steps=4, angle_features=(2,))
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.uniform(-1, 1, (100, 4)), rng.uniform(-1, 1, (100, 2)))
    base = save_policy(policy, tmp_path / "base", metadata={"env_id": "kinodiff/PointObstacle-v0"})
    model, venv, _, _ = _model(base, tmp_path)
    obs = torch.as_tensor(venv.reset())
    with torch.no_grad():
        torch.manual_seed(5)
        chain = model.policy._sample(model.policy._cond(obs), deterministic=True)
        torch.manual_seed(5)
        noise = torch.randn(obs.shape[0], 8, 2)
        loaded, _ = load_policy(base)
        expected = loaded.predict_normalized_chunk(loaded.obs_normalizer.normalize(obs.float()),
                                                   noise=noise, sampler="ddim")
        _, value, _ = model.policy(obs)
    assert torch.allclose(chain[:, -1], expected, atol=1e-5)
    assert model.policy.value_net[0].in_features == (4 + 1) * 2 and value.shape == (2, 1)

import numpy as np
import pytest
import torch

from agents.rollout.env_factory import EnvFactory
from agents.train.residual import (
    ResidualConfig,
    build_residual,
    load_residual,
    residual_venv,
    train_residual,
)
from agents.train.residual_env import ResidualVecEnv
from agents.train.sb3_common import make_vec_env
from policies import load_policy

ENV = "kinodiff/PointObstacle-v0"


def test_zero_residual_replays_the_base_policy(tiny_base):
    venv = residual_venv(ENV, str(tiny_base), n_envs=1, seed=3, scale=0.2)
    obs = venv.reset()
    policy, _ = load_policy(tiny_base)
    policy.reset(seed=3)
    env = EnvFactory(ENV)()
    ref_obs, _ = env.reset(seed=3)
    for _ in range(20):  # crosses two chunks of Ta = 4 and a refill
        np.testing.assert_allclose(obs[0, :4], ref_obs, atol=1e-6)
        expected = policy.select_action(ref_obs)
        np.testing.assert_allclose(venv.combined_action(np.zeros((1, 2))), expected[None], atol=1e-6)
        obs, *_ = venv.step(np.zeros((1, 2), np.float32))
        ref_obs, *_ = env.step(expected)


def test_residual_is_bounded_and_base_runs_once_per_step_for_all_envs(tiny_base):
    venv = residual_venv(ENV, str(tiny_base), n_envs=3, seed=0, scale=0.1)
    calls = []
    chunks = venv._chunks
    venv._chunks = lambda history: calls.append(len(history)) or chunks(history)
    venv.reset()
    for _ in range(9):
        big = np.full((3, 2), 50.0, np.float32)
        executed = venv.combined_action(big)
        # 50 clipped to 1, times scale 0.1 and half range 1: exactly 0.1 above the base, the whole
        # bound (a tanh on top would stop at 0.1 * tanh(1) = 0.076), then the env's [-1, 1].
        np.testing.assert_allclose(executed, np.clip(venv.base_action + 0.1, -1, 1), atol=1e-6)
        venv.step(big)
    # Ta = 4: refills at reset and after steps 4 and 8, each one batched call over the 3 envs.
    assert calls == [3, 3, 3]


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_training_starts_exactly_at_the_base_policy(tiny_base, tmp_path, algo):
    model, venv, _, _ = build_residual(ResidualConfig(base=str(tiny_base), out=str(tmp_path / "run"),
                                                      algo=algo, n_envs=2, eval_episodes=2))
    venv.reset()
    obs = np.random.default_rng(0).normal(0.0, 5.0, (2, 6)).astype(np.float32)  # any observation
    action, _ = model.predict(obs, deterministic=True)
    # The action-mean layer starts at zero: residual 0, so the executed action is the base's.
    assert np.all(action == 0.0)
    np.testing.assert_array_equal(venv.combined_action(action), np.clip(venv.base_action, -1, 1))


def test_space_mismatch_is_named(tiny_base):
    policy, _ = load_policy(tiny_base)
    venv = make_vec_env(EnvFactory("kinodiff/TinyReach-v0"), 1, 0)
    with pytest.raises(ValueError, match="obs_dim=4"):
        ResidualVecEnv(venv, policy)


@pytest.mark.parametrize("algo", ["ppo", pytest.param("sac", marks=pytest.mark.slow)])
def test_sb3_save_load_round_trip_gives_identical_actions(tiny_base, tmp_path, algo):
    extra = {"n_steps": 32, "batch_size": 32, "n_epochs": 1} if algo == "ppo" else {
        "learning_starts": 16, "batch_size": 16}
    out = train_residual(ResidualConfig(base=str(tiny_base), out=str(tmp_path / "run"), algo=algo,
                                        env_steps=128, n_envs=2, eval_every=64, eval_episodes=2,
                                        algo_kwargs=extra), progress=False)
    assert (out / "model.zip").is_file() and (out / "logs" / "curve.jsonl").is_file()
    actions = []
    for _ in range(2):
        model, venv = load_residual(out, n_envs=2, seed=5)
        obs = venv.reset()
        torch.manual_seed(0)
        a, _ = model.predict(obs, deterministic=True)
        actions.append((obs, a, venv.combined_action(a)))  # VecNormalize forwards to the wrapper
    for x, y in zip(actions[0], actions[1], strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="algo='dqn'"):
        ResidualConfig(base="x", algo="dqn")
    with pytest.raises(ValueError, match="scale=0"):
        ResidualConfig(base="x", scale=0.0)


@pytest.mark.slow
def test_train_qcritic_fits_and_guides(tiny_base, tmp_path):
    from agents.train.qcritic import QCriticConfig, train_qcritic
    from policies.critic import QGuidedPolicy, load_critic

    out = train_qcritic(QCriticConfig(base=str(tiny_base), out=str(tmp_path / "q"), env_steps=900,
                                      n_envs=4, steps=20), progress=False)
    critic = load_critic(out / "critic")
    policy, _ = load_policy(tiny_base)
    guided = QGuidedPolicy(policy, critic, num_samples=4)
    assert guided.predict_action_chunk(torch.zeros(3, 2, 4)).shape == (3, 4, 2)

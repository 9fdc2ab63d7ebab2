"""The env contract, run over every registered task."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import ENV_SPECS, make_env

ENV_IDS = sorted(ENV_SPECS)


def _flat(obs):
    """A Box observation, or a Dict observation's entries in key order, as one float vector."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k], np.float64).ravel() for k in sorted(obs)])
    return np.asarray(obs, np.float64).ravel()


def _rollout(env, seed, n=30):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [_flat(obs)]
    for _ in range(n):
        obs, reward, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        out.append(_flat(obs))
        if term or trunc:
            break
    return np.array(out)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_checker_with_render(env_id):
    env = gym.make(env_id, render_mode="rgb_array").unwrapped
    check_env(env)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.std() > 0
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_checker(env_id):
    sb3_check_env(make_env(env_id).unwrapped, warn=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_reset_is_bitwise_reproducible(env_id):
    a, b = _rollout(make_env(env_id), 7), _rollout(make_env(env_id), 7)
    assert np.array_equal(a, b)
    c = _rollout(make_env(env_id), 8)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_pickles_and_continues_identically(env_id):
    env = make_env(env_id)
    env.reset(seed=3)
    clone = pickle.loads(pickle.dumps(env))
    assert np.array_equal(_rollout(env, 5), _rollout(clone, 5))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_in_space_reward_is_sum_of_terms_success_reported(env_id):
    env = make_env(env_id)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "is_success" in info
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs, reward, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        assert env.observation_space.contains(obs) and np.isfinite(_flat(obs)).all()
        terms = [v for k, v in info.items() if k.startswith("reward_")]
        assert terms and reward == sum(terms)
        assert isinstance(info["is_success"], bool)
        if term or trunc:
            obs, info = env.reset()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_divergence_ends_episode_with_flag(env_id):
    env = make_env(env_id)
    env.reset(seed=0)
    env.unwrapped.data.qvel[:] = np.nan  # MuJoCo would silently reset this state
    obs, reward, term, trunc, info = env.step(env.action_space.sample())
    assert term and info["diverged"] and not info["is_success"]
    assert np.isfinite(_flat(obs)).all() and reward == 0.0


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("bad", ["shape", "nan", "inf"])
def test_bad_actions_are_rejected_before_mujoco(env_id, bad):
    env = make_env(env_id)
    env.reset(seed=0)
    qpos = env.unwrapped.data.qpos.copy()
    action = np.zeros(env.action_space.shape)
    if bad == "shape":
        action = np.zeros(action.size + 1)
    else:
        action[0] = np.nan if bad == "nan" else np.inf
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert np.array_equal(env.unwrapped.data.qpos, qpos)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_out_of_range_actions_are_clipped_and_counted(env_id):
    env = make_env(env_id)
    env.reset(seed=0)
    high = env.action_space.high
    *_, info = env.step(np.zeros(env.action_space.shape))
    assert info["action_clipped"] == 0
    over = high + 10.0
    over[0] = 0.0
    *_, info = env.step(over)
    assert info["action_clipped"] == over.size - 1
    assert np.allclose(env.unwrapped.data.ctrl[1:], high[1:])


# Sampling-MPC experts take seconds per episode: one seeded episode each keeps the suite fast
# (their success rates over 100 seeds are in benchmarks/results/experts.json).
EXPERT_EPISODES = {"kinodiff/PushT-v0": 1, "kinodiff/PushTImage-v0": 1}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_expert_solves_its_task(env_id):
    env = make_env(env_id)
    for name in ENV_SPECS[env_id].experts:
        expert = envs.make_expert(env_id, name, env)
        for i in range(EXPERT_EPISODES.get(env_id, 4)):
            obs, _ = env.reset(seed=i)
            expert.reset(i, np.random.default_rng(i))
            done = False
            while not done:
                obs, _, term, trunc, info = env.step(expert.act(obs))
                done = term or trunc
            assert info["is_success"], (name, i)


def test_unknown_env_id_lists_valid_ids():
    with pytest.raises(ValueError, match="kinodiff/PointObstacle-v0"):
        make_env("kinodiff/Nope-v0")

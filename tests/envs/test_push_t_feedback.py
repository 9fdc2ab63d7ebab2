import copy

import numpy as np
import pytest

import envs
from envs.experts.push_t_feedback import PushTFeedbackConfig, PushTFeedbackExpert


def _run(env, expert, seed, steps=300):
    obs, info = env.reset(seed=seed)
    expert.reset(seed, np.random.default_rng(seed))
    observations, actions = [], []
    for _ in range(steps):
        action = expert.act(obs)
        assert env.action_space.contains(action)
        observations.append(obs)
        actions.append(action)
        obs, _, term, trunc, info = env.step(action)
        if term or trunc:
            break
    return info, np.array(observations), np.array(actions)


def test_feedback_expert_is_registered_beside_the_default():
    assert list(envs.ENV_SPECS["kinodiff/PushT-v0"].experts)[0] == "mpc"  # the default stays first
    env = envs.make_env("kinodiff/PushT-v0")
    assert isinstance(envs.make_expert("kinodiff/PushT-v0", "feedback", env), PushTFeedbackExpert)


@pytest.mark.parametrize("seed", [1, 7, 12])
def test_feedback_expert_succeeds(seed):
    env = envs.make_env("kinodiff/PushT-v0")
    info, _, actions = _run(env, envs.make_expert("kinodiff/PushT-v0", "feedback", env), seed)
    # Over seeds 0-199 it succeeds every time, in 87 steps on average.
    assert info["is_success"] and len(actions) < 300


def test_feedback_expert_is_deterministic_and_ignores_the_rng():
    env = envs.make_env("kinodiff/PushT-v0")
    expert = PushTFeedbackExpert(env.unwrapped)
    _, obs_a, act_a = _run(env, expert, 3, steps=60)
    _, obs_b, act_b = _run(env, expert, 3, steps=60)  # reset clears the contact it held
    assert np.array_equal(obs_a, obs_b) and np.array_equal(act_a, act_b)


def test_feedback_action_is_continuous_under_small_jitter():
    env = envs.make_env("kinodiff/PushT-v0")
    expert = PushTFeedbackExpert(env.unwrapped)
    _, observations, _ = _run(env, expert, 5)
    rng = np.random.default_rng(0)
    expert.reset(5, rng)
    gaps = []
    for obs in observations:
        base = copy.deepcopy(expert).act(obs)
        jitter = np.r_[rng.uniform(-1e-3, 1e-3, 4), rng.uniform(-0.01, 0.01)].astype(np.float32)
        gaps.append(np.linalg.norm(copy.deepcopy(expert).act(obs + jitter) - base))
        expert.act(obs)  # advance the contact memory along the recorded episode
    gaps = np.array(gaps)
    # 1 mm / 0.01 rad of jitter moves the action by about as much on almost every step; the rare
    # big jumps are ties between two contacts or between transit and push.
    assert np.median(gaps) < 0.002 and np.mean(gaps < 0.003) > 0.9


def test_feedback_action_is_nearly_a_function_of_the_observation():
    env = envs.make_env("kinodiff/PushT-v0")
    expert = PushTFeedbackExpert(env.unwrapped)
    _, observations, actions = _run(env, expert, 4)
    fresh = PushTFeedbackExpert(env.unwrapped)
    same = []
    for obs, action in zip(observations, actions, strict=True):
        fresh.reset(0, None)  # no memory of the contact: read off where the pusher touches
        same.append(np.allclose(fresh.act(obs), action, atol=5e-4))
    # Only the first steps of a transit after a switch depend on the remembered contact.
    assert np.mean(same) > 0.8


def test_contacts_keep_the_pusher_clear_of_the_other_arm():
    env = envs.make_env("kinodiff/PushT-v0")
    expert = PushTFeedbackExpert(env.unwrapped)
    r, n = expert._cand_r, expert._cand_n
    touch = r + n * env.unwrapped.layout.pusher_radius
    clear = expert._clear_local(touch)
    assert np.all(clear > env.unwrapped.layout.pusher_radius - 1e-9)
    assert len(r) > 50 and set(expert._cand_face) == set(range(len(expert._faces[0])))


def test_invalid_config_is_named():
    with pytest.raises(ValueError, match="max_lead 0.001"):
        PushTFeedbackConfig(max_lead=0.001)
    with pytest.raises(ValueError, match="directions 0"):
        PushTFeedbackConfig(directions=0)

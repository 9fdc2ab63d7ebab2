"""Every registered task's documented outcome for bad inputs (issue 11, part 3).

The outcomes are stated in :class:`envs.mujoco_task.MujocoTaskEnv`'s docstring: malformed actions
raise ``ValueError``, out-of-range actions are clipped and counted, stepping outside an episode
raises ``RuntimeError``, and a diverging simulation ends the episode with a flag and the MuJoCo
warnings it raised, never an automatic reset.
"""

import re

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs
from envs import ENV_SPECS, make_env
from envs.multi_robot_arena_pz import MultiRobotArenaParallelEnv

ENV_IDS = sorted(ENV_SPECS)


def _started(env_id):
    """An unwrapped env with an episode running (no Gymnasium wrapper to catch anything first)."""
    env = make_env(env_id).unwrapped
    env.reset(seed=0)
    return env


def _zero(env):
    return np.zeros(env.action_space.shape, dtype=np.float32)


def _finite(obs):
    parts = obs.values() if isinstance(obs, dict) else [obs]
    return all(np.isfinite(np.asarray(p, dtype=np.float64)).all() for p in parts)


# -- actions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_action_raises_and_the_episode_goes_on(env_id, value):
    env = _started(env_id)
    qpos, time = env.data.qpos.copy(), env.data.time
    action = _zero(env)
    action[-1] = value
    with pytest.raises(ValueError, match=r"^action \[.*\] has non-finite values; expected finite numbers$"):
        env.step(action)
    # Rejected before MuJoCo: no physics ran, and the episode is still usable.
    assert env.data.time == time and np.array_equal(env.data.qpos, qpos)
    *_, info = env.step(_zero(env))
    assert env.data.time > time and info["diverged"] is False


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("shape", ["extra", "missing", "scalar", "batched", "empty"])
def test_wrong_shape_action_raises_naming_both_shapes(env_id, shape):
    env = _started(env_id)
    (n,) = env.action_space.shape
    action = {"extra": np.zeros(n + 1), "missing": np.zeros(n - 1), "scalar": np.float32(0.0),
              "batched": np.zeros((1, n)), "empty": np.zeros(0)}[shape]
    time = env.data.time
    expected = f"action has shape {np.asarray(action).shape}; expected {(n,)}"
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        env.step(action)
    assert env.data.time == time


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_out_of_range_action_is_clipped_to_the_space_and_counted(env_id):
    env = _started(env_id)
    low, high = env.action_space.low, env.action_space.high
    action = np.where(np.arange(low.size) % 2 == 0, 1e30, -1e30)
    *_, info = env.step(action)
    # Clipped, not rejected: MuJoCo got the bounds, and every entry was counted.
    assert np.array_equal(env.data.ctrl, np.where(action > 0, high, low).astype(np.float64))
    assert info["action_clipped"] == low.size and info["diverged"] is False
    *_, info = env.step(_zero(env))
    assert info["action_clipped"] == 0


# -- episode order -------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_raises(env_id):
    env = make_env(env_id)
    with pytest.raises(gym.error.ResetNeeded):  # gymnasium.make's order check comes first
        env.step(_zero(env))
    with pytest.raises(RuntimeError, match=r"^step\(\) called before reset\(\); call reset\(\) to start"):
        env.unwrapped.step(_zero(env))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_after_termination_raises_until_reset(env_id):
    env = make_env(env_id)
    env.reset(seed=0)
    env.unwrapped.data.qvel[:] = 1e12
    *_, term, _, _ = env.step(_zero(env))
    assert term
    with pytest.raises(RuntimeError, match=r"step\(\) called after the episode terminated \(the simulation "
                       r"diverged\); call reset\(\)"):
        env.step(_zero(env))
    env.reset(seed=1)
    *_, term, _, info = env.step(_zero(env))
    assert not term and info["diverged"] is False


def test_step_after_success_raises_until_reset():
    env = make_env("kinodiff/TinyReach-v0")
    expert = envs.make_expert("kinodiff/TinyReach-v0", "scripted", env)
    obs, _ = env.reset(seed=0)
    expert.reset(0, np.random.default_rng(0))
    term = trunc = False
    while not (term or trunc):
        obs, _, term, trunc, info = env.step(expert.act(obs))
    assert term and info["is_success"]
    with pytest.raises(RuntimeError, match=r"after the episode terminated \(success\)"):
        env.step(expert.act(obs))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_after_truncation_keeps_reporting_truncated(env_id):
    env = gym.make(env_id, max_episode_steps=2)
    env.reset(seed=0)
    truncated = [env.step(_zero(env))[3] for _ in range(3)]
    # Gymnasium's TimeLimit owns truncation: it reports it again on every later step.
    assert truncated == [False, True, True]
    env.reset(seed=0)
    assert env.step(_zero(env))[3] is False


# -- divergence ----------------------------------------------------------------------------------
def _inject_velocity(env):
    env.data.qvel[:] = 1e12  # above MuJoCo's 1e10 limit: BADQVEL


def _inject_force(env):
    env.data.qfrc_applied[:] = 1e30  # the acceleration blows past the limit: BADQACC


def _inject_nan_position(env):
    env.data.qpos[:] = np.nan  # BADQPOS


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("inject, warning", [(_inject_velocity, "BADQVEL"),
                                             (_inject_force, "BADQACC"),
                                             (_inject_nan_position, "BADQPOS")])
def test_divergence_ends_the_episode_with_the_warning_counted(env_id, inject, warning):
    env = _started(env_id)
    inject(env)
    obs, reward, term, trunc, info = env.step(_zero(env))
    assert term and not trunc and info["diverged"] is True and info["is_success"] is False
    # MuJoCo counted the warning, and the step names it with the count raised during the step.
    assert env.data.warning[int(getattr(mujoco.mjtWarning, "mjWARN_" + warning))].number >= 1
    assert info["divergence_warnings"].get(warning, 0) >= 1
    assert set(info["divergence_warnings"]) <= {"BADQPOS", "BADQVEL", "BADQACC", "BADCTRL"}
    assert reward == 0.0 and all(v == 0.0 for k, v in info.items() if k.startswith("reward_"))
    assert _finite(obs) and env.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_healthy_steps_report_no_divergence(env_id):
    env = _started(env_id)
    for _ in range(3):
        *_, info = env.step(env.action_space.sample())
        assert info["diverged"] is False and "divergence_warnings" not in info


# -- PettingZoo arena ----------------------------------------------------------------------------
@pytest.fixture
def arena():
    env = MultiRobotArenaParallelEnv(n_robots=3)
    env.reset(seed=0)
    return env


def _actions(env, **override):
    acts = {a: np.zeros(2, dtype=np.float32) for a in env.agents}
    acts.update(override)
    return acts


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_arena_non_finite_action_for_one_agent_names_it(arena, value):
    time = arena.env.data.time
    with pytest.raises(ValueError, match=r"^action of agent 'robot_1' \[.*\] has non-finite values"):
        arena.step(_actions(arena, robot_1=np.array([0.0, value])))
    assert arena.env.data.time == time and arena.agents == ["robot_0", "robot_1", "robot_2"]


def test_arena_wrong_shape_for_one_agent_names_it_even_when_the_total_fits(arena):
    # 3 + 1 values add up to two agents' 2 + 2: the stacked action alone would look right.
    bad = _actions(arena, robot_0=np.zeros(3), robot_1=np.zeros(1))
    with pytest.raises(ValueError, match=r"^action of agent 'robot_0' has shape \(3,\); expected \(2,\)$"):
        arena.step(bad)


def test_arena_out_of_range_action_for_one_agent_is_clipped(arena):
    _, _, _, _, infos = arena.step(_actions(arena, robot_2=np.array([5.0, -5.0])))
    assert np.array_equal(arena.env.data.ctrl[4:6], [1.0, -1.0])
    assert np.array_equal(arena.env.data.ctrl[:4], np.zeros(4))
    assert not infos["robot_2"]["diverged"]


def test_arena_unknown_and_missing_agents_are_named(arena):
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['robot_9'\]"):
        arena.step(_actions(arena, robot_9=np.zeros(2)))
    acts = _actions(arena)
    del acts["robot_0"]
    with pytest.raises(ValueError, match=r"missing \['robot_0'\], unknown \[\]"):
        arena.step(acts)


def test_arena_step_before_reset_and_after_the_end_raises():
    env = MultiRobotArenaParallelEnv(n_robots=2, max_cycles=1)
    with pytest.raises(RuntimeError, match=r"no live agents; call reset\(\) first"):
        env.step({})
    env.reset(seed=0)
    *_, truncations, _ = env.step(_actions(env))
    assert all(truncations.values()) and env.agents == []
    with pytest.raises(RuntimeError, match=r"no live agents; call reset\(\) first"):
        env.step({"robot_0": np.zeros(2), "robot_1": np.zeros(2)})


def test_arena_divergence_ends_every_agent_with_a_flag_and_zero_rewards(arena):
    arena.env.data.qvel[:] = 1e12
    observations, rewards, terminations, truncations, infos = arena.step(_actions(arena))
    assert all(terminations.values()) and not any(truncations.values())
    assert all(info["diverged"] and not info["is_success"] for info in infos.values())
    assert rewards == dict.fromkeys(["robot_0", "robot_1", "robot_2"], 0.0)
    assert all(np.isfinite(o).all() for o in observations.values()) and np.isfinite(arena.state()).all()
    assert arena.agents == []

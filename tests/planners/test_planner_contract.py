"""Contract suite over every registered planner, plus the per-task presets on every task."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401 - registers kinodiff/*
from envs import ENV_SPECS
from planners.base import env_state
from planners.costs import COST_PRESETS, cost_preset
from planners.registry import PLANNERS, make_planner

# Small budgets: the contract is about shapes and behaviour, not plan quality.
SMALL = {"samples": 8, "horizon": 6, "knots": 3, "nthread": 1}
SAMPLING = ["predictive_sampling", "mppi", "cem"]
# Small settings per planner; a newly registered planner is tested with its defaults.
SMALL_SETTINGS = {"predictive_sampling": SMALL, "mppi": SMALL, "cem": {**SMALL, "elites": 2},
                  "hierarchical": {"low_level_settings": SMALL}}
ALL = sorted(PLANNERS)


def _untrained_trajectory_model() -> str:
    # The trajectory-diffusion planner needs a model folder; an untrained tiny one shows the contract.
    import tempfile

    import torch

    from planners.trajectory_diffusion import TrajectoryModel, TrajectoryModelConfig

    torch.manual_seed(0)
    cfg = TrajectoryModelConfig(horizon=8, stride=2, hidden_dims=(32, 32), diffusion_steps=20)
    return str(TrajectoryModel(cfg, -torch.ones(6), torch.ones(6)).save(tempfile.mkdtemp()))


SMALL_SETTINGS["trajectory_diffusion"] = {"checkpoint": _untrained_trajectory_model(),
                                          "inference_steps": 4}


def _small(name):
    return dict(SMALL_SETTINGS.get(name, {}))


@pytest.fixture(scope="module")
def maze():
    env = gym.make("kinodiff/Maze-v0", layout="u")
    obs, _ = env.reset(seed=3)
    return env, obs


@pytest.mark.parametrize("name", ALL)
def test_plan_shapes_bounds_and_finite_cost(name, maze):
    env, obs = maze
    planner = make_planner(name, env, **_small(name))
    plan = planner.plan(env_state(env), obs[4:6])
    m = env.unwrapped.model
    assert plan.actions.ndim == 2 and plan.actions.shape[1] == m.nu and len(plan.actions) >= 1
    assert plan.states is None or plan.states.shape == (len(plan.actions), m.nq)
    assert np.isfinite(plan.cost)
    assert np.all(plan.actions >= planner.ctrl_low) and np.all(plan.actions <= planner.ctrl_high)


@pytest.mark.parametrize("name", ALL)
def test_plan_does_not_touch_its_inputs_or_the_env(name, maze):
    env, obs = maze
    planner = make_planner(name, env, **_small(name))
    state = env_state(env)
    state_before, goal = state.copy(), obs[4:6].copy()
    data = env.unwrapped.data
    qpos, qvel, time = data.qpos.copy(), data.qvel.copy(), data.time
    planner.plan(state, goal)
    assert np.array_equal(state, state_before)
    assert np.array_equal(goal, obs[4:6])
    assert np.array_equal(data.qpos, qpos) and np.array_equal(data.qvel, qvel) and data.time == time


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_plan(name, maze):
    env, obs = maze
    # The light-effort preset: with a heavy control weight, the zero nominal may win for any seed.
    planner = make_planner(name, env, cost="fast", **_small(name))
    state = env_state(env)
    planner.reset(seed=11)
    a = planner.plan(state, obs[4:6]).actions
    planner.reset(seed=11)
    b = planner.plan(state, obs[4:6]).actions
    planner.reset(seed=12)
    c = planner.plan(state, obs[4:6]).actions
    assert np.array_equal(a, b)
    if name in SAMPLING:
        assert not np.array_equal(a, c)  # the seed drives the sampling


@pytest.mark.parametrize("name", SAMPLING)
def test_predicted_states_are_what_the_env_does(name, maze):
    # The default planning model is the task's own (exact): executing the plan reproduces it.
    env, _ = maze
    env.reset(seed=5)
    planner = make_planner(name, env, **_small(name))
    plan = planner.plan(env_state(env), np.zeros(2))
    for a in plan.actions:
        env.step(a.astype(np.float32))
    assert np.allclose(env.unwrapped.data.qpos, plan.states[-1], atol=1e-6)


def test_bad_inputs_raise_clear_errors(maze):
    env, _ = maze
    with pytest.raises(ValueError, match="unknown planner 'nope'.*mppi"):
        make_planner("nope", env)
    with pytest.raises(ValueError, match="unknown settings"):
        make_planner("mppi", env, horizon_s=3)
    with pytest.raises(ValueError, match="knots 9 must be <= horizon 4"):
        make_planner("mppi", env, horizon=4, knots=9)
    planner = make_planner("predictive_sampling", env, **SMALL)
    with pytest.raises(ValueError, match="state has shape"):
        planner.plan(np.zeros(3))
    bad = env_state(env)
    bad[1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        planner.plan(bad)
    with pytest.raises(ValueError, match="no cost preset for 'Ant-v5'"):
        cost_preset("Ant-v5")


def test_the_registry_holds_the_builtin_planners():
    assert set(SAMPLING) | {"hierarchical"} <= set(PLANNERS)


@pytest.mark.parametrize("env_id", sorted(ENV_SPECS))
def test_every_kinodiff_task_has_a_preset_and_plans(env_id):
    assert env_id in COST_PRESETS
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    preset = cost_preset(env_id)
    planner = make_planner("predictive_sampling", env, **SMALL)
    plan = planner.plan(env_state(env), preset.goal(env.unwrapped, obs))
    assert plan.actions.shape == (6, env.action_space.shape[0])
    assert np.isfinite(plan.cost)
    env.close()


def test_gymnasium_task_without_kinodiff_code_path():
    # InvertedPendulum-v5 is Gymnasium's own env: the planner sees only env.unwrapped.model/data.
    env = gym.make("InvertedPendulum-v5")
    env.reset(seed=0)
    planner = make_planner("predictive_sampling", env, samples=32)
    upright = 0
    for _ in range(80):
        action = planner.plan(env_state(env)).actions[0].astype(np.float32)
        _, _, terminated, _, _ = env.step(action)
        if terminated:
            break
        upright += 1
    # The pole falls past 0.2 rad (termination) within ~20 steps under zero force from this start.
    assert upright == 80

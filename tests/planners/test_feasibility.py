"""Feasibility of chunks with MuJoCo in the loop: detection of each violation, and repair."""

import numpy as np
import pytest

import envs
from envs.physics_rollout import physics_state
from planners.feasibility import FeasibilityChecker, FeasibilityConfig


@pytest.fixture
def arm():
    env = envs.make_env("kinodiff/ArmReach-v0")
    env.reset(seed=0)
    return env.unwrapped


def test_a_resting_chunk_is_feasible_and_the_env_is_untouched(arm):
    checker = FeasibilityChecker(arm.model, arm.constraint_spec, arm.frame_skip)
    qpos = arm.data.qpos.copy()
    state = physics_state(arm.model, arm.data)
    report = checker.check(state, np.zeros((8, 3)))[0]
    assert report.feasible and report.first_violation is None and report.penetration == 0.0
    np.testing.assert_array_equal(arm.data.qpos, qpos)


def test_inverse_dynamics_recovers_the_applied_torques(arm):
    checker = FeasibilityChecker(arm.model, arm.constraint_spec, arm.frame_skip)
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 3))
    state = physics_state(arm.model, arm.data)
    states = np.concatenate([state[None], checker.rollout.run(state, actions[None])[0]])
    force = checker.inverse_forces(checker.rollout.qpos(states), checker.rollout.qvel(states))
    # applied torque = gear (8, 5, 2) * ctrl; mid-step inverse dynamics is within 5% of each limit
    np.testing.assert_allclose(force, actions * [8.0, 5.0, 2.0], atol=0.05 * 8.0)
    assert np.all(np.abs(force - actions * [8, 5, 2]) <= 0.05 * np.array([8, 5, 2]))


def test_speed_torque_and_penetration_violations_are_found(arm):
    spec = arm.constraint_spec.replace(joint_velocity_limit=[0.5, 0.5, 0.5])
    checker = FeasibilityChecker(arm.model, spec, arm.frame_skip)
    state = physics_state(arm.model, arm.data)
    report = checker.check(state, np.ones((8, 3)))[0]
    assert report.velocity_violations > 0 and not report.feasible
    # States that need twice the torque: rolled out by a model whose gears are doubled.
    strong = FeasibilityChecker(arm.model, spec, arm.frame_skip)
    strong.rollout.model.actuator_gear[:, 0] *= 2
    states = np.concatenate([state[None], strong.rollout.run(state, np.ones((1, 6, 3)))[0]])
    report = checker.check_states(checker.rollout.qpos(states), checker.rollout.qvel(states))
    assert report.torque_violations > 0 and report.first_violation == 0
    # A planned pose with link 1 through the sphere at (0.5, 0.5): direction 45 degrees.
    qpos = np.array([[0.0, 0.0, 0.0], [np.pi / 4, 0.0, 0.0]])
    report = checker.check_states(qpos, np.zeros((2, 3)))
    assert report.penetration > 0.05 and report.first_violation == 0


def test_repair_scales_a_chunk_into_the_limits_or_resamples(arm):
    spec = arm.constraint_spec.replace(joint_velocity_limit=[0.5, 0.5, 0.5])
    checker = FeasibilityChecker(arm.model, spec, arm.frame_skip)
    state = physics_state(arm.model, arm.data)
    chunk = np.full((8, 3), 2.0)  # beyond ctrlrange too: repair clips it first
    fixed, report, info = checker.repair(state, chunk)
    assert report.feasible and info["candidate"].startswith("scale=")
    scale = float(info["candidate"].split("=")[1])
    np.testing.assert_allclose(fixed, np.full((8, 3), scale))
    np.testing.assert_array_equal(chunk, 2.0)  # input not mutated
    only_full = FeasibilityChecker(arm.model, spec, arm.frame_skip, FeasibilityConfig(scales=(1.0,)))
    fixed, report, info = only_full.repair(state, chunk, resample=lambda: np.zeros((8, 3)))
    assert report.feasible and info["candidate"] == "resample=0" and np.all(fixed == 0)
    # nothing feasible and no resampler: the candidate that stays feasible longest
    _, report, info = only_full.repair(state, chunk)
    assert not report.feasible and info["rolled_out"] == 1


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="scales"):
        FeasibilityConfig(scales=(1.5,))
    with pytest.raises(ValueError, match="time_budget_s"):
        FeasibilityConfig(time_budget_s=-1.0)


def test_the_checker_works_on_a_point_mass_task_too():
    env = envs.make_env("kinodiff/PointObstacle-v0")
    env.reset(seed=0)
    u = env.unwrapped
    checker = FeasibilityChecker(u.model, u.constraint_spec, u.frame_skip)
    state = physics_state(u.model, u.data)
    assert checker.check(state, np.zeros((5, 2)))[0].feasible
    # driving straight up for 2 s hits the box: the rollout penetrates it at some step
    report = checker.check(state, np.tile([0.0, 1.0], (40, 1)))[0]
    assert report.first_violation is not None and report.penetration > 0

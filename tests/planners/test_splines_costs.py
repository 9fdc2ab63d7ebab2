"""Spline bases, warm-start shifts, costs and the shared physics rollout, against hand computations."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401 - registers kinodiff/*
from envs.physics_rollout import PhysicsRollout, physics_state
from planners.costs import reach_cost
from planners.splines import INTERPOLATIONS, basis, interpolate, knot_times, shift_knots


@pytest.mark.parametrize("kind", INTERPOLATIONS)
def test_basis_rows_sum_to_one_and_hit_the_knots(kind):
    w = basis(np.arange(10), 4, 10, kind)
    assert np.allclose(w.sum(axis=1), 1.0)
    # Knots sit at t = 0, 3, 6, 9: every interpolation passes through them.
    assert np.allclose(w[[0, 3, 6, 9]], np.eye(4))


def test_linear_and_zero_order_by_hand():
    knots = np.array([[[0.0], [3.0], [6.0]]])  # (K=1, P=3, Da=1) at t = 0, 2, 4
    lin = interpolate(knots, basis(np.arange(5), 3, 5, "linear"))[0, :, 0]
    assert np.allclose(lin, [0, 1.5, 3, 4.5, 6])  # halfway between knots: the mean
    zero = interpolate(knots, basis(np.arange(5), 3, 5, "zero"))[0, :, 0]
    assert np.allclose(zero, [0, 0, 3, 3, 6])  # each knot held until the next


def test_cubic_reproduces_a_straight_line():
    # Catmull-Rom is exact on linear data away from the clamped ends: 2t at t = 3..6 of knots 0..9.
    knots = (2.0 * knot_times(4, 10))[None, :, None]
    cub = interpolate(knots, basis(np.arange(10), 4, 10, "cubic"))[0, :, 0]
    assert np.allclose(cub[3:7], 2.0 * np.arange(3, 7))


def test_shift_knots_moves_the_sequence_forward():
    knots = np.array([[0.0], [2.0], [4.0]])  # linear over t = 0..4, slope 1 per step
    shifted = shift_knots(knots, 1.0, 5, "linear")
    assert np.allclose(shifted[:, 0], [1.0, 3.0, 4.0])  # t = 1, 3, 5 -> 1, 3, held at 4
    assert np.allclose(shift_knots(knots, 0.0, 5, "linear"), knots)


def test_reach_cost_by_hand():
    pos = np.array([[[3.0, 4.0], [0.0, 0.0]]])  # distances 5 then 0
    ctrl = np.array([[[1.0, 1.0], [0.0, 0.0]]])  # |u|^2 = 2 then 0
    # mean distance 2.5 + terminal 2 * 0 + control 0.5 * mean(2, 0) = 3.0
    assert np.allclose(reach_cost(pos, np.zeros(2), ctrl, terminal=2.0, control=0.5), [3.0])


def test_physics_rollout_is_the_env_bit_for_bit_and_leaves_it_alone():
    env = gym.make("kinodiff/Maze-v0", layout="u")
    env.reset(seed=2)
    u = env.unwrapped
    roll = PhysicsRollout(u.model, u.frame_skip, nthread=2)
    state = physics_state(u.model, u.data)
    before = u.data.qpos.copy()
    controls = np.random.default_rng(0).uniform(-1, 1, (3, 7, 2)).astype(np.float32).astype(np.float64)
    states = roll.run(state, controls, u.data.qacc_warmstart)
    assert np.array_equal(u.data.qpos, before)
    assert u.model.opt.timestep == 0.01  # the rollout's copy, not the env's model, is changed below
    for a in controls[1]:
        env.step(a.astype(np.float32))
    assert np.array_equal(roll.qpos(states[1, -1]), u.data.qpos)
    coarse = PhysicsRollout(u.model, u.frame_skip, substeps=1)
    assert coarse.model.opt.timestep == pytest.approx(0.05) and u.model.opt.timestep == 0.01
    with pytest.raises(ValueError, match="controls have shape"):
        roll.run(state, np.zeros((2, 3)))

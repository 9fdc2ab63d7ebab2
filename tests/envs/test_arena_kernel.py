"""The compiled arena observation equals its numpy definition bit for bit."""

import numpy as np
import pytest

from envs.arena_kernel import arena_step_terms


def numpy_observation(qpos, qvel, goals, k):
    """The definition in whole-array numpy: float32 features, stable argsort of float32 distances."""
    n = len(goals)
    state = np.concatenate([qpos.reshape(n, 2), qvel.reshape(n, 2)], axis=1).astype(np.float32)
    to_goal = goals - qpos.reshape(n, 2)
    dist = np.hypot(to_goal[:, 0], to_goal[:, 1])
    d = state[None, :, :2] - state[:, None, :2]
    d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]
    np.fill_diagonal(d2, np.inf)
    visible = min(k, n - 1)
    near = np.argsort(d2, axis=1, kind="stable")[:, :visible]
    rows = np.zeros((n, 6 + 4 * k), dtype=np.float32)
    rows[:, :4] = state
    rows[:, 4:6] = to_goal.astype(np.float32)
    rows[:, 6:6 + 4 * visible] = (state[near] - state[:, None]).reshape(n, -1)
    return rows.reshape(-1), dist


@pytest.mark.parametrize(("n", "k"), [(2, 4), (3, 1), (5, 4), (8, 4), (64, 4), (64, 63), (17, 16)])
def test_kernel_equals_the_numpy_definition(n, k):
    rng = np.random.default_rng(n * 100 + k)
    for trial in range(20):
        qpos = rng.uniform(-1.4, 1.4, 2 * n)
        if trial % 4 == 0:  # exact ties: robots on a coarse grid are often equally far apart
            qpos = np.round(qpos * 4) / 4
        qvel = rng.normal(size=2 * n)
        goals = rng.uniform(-1.4, 1.4, (n, 2))
        dist = np.empty(n)
        radius = 0.5
        ctrl = rng.uniform(-1, 1, 2 * n)
        is_robot = np.r_[False, np.ones(n, bool), False]  # floor, robots, a wall
        contacts = rng.integers(0, n + 2, (trial, 2)).astype(np.int32)
        obs = np.full(n * (6 + 4 * k), np.nan, np.float32)  # every element must be written
        positions, at_goal = np.full((n, 2), np.nan), np.zeros(n, bool)
        total, n_at_goal, ctrl_sq, slots = arena_step_terms(
            qpos, qvel, ctrl, goals, contacts, is_robot, k, radius, dist, obs, positions, at_goal,
            np.full((5, n), np.nan, np.float32), np.zeros(n, np.int64))
        want_obs, want_dist = numpy_observation(qpos, qvel, goals, k)
        assert obs.dtype == np.float32 and obs.shape == want_obs.shape
        np.testing.assert_array_equal(obs, want_obs)
        np.testing.assert_array_equal(dist, want_dist)
        np.testing.assert_array_equal(at_goal, want_dist <= radius)
        assert n_at_goal == np.count_nonzero(want_dist <= radius)
        assert total == pytest.approx(want_dist.sum(), rel=1e-14)
        np.testing.assert_array_equal(positions, qpos.reshape(n, 2))
        assert ctrl_sq == pytest.approx(np.sum(ctrl**2), rel=1e-14)
        assert slots == np.count_nonzero(is_robot[contacts])

"""The compiled arena observation equals its numpy definition bit for bit."""

import numpy as np
import pytest

from envs.arena_kernel import arena_observation


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
        obs, at_goal, total, n_at_goal = arena_observation(qpos, qvel, goals, k, radius, dist)
        want_obs, want_dist = numpy_observation(qpos, qvel, goals, k)
        assert obs.dtype == np.float32 and obs.shape == want_obs.shape
        np.testing.assert_array_equal(obs, want_obs)
        np.testing.assert_array_equal(dist, want_dist)
        np.testing.assert_array_equal(at_goal, want_dist <= radius)
        assert n_at_goal == np.count_nonzero(want_dist <= radius)
        assert total == pytest.approx(want_dist.sum(), rel=1e-14)


def test_each_call_returns_a_new_array():
    qpos, qvel, goals = np.zeros(4), np.zeros(4), np.ones((2, 2))
    first, at_first, *_ = arena_observation(qpos, qvel, goals, 4, 0.1, np.empty(2))
    second, at_second, *_ = arena_observation(qpos + 1.0, qvel, goals, 4, 0.1, np.empty(2))
    assert first is not second and first[0] == 0.0 and second[0] == 1.0
    assert at_first is not at_second and not at_first.any() and at_second.all()

"""The step fast path (a float array of the right shape inside the bounds, checked without a
conversion) must behave exactly as the general path (any array-like: converted, clipped, counted)."""

import numpy as np
import pytest

from envs import make_env

CASES = [
    ("kinodiff/TinyReach-v0", {}),
    ("kinodiff/ArmReach-v0", {}),  # short actions: range-checked on Python floats
    ("kinodiff/PushT-v0", {}),
    ("kinodiff/MultiRobotArena-v0", {"n_robots": 64}),  # long actions: fmax/fmin byte compare
]


def _same(a, b):
    return type(a) is type(b) and (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b)


@pytest.mark.parametrize(("env_id", "kwargs"), CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_equals_the_general_path(env_id, kwargs, dtype):
    fast, general = make_env(env_id, **kwargs), make_env(env_id, **kwargs)
    fast.reset(seed=7)
    general.reset(seed=7)
    low, high = fast.action_space.low, fast.action_space.high
    rng = np.random.default_rng(0)
    for t in range(30):
        # Mostly in range; every third step some entries out of range (clipped and counted).
        action = rng.uniform(low * (1.5 if t % 3 == 0 else 1.0), high * (1.5 if t % 3 == 0 else 1.0))
        action = action.astype(dtype)
        a = fast.step(action)
        b = general.step(action.tolist())  # a list always takes the general path
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4]
        assert a[4].keys() == b[4].keys()
        assert all(_same(a[4][k], b[4][k]) for k in a[4]), env_id
        assert a[4]["action_clipped"] == int(np.count_nonzero((action < low) | (action > high)))
        if a[2] or a[3]:
            break


@pytest.mark.parametrize(("env_id", "kwargs"), CASES)
def test_fast_path_rejects_non_finite_values_anywhere(env_id, kwargs):
    env = make_env(env_id, **kwargs).unwrapped
    env.reset(seed=0)
    n = env.action_space.shape[0]
    for i in (0, n - 1):
        action = np.zeros(n, dtype=np.float32)
        action[i] = np.nan
        ctrl = env.data.ctrl.copy()
        with pytest.raises(ValueError, match="non-finite"):
            env.step(action)
        assert np.array_equal(env.data.ctrl, ctrl)  # nothing reached MuJoCo's controls

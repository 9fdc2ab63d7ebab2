import numpy as np
import pytest

import envs
from envs.wrappers import ActionNoise

ENV = "kinodiff/PointObstacle-v0"


def _positions(env, seed: int, steps: int = 15) -> np.ndarray:
    env.reset(seed=seed)
    out = []
    for _ in range(steps):
        obs, *_ = env.step(np.array([0.5, -0.3], dtype=np.float32))
        out.append(obs[:2].copy())
    return np.array(out)


def test_noise_moves_the_executed_action_and_replays_from_the_seed():
    clean = _positions(envs.make_env(ENV), seed=3)
    noisy = ActionNoise(envs.make_env(ENV), std=0.2)
    first, again = _positions(noisy, seed=3), _positions(noisy, seed=3)
    assert np.array_equal(first, again)  # same episode seed, same noise
    assert not np.allclose(first, clean, atol=1e-4)  # the executed actions were perturbed
    assert not np.allclose(_positions(noisy, seed=4), first, atol=1e-4)


def test_zero_noise_executes_the_action_as_given_and_noise_stays_in_bounds():
    assert np.array_equal(_positions(ActionNoise(envs.make_env(ENV), std=0.0), seed=3),
                          _positions(envs.make_env(ENV), seed=3))
    wrapper = ActionNoise(envs.make_env(ENV), std=10.0)
    wrapper.reset(seed=0)
    executed = np.array([wrapper.action(np.zeros(2, np.float32)) for _ in range(200)])
    low, high = wrapper.action_space.low, wrapper.action_space.high
    assert (executed >= low).all() and (executed <= high).all()
    assert (executed == low).any() and (executed == high).any()  # clipped, not rescaled


@pytest.mark.parametrize("std", [-0.1, float("nan"), float("inf")])
def test_bad_noise_is_refused_in_one_line(std):
    with pytest.raises(ValueError, match=r"action noise std=.*expected a finite standard deviation"):
        ActionNoise(envs.make_env(ENV), std=std)

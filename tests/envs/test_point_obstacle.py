import numpy as np
import pytest

import envs


def _run_expert(seed, index, **kw):
    env = envs.make_env("kinodiff/PointObstacle-v0", **kw)
    expert = envs.make_expert("kinodiff/PointObstacle-v0", "scripted", env)
    obs, _ = env.reset(seed=seed)
    expert.reset(index, np.random.default_rng(seed))
    xs, done = [obs], False
    while not done:
        obs, _, term, trunc, info = env.step(expert.act(obs))
        xs.append(obs)
        done = term or trunc
    return expert.mode, info, np.array(xs)


def test_expert_alternates_sides_and_the_env_sees_the_same_side():
    modes = []
    for i in range(6):
        chosen, info, _ = _run_expert(seed=i, index=i)
        assert info["is_success"] and info["mode"] == chosen
        modes.append(chosen)
    assert modes.count("left") == modes.count("right") == 3


def test_both_sides_share_their_early_states():
    # Same seed, different sides: identical until shortly before the box (the branch point).
    _, _, left = _run_expert(seed=0, index=0)
    _, _, right = _run_expert(seed=0, index=1)
    first_diff = int(np.argmax(np.any(left != right, axis=1)))
    assert first_diff >= 10
    assert left[first_diff, 1] > -0.45  # the branch starts shortly before the box face (y=-0.15)
    assert left[40, 0] < -0.1 and right[40, 0] > 0.1


def test_start_is_centred_with_x_spread_only():
    env = envs.make_env("kinodiff/PointObstacle-v0", start_spread=0.05)
    starts = np.array([env.reset(seed=s)[0] for s in range(20)])
    assert np.all(np.abs(starts[:, 0]) <= 0.05) and np.ptp(starts[:, 0]) > 0
    assert np.all(starts[:, 1] == starts[0, 1]) and np.all(starts[:, 2:] == 0)


def test_invalid_task_arguments_are_named():
    with pytest.raises(ValueError, match="start_spread"):
        envs.make_env("kinodiff/PointObstacle-v0", start_spread=-1.0)

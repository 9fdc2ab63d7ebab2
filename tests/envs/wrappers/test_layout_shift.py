import math

import numpy as np
import pytest

from envs import make_env
from envs.arm_kinematics import arm_clearance
from envs.wrappers import DomainRandomization

POINT, ARM = "kinodiff/PointObstacle-v0", "kinodiff/ArmReach-v0"


def _layouts(env_id, preset, seeds):
    env = DomainRandomization(make_env(env_id), preset)
    out = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        out.append((obs, info["layout"]))
    return env, out


def test_point_obstacle_box_and_goal_leave_the_training_support():
    nominal = make_env(POINT).unwrapped.layout
    env, runs = _layouts(POINT, "obstacle_shift", range(12))
    sides = set()
    for _, lay in runs:
        dx, dy = np.subtract(lay["obstacle_center"], nominal.obstacle_center)
        # The training data has the box at its MJCF position only: every draw moves it 0.2-0.4 m
        # sideways (so it blocks one lane) and at most 0.1 m along y.
        assert 0.2 <= abs(dx) <= 0.4 and abs(dy) <= 0.1
        sides.add(np.sign(dx))
    assert sides == {-1.0, 1.0}
    model = env.unwrapped.model
    assert np.allclose(model.geom_pos[model.geom("obstacle").id, :2], runs[-1][1]["obstacle_center"])
    assert np.allclose(env.unwrapped.constraint_spec.obstacle_distance(
        np.array([*runs[-1][1]["obstacle_center"], 0.05])), -0.05)  # inside the moved box
    env, runs = _layouts(POINT, "goal_shift", range(12))
    for _, lay in runs:
        # >= 0.4 m from the nominal goal: far outside its 0.1 m success radius.
        assert math.dist(lay["goal"], nominal.goal) >= 0.4
    assert np.allclose(env.unwrapped.layout.goal, runs[-1][1]["goal"])


def test_arm_reach_obstacles_and_targets_leave_the_training_support():
    base = make_env(ARM).unwrapped
    nominal = [base.model.geom_pos[g, :2].copy() for g in base._obstacle_geoms]
    env, runs = _layouts(ARM, "obstacle_shift", range(6))
    u = env.unwrapped
    for _, lay in runs:
        # Turned 0.4-1.2 rad about the base: every obstacle moves >= 0.24 m off its pose.
        assert all(math.dist(a, b) >= 0.24 for a, b in zip(lay["obstacles"], nominal, strict=True))
    # The start pose is clear of the moved obstacles, and the target avoids them (spec rebuilt).
    assert arm_clearance(u.data.qpos.copy(), u.layout, u.constraint_spec) >= 0.1
    target = runs[-1][0][11:13]
    assert u.constraint_spec.obstacle_distance(np.array([*target, u.layout.height])) >= 0.08
    _, runs = _layouts(ARM, "goal_shift", range(6))
    for obs, lay in runs:
        r = math.dist(lay["target"], u.layout.base)
        # Nominal targets lie 0.3-0.92 m from the base; shifted ones inside 0.25 or beyond 0.94.
        assert r <= 0.25 or r >= 0.94
        assert np.allclose(obs[11:13], lay["target"])


@pytest.mark.parametrize("env_id", [POINT, ARM])
@pytest.mark.parametrize("preset", ["obstacle_shift", "goal_shift"])
def test_layout_shift_is_seeded_and_restorable(env_id, preset):
    _, first = _layouts(env_id, preset, [3, 4])
    _, again = _layouts(env_id, preset, [3, 4])
    assert first[0][1] == again[0][1] and np.array_equal(first[0][0], again[0][0])
    assert first[0][1] != first[1][1]  # a new layout per episode
    env = make_env(env_id).unwrapped
    pos = env.model.geom_pos.copy()
    env.shift_layout(np.random.default_rng(0), preset.split("_")[0])
    env.shift_layout(np.random.default_rng(0), "none")
    assert np.array_equal(env.model.geom_pos, pos)


def test_layout_shift_errors_name_the_task_and_the_preset():
    with pytest.raises(ValueError, match=r"'obstacle_shift'.*kinodiff/TinyReach-v0 cannot"):
        DomainRandomization(make_env("kinodiff/TinyReach-v0"), "obstacle_shift")
    with pytest.raises(ValueError, match=r"PointObstacle-v0 cannot shift its layout by kind 'walls'"):
        make_env(POINT).unwrapped.shift_layout(np.random.default_rng(0), "walls")

import mujoco
import numpy as np
import pytest

import envs
from envs.arm_kinematics import (
    arm_clearance,
    feasible_configurations,
    forward_kinematics,
    inverse_kinematics,
)

ENV_ID = "kinodiff/ArmReach-v0"


@pytest.fixture(scope="module")
def env():
    return envs.make_env(ENV_ID)


def test_layout_and_kinematics_agree_with_mujoco(env):
    u = env.unwrapped
    # link bodies at 0.4 and 0.35, end-effector site at 0.25 along each link
    np.testing.assert_allclose(u.layout.link_lengths, [0.4, 0.35, 0.25])
    np.testing.assert_allclose(u.layout.link_radius, [0.025, 0.025, 0.025])
    # stretched along +x the end effector is at the full reach, (1.0, 0)
    np.testing.assert_allclose(forward_kinematics(np.zeros(3), u.layout)[3], [1.0, 0.0], atol=1e-12)
    env.reset(seed=0)
    for q in np.random.default_rng(0).uniform(-2.4, 2.4, size=(5, 3)):
        u.data.qpos[:] = q
        mujoco.mj_kinematics(u.model, u.data)
        np.testing.assert_allclose(forward_kinematics(q, u.layout)[3],
                                   u.data.site_xpos[u.model.site("end_effector").id, :2], atol=1e-12)
    target = np.array([0.3, 0.6])
    qs = inverse_kinematics(target, u.layout, np.linspace(-np.pi, np.pi, 12, endpoint=False))
    assert len(qs) > 0
    np.testing.assert_allclose(forward_kinematics(qs, u.layout)[:, 3], np.tile(target, (len(qs), 1)),
                               atol=1e-9)


def test_observation_layout_and_info(env):
    obs, info = env.reset(seed=1)
    assert obs.shape == (13,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:3] ** 2 + obs[3:6] ** 2, 1.0, atol=1e-6)  # cos^2 + sin^2
    np.testing.assert_allclose(obs[9:11], info["position"], atol=1e-6)
    np.testing.assert_allclose(obs[11:13], info["target"], atol=1e-6)
    assert info["collision"] is False
    assert info["joint_limit_violation"] == 0 and info["velocity_limit_violation"] == 0
    obs, _, _, _, info = env.step(np.zeros(3))
    assert {"position", "target", "collision", "joint_limit_violation",
            "velocity_limit_violation"} <= set(info)


def test_targets_are_reachable_and_never_inside_or_near_obstacles(env):
    u = env.unwrapped
    lay, spec = u.layout, u.constraint_spec
    for seed in range(40):
        _, info = env.reset(seed=seed)
        x, y = info["target"]
        assert spec.obstacle_distance(np.array([x, y, 0.0])) >= lay.target_clearance
        assert lay.target_min_radius <= np.hypot(x, y) <= lay.target_max_radius
        assert np.linalg.norm(info["target"] - info["position"]) >= lay.min_start_distance
        assert len(feasible_configurations(info["target"], lay, spec, lay.config_clearance)) > 0
        assert arm_clearance(u.data.qpos, lay, spec) > 0.25  # the start pose is well clear too


def test_contact_with_an_obstacle_is_flagged_and_penalised(env):
    u = env.unwrapped
    env.reset(seed=0)
    # q1 = 45 deg with a straight arm puts link 2 through the sphere centred at (0.5, 0.5)
    u.data.qpos[:] = (np.pi / 4, 0.0, 0.0)
    _, _, _, _, info = env.step(np.zeros(3))
    assert info["collision"] is True and info["reward_collision"] == -1.0


def test_limit_violations_are_counted(env):
    u = env.unwrapped
    env.reset(seed=0)
    # joint 1 past its 2.9 rad limit and moving at 3 rad/s (limit 2.5): one of each, at least
    u.data.qpos[:] = (3.0, 0.6, 0.6)
    u.data.qvel[:] = (3.0, 0.0, 0.0)
    _, _, _, _, info = env.step(np.zeros(3))
    assert info["joint_limit_violation"] >= 1 and info["velocity_limit_violation"] >= 1


def test_fixed_target_option_and_bad_arguments():
    env = envs.make_env(ENV_ID)
    _, info = env.reset(seed=0, options={"target": (0.6, -0.1)})
    np.testing.assert_allclose(info["target"], [0.6, -0.1])
    with pytest.raises(ValueError, match="target"):
        env.reset(seed=0, options={"target": (0.6, np.nan)})
    with pytest.raises(ValueError, match="goal_radius"):
        envs.make_env(ENV_ID, goal_radius=-1.0)
    with pytest.raises(ValueError, match="start_noise"):
        envs.make_env(ENV_ID, start_noise=2.0)


def test_expert_plans_clear_paths_and_solves_seeds_without_collisions(env):
    expert = envs.make_expert(ENV_ID, "ik", env)
    u = env.unwrapped
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        expert.reset(seed, np.random.default_rng(seed))
        steps, collisions, violations, done = 0, 0, 0, False
        while not done:
            obs, _, term, trunc, info = env.step(expert.act(obs))
            steps += 1
            collisions += info["collision"]
            violations += info["joint_limit_violation"] + info["velocity_limit_violation"]
            done = term or trunc
        assert info["is_success"] and not trunc, seed
        assert collisions == 0 and violations == 0, seed
        assert expert.mode in ("elbow_up", "elbow_down")
        # every waypoint and the straight moves between them keep clear of the obstacles
        path = expert._path
        u_ = np.linspace(0, 1, 50)[:, None]
        dense = np.concatenate([a + u_ * (b - a) for a, b in zip(path[:-1], path[1:], strict=True)])
        assert np.all(arm_clearance(dense, u.layout, u.constraint_spec) > 0.0)

"""The torch twin of the robots against MuJoCo's own kinematics and dynamics."""

import mujoco
import numpy as np
import pytest
import torch

import envs
from policies.constraints import TorchRobot


@pytest.fixture(scope="module")
def arm():
    env = envs.make_env("kinodiff/ArmReach-v0")
    return env.unwrapped, TorchRobot(env.unwrapped.constraint_spec.to_dict()["robot"])


def _states(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-2.4, 2.4, (n, 3)), rng.uniform(-2.0, 2.0, (n, 3)), rng.uniform(-1, 1, (n, 3))


def test_arm_kinematics_equal_mujoco_to_1e6(arm):
    u, robot = arm
    m, d = u.model, u.data
    ee = m.site("end_effector").id
    bodies = [m.body(f"link{i}").id for i in (1, 2, 3)]
    for q, _, _ in zip(*_states(20), strict=True):
        d.qpos[:] = q
        mujoco.mj_kinematics(m, d)
        joints = robot.joint_positions(torch.tensor(q)).numpy()
        np.testing.assert_allclose(joints[:3], d.xpos[bodies, :2], atol=1e-6)
        np.testing.assert_allclose(joints[3], d.site_xpos[ee, :2], atol=1e-6)
        # the collision points lie on the link capsules' axes: each at distance 0 from the segment
        pts = robot.collision_points(torch.tensor(q)).numpy()
        np.testing.assert_allclose(pts[0], [*d.xpos[bodies[0], :2], 0.0], atol=1e-6)
        np.testing.assert_allclose(pts[-1, :2], d.site_xpos[ee, :2], atol=1e-6)


def test_arm_mass_matrix_bias_and_step_equal_mujoco(arm):
    u, robot = arm
    m, d = u.model, u.data
    for q, v, a in zip(*_states(10, seed=1), strict=True):
        d.qpos[:], d.qvel[:], d.ctrl[:] = q * 0.3, v, a  # small angles: far from the joint limits
        mujoco.mj_forward(m, d)
        full = np.zeros((3, 3))
        mujoco.mj_fullM(m, d, full)
        qt, vt = torch.tensor(q * 0.3), torch.tensor(v)
        np.testing.assert_allclose(robot.mass_matrix(qt).numpy(), full, atol=1e-10)
        np.testing.assert_allclose(robot.bias(qt, vt).numpy(), d.qfrc_bias, atol=1e-10)
        q1, v1 = robot.step(qt, vt, torch.tensor(a))
        mujoco.mj_step(m, d, nstep=u.frame_skip)
        if d.ncon == 0:  # contacts with obstacles are outside the twin
            np.testing.assert_allclose(q1.numpy(), d.qpos, atol=1e-10)
            np.testing.assert_allclose(v1.numpy(), d.qvel, atol=1e-10)


def test_point_mass_kinematics_and_step_equal_mujoco():
    env = envs.make_env("kinodiff/Maze-v0", layout="u")
    u = env.unwrapped
    robot = TorchRobot(u.constraint_spec.to_dict()["robot"])
    obs, _ = env.reset(seed=0)
    q, v = robot.state_from_obs(torch.as_tensor(obs)[None])
    np.testing.assert_allclose(q[0].numpy(), u.data.qpos, atol=1e-6)  # float32 observation
    pos = robot.joint_positions(torch.tensor(u.data.qpos))[0].numpy()
    np.testing.assert_allclose(pos, u.data.xpos[u.model.body("robot").id, :2], atol=1e-12)
    qt, vt = torch.tensor(u.data.qpos.copy()), torch.tensor(u.data.qvel.copy())
    a = np.array([0.3, -0.7])
    q1, v1 = robot.step(qt, vt, torch.tensor(a))
    env.step(a.astype(np.float32))
    np.testing.assert_allclose(q1.numpy(), u.data.qpos, atol=1e-6)
    np.testing.assert_allclose(v1.numpy(), u.data.qvel, atol=1e-6)


def test_state_from_observation_recovers_joint_angles(arm):
    u, robot = arm
    obs, _ = u.reset(seed=3)
    q, v = robot.state_from_obs(torch.as_tensor(obs)[None])
    np.testing.assert_allclose(q[0].numpy(), u.data.qpos, atol=1e-6)
    np.testing.assert_allclose(v[0].numpy(), u.data.qvel, atol=1e-6)


def test_linear_rollout_is_causal_and_matches_mujoco_along_its_nominal(arm):
    u, robot = arm
    m, d = u.model, u.data
    rng = np.random.default_rng(4)
    q0, v0 = np.array([0.2, -0.6, -0.6]), np.array([0.5, -0.3, 0.2])
    actions = rng.uniform(-0.5, 0.5, (8, 3))
    d.qpos[:], d.qvel[:] = q0, v0
    true_q, true_v = [], []
    for a in actions:
        d.ctrl[:] = a
        mujoco.mj_step(m, d, nstep=u.frame_skip)
        true_q.append(d.qpos.copy())
        true_v.append(d.qvel.copy())
    qt, vt = torch.tensor(q0)[None], torch.tensor(v0)[None]
    nominal = (torch.tensor(np.array(true_q))[None], torch.tensor(np.array(true_v))[None])
    lin = robot.linear_rollout(qt, vt, 8, nominal)
    flat = torch.tensor(actions.reshape(1, -1, 1))
    q = (lin.q_free + (lin.q_map @ flat)[..., 0]).reshape(8, 3).numpy()
    v = (lin.v_free + (lin.v_map @ flat)[..., 0]).reshape(8, 3).numpy()
    # Inertia and bias held per control step along the true path: errors of a few mrad, mrad/s.
    np.testing.assert_allclose(q, true_q, atol=5e-3)
    np.testing.assert_allclose(v, true_v, atol=5e-2)
    # state k depends on actions 0..k only
    vmap = lin.v_map.reshape(8, 3, 8, 3)
    for k in range(8):
        assert torch.all(vmap[k, :, k + 1:] == 0)
        assert torch.any(vmap[k, :, k] != 0)


def test_unknown_robot_kind_is_rejected():
    with pytest.raises(ValueError, match="hexapod"):
        TorchRobot({"kind": "hexapod"})

import dataclasses
import pickle

import mujoco
import numpy as np
import pytest

from envs.constraints import ConstraintSpec, Obstacle, constraint_spec_from_model
from sim_assets import asset_path


@pytest.fixture(scope="module")
def spec():
    model = mujoco.MjModel.from_xml_path(str(asset_path("arm_reach.xml")))
    return constraint_spec_from_model(model, min_robot_distance=0.0)


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_limits_read_from_the_mjcf_match_hand_written_numbers(spec):
    assert spec.joint_names == ("joint1", "joint2", "joint3")
    assert spec.actuator_names == ("torque1", "torque2", "torque3")
    np.testing.assert_array_equal(spec.joint_qpos_index, [0, 1, 2])
    np.testing.assert_array_equal(spec.joint_dof_index, [0, 1, 2])
    # range="-2.9 2.9", "-2.5 2.5", "-2.5 2.5"
    np.testing.assert_allclose(spec.joint_low, [-2.9, -2.5, -2.5])
    np.testing.assert_allclose(spec.joint_high, [2.9, 2.5, 2.5])
    # ctrlrange="-1 1" on every motor
    np.testing.assert_allclose(spec.ctrl_low, [-1.0, -1.0, -1.0])
    np.testing.assert_allclose(spec.ctrl_high, [1.0, 1.0, 1.0])
    # gear 8, 5, 2 times ctrlrange [-1, 1] -> [-8, 8], [-5, 5], [-2, 2] N m
    np.testing.assert_allclose(spec.torque_limit, [[-8.0, 8.0], [-5.0, 5.0], [-2.0, 2.0]])
    # <numeric name="joint_velocity_limit" data="2.5 3.0 3.5"/>
    np.testing.assert_allclose(spec.joint_velocity_limit, [2.5, 3.0, 3.5])
    # <numeric name="workspace_bounds" data="-1.05 -1.05 1.05 1.05"/>
    np.testing.assert_allclose(spec.workspace_low, [-1.05, -1.05])
    np.testing.assert_allclose(spec.workspace_high, [1.05, 1.05])
    assert spec.action_rate_limit is None and spec.min_robot_distance == 0.0


def test_obstacles_read_from_the_mjcf_match_hand_written_numbers(spec):
    obstacles = {o.name: o for o in spec.obstacles}
    assert sorted(obstacles) == ["obstacle_box", "obstacle_capsule", "obstacle_sphere"]
    sphere, capsule, box = (obstacles[f"obstacle_{k}"] for k in ("sphere", "capsule", "box"))
    assert (sphere.kind, capsule.kind, box.kind) == ("sphere", "capsule", "box")
    # sphere pos="0.5 0.5 0" size="0.1", no rotation
    np.testing.assert_allclose(sphere.position, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(sphere.size, [0.1, 0.0, 0.0])
    np.testing.assert_allclose(sphere.rotation, np.eye(3), atol=1e-12)
    # capsule pos="-0.55 0.35 0" size="0.05 0.15", its axis (local z) 30 deg from +x: (cos 30, sin 30, 0)
    np.testing.assert_allclose(capsule.position, [-0.55, 0.35, 0.0])
    np.testing.assert_allclose(capsule.size, [0.05, 0.15, 0.0])
    np.testing.assert_allclose(capsule.rotation[:, 2], [0.8660254, 0.5, 0.0], atol=1e-7)
    # box pos="0.15 -0.6 0" size="0.12 0.07 0.05" euler="0 0 0.35": a rotation of 0.35 rad about z
    np.testing.assert_allclose(box.position, [0.15, -0.6, 0.0])
    np.testing.assert_allclose(box.size, [0.12, 0.07, 0.05])
    np.testing.assert_allclose(box.rotation, _rot_z(0.35), atol=1e-7)


def test_signed_distances_match_hand_computed_values(spec):
    sphere, capsule, box = sorted(spec.obstacles, key=lambda o: ("sphere", "capsule", "box").index(o.kind))
    # 0.3 from the sphere centre, radius 0.1 -> 0.2; at the centre -> -0.1
    np.testing.assert_allclose(sphere.signed_distance(np.array([[0.5, 0.8, 0.0], [0.5, 0.5, 0.0]])),
                               [0.2, -0.1])
    axis, normal = capsule.rotation[:, 2], np.array([-0.5, 0.8660254, 0.0])
    # 0.3 along the axis: 0.3 - half length 0.15 - radius 0.05 = 0.1
    # 0.2 across the axis: 0.2 - radius 0.05 = 0.15
    pts = capsule.position + np.array([0.3 * axis, 0.2 * normal])
    np.testing.assert_allclose(capsule.signed_distance(pts), [0.1, 0.15], atol=1e-7)
    # local (0.22, 0, 0): 0.22 - 0.12 = 0.1; local (0.2, 0.1, 0): corner distance hypot(0.08, 0.03);
    # centre: -min half extent = -0.05
    local = np.array([[0.22, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 0.0]])
    pts = box.position + local @ box.rotation.T
    np.testing.assert_allclose(box.signed_distance(pts), [0.1, np.hypot(0.08, 0.03), -0.05], atol=1e-12)
    # the spec's distance is the smallest over the obstacles; batch shape (2, 1) is kept
    out = spec.obstacle_distance(np.array([[[0.5, 0.8, 0.0]], [[0.5, 0.5, 0.0]]]))
    np.testing.assert_allclose(out, [[0.2], [-0.1]])


def test_violation_counts_on_hand_made_states(spec):
    # q1 = 3.0 > 2.9 and q3 = -2.6 < -2.5: two position violations.
    # |qd1| = 2.6 > 2.5; qd2 = -3.0 is exactly at its limit and does not count: one velocity violation.
    counts = spec.count_violations(np.array([3.0, 0.0, -2.6]), np.array([2.6, -3.0, 0.0]))
    assert counts == (2, 1) and isinstance(counts.joint_position, int)
    assert spec.count_violations(np.zeros(3), np.zeros(3)) == (0, 0)
    # q1 = 2.95 is 0.05 over, inside a 0.1 tolerance
    assert spec.count_violations(np.array([2.95, 0.0, 0.0]), np.zeros(3), tol=0.1) == (0, 0)
    batch = spec.count_violations(np.array([[3.0, 2.6, 0.0], [0.0, 0.0, 0.0]]),
                                  np.array([[0.0, 0.0, 4.0], [-2.6, 3.1, 3.6]]))
    np.testing.assert_array_equal(batch.joint_position, [2, 0])
    np.testing.assert_array_equal(batch.joint_velocity, [1, 3])


def test_spec_is_plain_data_read_only_and_pickles(spec):
    def plain(value):
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        if isinstance(value, Obstacle):
            return all(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
        return value is None or isinstance(value, (np.ndarray, float, int, str))

    for f in dataclasses.fields(spec):
        assert plain(getattr(spec, f.name)), f.name
    with pytest.raises(ValueError):
        spec.joint_low[0] = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.joint_low = np.zeros(3)
    clone = pickle.loads(pickle.dumps(spec))
    np.testing.assert_array_equal(clone.torque_limit, spec.torque_limit)
    np.testing.assert_array_equal(clone.obstacles[2].rotation, spec.obstacles[2].rotation)


def test_model_without_custom_numerics_gets_unbounded_defaults():
    # point_obstacle.xml: two unlimited slide joints, motors with gear 2, one box named "obstacle".
    model = mujoco.MjModel.from_xml_path(str(asset_path("point_obstacle.xml")))
    spec = constraint_spec_from_model(model, workspace_low=[-1.0, -1.2], workspace_high=[1.0, 1.2])
    assert spec.joint_names == ("slide_x", "slide_y")
    assert np.all(np.isinf(spec.joint_low)) and np.all(np.isinf(spec.joint_velocity_limit))
    np.testing.assert_allclose(spec.torque_limit, [[-2.0, 2.0], [-2.0, 2.0]])  # gear 2 * [-1, 1]
    np.testing.assert_allclose(spec.workspace_high, [1.0, 1.2])
    assert [(o.name, o.kind) for o in spec.obstacles] == [("obstacle", "box")]
    np.testing.assert_allclose(spec.obstacles[0].size, [0.3, 0.1, 0.05])  # size="0.3 0.1 0.05"


def test_bad_models_and_specs_are_rejected_naming_the_value(spec):
    xml = """<mujoco><custom><numeric name="joint_velocity_limit" data="1 2"/></custom>
      <worldbody><body><joint type="hinge"/><geom size="0.1"/></body></worldbody></mujoco>"""
    with pytest.raises(ValueError, match="joint_velocity_limit.*2 values.*1"):
        constraint_spec_from_model(mujoco.MjModel.from_xml_string(xml))
    xml = """<mujoco><worldbody><geom name="obstacle_c" type="cylinder" size="0.1 0.1"/>
      </worldbody></mujoco>"""
    with pytest.raises(ValueError, match="obstacle_c"):
        constraint_spec_from_model(mujoco.MjModel.from_xml_string(xml))
    kwargs = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    with pytest.raises(ValueError, match="joint_low"):
        ConstraintSpec(**{**kwargs, "joint_low": np.array([3.0, 0.0, 0.0])})
    with pytest.raises(ValueError, match="joint_velocity_limit has shape"):
        ConstraintSpec(**{**kwargs, "joint_velocity_limit": np.ones(2)})
    with pytest.raises(ValueError, match="cylinder"):
        Obstacle(name="x", kind="cylinder", position=np.zeros(3), size=np.ones(3), rotation=np.eye(3))


def test_arm_robot_model_read_from_the_mjcf_matches_hand_written_numbers():
    import envs

    spec = envs.make_env("kinodiff/ArmReach-v0").unwrapped.constraint_spec
    r = spec.robot
    assert r.kind == "planar_arm" and r.substeps == 5 and r.timestep == 0.005  # frame_skip 5, 5 ms
    np.testing.assert_allclose(r.link_lengths, [0.4, 0.35, 0.25])  # body pos 0.4, 0.35; site 0.25
    np.testing.assert_allclose(r.mass, [1.0, 0.8, 0.5])
    np.testing.assert_allclose(r.com, [0.2, 0.175, 0.125])  # capsules centred on their links
    np.testing.assert_allclose(r.gear, [8.0, 5.0, 2.0])
    np.testing.assert_allclose(r.damping, [0.5, 0.5, 0.2])
    np.testing.assert_allclose(r.armature, [0.01, 0.01, 0.01])
    # izz of a capsule about its centre, for link 1: MuJoCo's body_inertia about the axis across it
    model = mujoco.MjModel.from_xml_path(str(asset_path("arm_reach.xml")))
    np.testing.assert_allclose(r.inertia[0], model.body_inertia[model.body("link1").id, 0])
    np.testing.assert_array_equal(r.obs_cos_index, [0, 1, 2])
    np.testing.assert_array_equal(r.obs_sin_index, [3, 4, 5])
    np.testing.assert_array_equal(r.obs_qvel_index, [6, 7, 8])
    assert r.dt == pytest.approx(0.025)


def test_every_task_exposes_a_plain_data_spec_that_survives_json():
    import json

    import envs
    from envs.robot_models import RobotModel

    kinds = {}
    for env_id in envs.ENV_SPECS:
        spec = envs.make_env(env_id).unwrapped.constraint_spec
        assert isinstance(spec, ConstraintSpec), env_id
        doc = json.loads(json.dumps(spec.to_dict()))
        np.testing.assert_array_equal(doc["ctrl_low"], spec.ctrl_low)
        assert len(doc["obstacles"]) == len(spec.obstacles)
        kinds[env_id] = spec.robot.kind if isinstance(spec.robot, RobotModel) else None
    assert kinds["kinodiff/PointObstacle-v0"] == kinds["kinodiff/Maze-v0"] == "point_mass"
    assert kinds["kinodiff/ArmReach-v0"] == "planar_arm"
    arena = envs.make_env("kinodiff/MultiRobotArena-v0").unwrapped.constraint_spec
    assert arena.inter_robot_distance == pytest.approx(0.1)  # two robot radii of 0.05


def test_extra_obstacles_are_compiled_into_the_scene_and_the_spec():
    import envs

    extra = ({"kind": "sphere", "pos": [0.3, 0.4, 0.0], "size": [0.06]},
             {"kind": "capsule", "pos": [-0.3, -0.4, 0.0], "size": [0.04, 0.1], "yaw": 0.5})
    env = envs.make_env("kinodiff/ArmReach-v0", extra_obstacles=extra)
    obstacles = {o.name: o for o in env.unwrapped.constraint_spec.obstacles}
    assert len(obstacles) == 5
    np.testing.assert_allclose(obstacles["obstacle_extra_0"].size, [0.06, 0.0, 0.0])
    # the capsule's axis lies in the plane, turned 0.5 rad from +x
    np.testing.assert_allclose(obstacles["obstacle_extra_1"].rotation[:, 2],
                               [np.cos(0.5), np.sin(0.5), 0.0], atol=1e-9)
    # the arm collides with it: stretched along the sphere's direction a link passes through it
    u = env.unwrapped
    env.reset(seed=0)
    u.data.qpos[:] = [np.arctan2(0.4, 0.3), 0.0, 0.0]
    mujoco.mj_forward(u.model, u.data)
    geoms = {u.model.geom(int(g)).name for g in u.data.contact.geom.ravel()}
    assert "obstacle_extra_0" in geoms
    with pytest.raises(ValueError, match="cylinder"):
        envs.make_env("kinodiff/ArmReach-v0", extra_obstacles=({"kind": "cylinder"},))
    with pytest.raises(ValueError, match="size"):
        envs.make_env("kinodiff/ArmReach-v0", extra_obstacles=({"kind": "box", "pos": [0, 0, 0],
                                                                 "size": [0.1]},))


def test_spec_replace_revalidates_and_action_rate_limit_is_read_from_a_numeric(spec):
    tight = spec.replace(joint_velocity_limit=spec.joint_velocity_limit * 0.5,
                         action_rate_limit=[0.2, 0.2, 0.2])
    np.testing.assert_allclose(tight.joint_velocity_limit, [1.25, 1.5, 1.75])
    with pytest.raises(ValueError, match="action_rate_limit"):
        spec.replace(action_rate_limit=[0.2, -1.0, 0.2])
    xml = """<mujoco><custom><numeric name="action_rate_limit" data="0.3"/></custom>
      <worldbody><body><joint name="j" type="hinge"/><geom size="0.1"/></body></worldbody>
      <actuator><motor joint="j" ctrlrange="-1 1"/></actuator></mujoco>"""
    np.testing.assert_allclose(
        constraint_spec_from_model(mujoco.MjModel.from_xml_string(xml)).action_rate_limit, [0.3])

import math
import pickle

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs
from envs.experts.push_t import PushTMarkovMPCExpert, PushTMPCConfig
from envs.push_t_geometry import (
    CoverageFn,
    TShape,
    clip_to_box,
    distance_to_shape,
    overlap_area,
    pose_error,
    rect_overlap_area,
    shoelace_area,
)
from envs.push_t_v0 import PushTEnv, read_layout

# The T in the block frame (origin at the area centroid, 75/7 mm below the bar/stem junction):
# bar 120 x 30 mm, stem 30 x 90 mm, area 6300 mm^2.
T = TShape(
    centers=np.array([[0.0, 0.015 + 0.075 / 7], [0.0, -0.045 + 0.075 / 7]]),
    halves=np.array([[0.06, 0.015], [0.015, 0.045]]),
)
GOAL = np.array([0.0, 0.0, math.pi / 4])


def _shifted(goal, dx, dy, dangle=0.0):
    """The goal pose moved by (dx, dy) in the goal's own frame and turned by dangle."""
    c, s = math.cos(goal[2]), math.sin(goal[2])
    return np.array([goal[0] + c * dx - s * dy, goal[1] + s * dx + c * dy, goal[2] + dangle])


# -- geometry -----------------------------------------------------------------------------------
def test_shoelace_area_is_signed():
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert shoelace_area(square) == 1.0
    assert shoelace_area(square[::-1]) == -1.0


def test_clip_to_box_keeps_the_inside_part():
    # [0, 2]^2 clipped to [-1, 1]^2 leaves [0, 1]^2: area 1.
    square = [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]
    assert abs(shoelace_area(clip_to_box(square, 1.0, 1.0)) - 1.0) < 1e-15
    assert clip_to_box([(3.0, 3.0), (4.0, 3.0), (4.0, 4.0)], 1.0, 1.0) == []


def test_rect_overlap_hand_computed():
    a = (0.0, 0.0, 1.0, 0.5, 0.0)  # 2 x 1 rectangle, area 2
    assert rect_overlap_area(a, a) == pytest.approx(2.0, abs=1e-15)
    # Shifted by half its width: overlap [0, 1] x [-0.5, 0.5], area 1.
    assert rect_overlap_area((1.0, 0.0, 1.0, 0.5, 0.0), a) == pytest.approx(1.0, abs=1e-15)
    # A 2 x 2 square and itself turned 45 degrees meet in a regular octagon of apothem 1:
    # area 8 tan(pi / 8) = 8 (sqrt(2) - 1).
    sq, diamond = (0.0, 0.0, 1.0, 1.0, 0.0), (0.0, 0.0, 1.0, 1.0, math.pi / 4)
    assert rect_overlap_area(diamond, sq) == pytest.approx(8 * (math.sqrt(2) - 1), abs=1e-12)
    assert rect_overlap_area((5.0, 0.0, 1.0, 1.0, 0.3), sq) == 0.0


def test_t_shape_properties():
    assert T.area == pytest.approx(0.0063, abs=1e-15)  # 3600 + 2700 mm^2
    assert np.allclose(T.centroid, 0.0, atol=1e-15)
    # Farthest points: the stem's bottom corners, at (15, -90 + 75/7) mm.
    assert T.radius == pytest.approx(math.hypot(0.015, 0.09 - 0.075 / 7), abs=1e-15)


@pytest.mark.parametrize("cov", [CoverageFn(T, GOAL), lambda *p: overlap_area(T, np.array(p), GOAL) / T.area])
def test_coverage_hand_computed(cov):
    assert cov(*GOAL) == 1.0
    # Half a bar (60 mm) along the bar: only bar/bar overlaps, 60 x 30 mm = 1800 of 6300 mm^2.
    assert cov(*_shifted(GOAL, 0.06, 0.0)) == pytest.approx(2 / 7, abs=1e-12)
    # One bar thickness (30 mm) towards the stem: block bar on goal stem 30 x 30 mm, stems
    # 30 x 60 mm; 2700 of 6300 mm^2.
    assert cov(*_shifted(GOAL, 0.0, -0.03)) == pytest.approx(3 / 7, abs=1e-12)
    # Half a turn about the centroid (the junctions sit 75/7 mm either side of it): each bar lies
    # across the other stem, 30 x 30 mm twice, and the stems share 30 x 150/7 mm;
    # (1800 + 4500/7) / 6300 = 19/49.
    assert cov(*_shifted(GOAL, 0.0, 0.0, math.pi)) == pytest.approx(19 / 49, abs=1e-12)
    assert cov(*_shifted(GOAL, 0.2, 0.1)) == 0.0
    # A full turn changes nothing.
    assert cov(*_shifted(GOAL, 0.0, 0.0, 2 * math.pi)) == pytest.approx(1.0, abs=1e-12)


def test_fast_coverage_matches_the_reference_on_random_poses():
    fast = CoverageFn(T, GOAL)
    rng = np.random.default_rng(0)
    for scale in (0.002, 0.02, 0.08):
        for _ in range(300):
            pose = GOAL + rng.normal(0.0, 1.0, 3) * np.array([scale, scale, 10 * scale])
            assert fast(*pose) == pytest.approx(overlap_area(T, pose, GOAL) / T.area, abs=1e-12)


def test_pose_error_and_distance():
    assert pose_error(T, GOAL, GOAL) == 0.0
    assert pose_error(T, GOAL + [0.003, -0.004, 0.0], GOAL) == pytest.approx(0.005)
    # Half a turn moves every point by twice its distance to the centroid: RMS 2 k.
    k = math.sqrt(T.gyration_sq)
    assert pose_error(T, GOAL + [0.0, 0.0, math.pi], GOAL) == pytest.approx(2 * k)
    pose = np.zeros(3)
    pts = np.array([[0.0, 0.0], [0.1, 0.02], [0.0, -0.1 + 0.075 / 7]])
    # Inside; 40 mm right of the bar's end; 10 mm below the stem's bottom.
    assert np.allclose(distance_to_shape(T, pose, pts), [0.0, 0.04, 0.01])


# -- env ----------------------------------------------------------------------------------------
def test_layout_is_read_from_the_mjcf():
    lay = read_layout(PushTEnv().model)
    assert np.allclose(lay.goal, GOAL)
    assert np.allclose(lay.shape.centers, T.centers) and np.allclose(lay.shape.halves, T.halves)
    assert lay.pusher_radius == 0.015


def test_reset_is_reproducible_and_starts_are_valid():
    env = envs.make_env("kinodiff/PushT-v0")
    u = env.unwrapped
    starts = []
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        again, _ = env.reset(seed=seed)
        assert obs.dtype == np.float32 and obs.shape == (5,) and np.array_equal(obs, again)
        assert info["coverage"] <= u.max_start_coverage and not info["is_success"]
        assert np.all(np.abs(obs[2:4]) <= u.block_spread)
        gap = distance_to_shape(u.layout.shape, u.block_pose(), obs[None, :2].astype(np.float64))[0]
        assert gap >= u.layout.pusher_radius
        starts.append(obs)
    assert len({tuple(s) for s in starts}) == 20


def test_block_at_the_goal_covers_it_exactly_and_succeeds():
    env = envs.make_env("kinodiff/PushT-v0")
    u = env.unwrapped
    env.reset(seed=0)
    u.set_block_pose(u.layout.goal)
    u.data.qpos[:2] = u.data.ctrl[:] = (-0.2, -0.2)
    mujoco.mj_forward(u.model, u.data)
    assert u.coverage_fn(*u.block_pose()) == 1.0
    obs, reward, term, trunc, info = env.step(np.array([-0.2, -0.2], dtype=np.float32))
    assert term and info["is_success"] and info["coverage"] == pytest.approx(1.0, abs=1e-6)
    assert reward == info["reward_coverage"] + info["reward_success"] and info["reward_success"] == 1.0


def test_reward_is_the_coverage_gain():
    env = envs.make_env("kinodiff/PushT-v0")
    _, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    prev = info["coverage"]
    for _ in range(20):
        _, _, _, _, info = env.step(rng.uniform(-0.1, 0.1, 2))
        assert info["reward_coverage"] == info["coverage"] - prev
        prev = info["coverage"]


def test_info_position_is_the_pushers_so_reports_can_draw_its_path():
    env = envs.make_env("kinodiff/PushT-v0")
    obs, info = env.reset(seed=3)
    np.testing.assert_allclose(info["position"], obs[:2], atol=1e-6)
    for _ in range(5):
        obs, _, _, _, info = env.step(np.array([0.1, -0.05]))
        np.testing.assert_allclose(info["position"], env.unwrapped.pusher_position())
        np.testing.assert_allclose(info["position"], obs[:2], atol=1e-6)
    before = info["position"].copy()
    env.step(np.array([-0.1, 0.1]))
    np.testing.assert_array_equal(info["position"], before)  # a copy, not a view of qpos


def test_invalid_task_arguments_are_named():
    with pytest.raises(ValueError, match="block_spread"):
        PushTEnv(block_spread=0.5)
    with pytest.raises(ValueError, match="max_start_coverage"):
        PushTEnv(max_start_coverage=0.99)
    with pytest.raises(ValueError, match="image_size"):
        gym.make("kinodiff/PushTImage-v0", image_size=4)


def test_image_variant_observation():
    env = envs.make_env("kinodiff/PushTImage-v0")
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"image", "agent_pos"}
    assert obs["image"].shape == (96, 96, 3) and obs["image"].dtype == np.uint8
    assert obs["agent_pos"].shape == (2,) and obs["agent_pos"].dtype == np.float32
    assert env.observation_space.contains(obs) and obs["image"].std() > 0
    state = envs.make_env("kinodiff/PushT-v0")
    # Same start distribution and dynamics as PushT-v0.
    assert np.array_equal(obs["agent_pos"], state.reset(seed=1)[0][:2])
    obs2, *_ = env.step(np.array([0.2, 0.2], dtype=np.float32))
    assert not np.array_equal(obs["image"], obs2["image"])  # the pusher moved
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.image_size == 96
    env.close()


# -- expert -------------------------------------------------------------------------------------
def test_mpc_expert_improves_coverage_and_leaves_the_env_alone():
    env = envs.make_env("kinodiff/PushT-v0")
    expert = envs.make_expert("kinodiff/PushT-v0", "mpc", env)
    obs, info = env.reset(seed=9)
    expert.reset(9, np.random.default_rng(9))
    u = env.unwrapped
    start_cov, start_err = info["coverage"], pose_error(u.layout.shape, u.block_pose(), u.layout.goal)
    qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
    action = expert.act(obs)
    # Planning runs on the expert's own MjData: the env's state is untouched.
    assert np.array_equal(u.data.qpos, qpos) and np.array_equal(u.data.qvel, qvel)
    assert env.action_space.contains(action)
    for _ in range(25):
        obs, _, term, trunc, info = env.step(action)
        if term or trunc:
            break
        action = expert.act(obs)
    # Seed 9 starts 103 mm (RMS) from the goal with 12 % coverage.
    err = pose_error(u.layout.shape, u.block_pose(), u.layout.goal)
    assert err < 0.2 * start_err and info["coverage"] > start_cov + 0.5
    assert expert.drifts == 0  # the rollouts predicted the env exactly


def test_markov_mpc_expert_plans_are_a_function_of_the_state():
    env = envs.make_env("kinodiff/PushT-v0")
    env.reset(seed=9)
    plans = []
    for k in range(2):  # two episode rngs, and a second plan that a warm start would change
        expert = PushTMarkovMPCExpert(env.unwrapped)
        expert.reset(k, np.random.default_rng(k))
        plans += [expert.plan()[0], expert.plan()[0]]
    assert all(np.array_equal(p, plans[0]) for p in plans[1:])
    default = envs.make_expert("kinodiff/PushT-v0", "mpc", env)
    default.reset(1, np.random.default_rng(1))
    assert not np.array_equal(default.plan()[0], plans[0])  # the default expert's depend on its rng


def test_replan_every_caps_the_open_loop_steps():
    env = envs.make_env("kinodiff/PushT-v0")
    obs, _ = env.reset(seed=9)
    expert = PushTMarkovMPCExpert(env.unwrapped)
    expert.reset(0, np.random.default_rng(0))
    for _ in range(24):
        obs, *_ = env.step(expert.act(obs))
    # Seed 9's first primitive is longer than 8 steps, so a plan is made at least every 8 steps.
    assert expert.plans >= 3 and expert.drifts == 0
    with pytest.raises(ValueError, match="replan_every -1"):
        PushTMPCConfig(replan_every=-1)

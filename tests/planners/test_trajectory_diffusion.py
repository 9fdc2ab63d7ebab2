"""Trajectory diffusion: windows, inpainting, save/load, guidance, PD tracking, the planner."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401 - registers kinodiff/*
from agents.train.trajectory import TrajectoryTrainConfig, episode_windows, train
from planners.base import env_state
from planners.registry import make_planner
from planners.tracking import PDTracker, PDTrackerConfig, interpolate_states
from planners.trajectory_diffusion import TrajectoryModel, TrajectoryModelConfig, sample_trajectories


def _tiny(horizon=8, stride=2, seed=0):
    torch.manual_seed(seed)
    cfg = TrajectoryModelConfig(horizon=horizon, stride=stride, hidden_dims=(32, 32), diffusion_steps=20)
    return TrajectoryModel(cfg, -torch.ones(6), torch.ones(6)).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(_tiny().save(tmp_path_factory.mktemp("trajdiff")))


@pytest.fixture
def maze():
    env = gym.make("kinodiff/Maze-v0", layout="u")
    obs, _ = env.reset(seed=4)
    return env, obs


def test_episode_windows_stride_and_padding():
    obs = np.arange(5, dtype=np.float32)[:, None].repeat(6, axis=1)
    action = np.ones((5, 2), np.float32)
    w = episode_windows(obs, action, horizon=4, stride=2)
    assert w.shape == (5, 4, 6)
    assert w[0, :, 0].tolist() == [0, 2, 4, 4]  # steps 0, 2, 4, then the padded end
    assert w[3, :, 0].tolist() == [3, 4, 4, 4]
    assert w[3, 1:, 4:].sum() == 0  # padding is at rest: zero action
    assert w[3, 0, 4:].tolist() == [1, 1]
    with pytest.raises(ValueError, match="expected equal"):
        episode_windows(obs, action[:3], 4, 1)


def test_sampling_inpaints_start_and_goal_exactly():
    model = _tiny()
    start, goal = torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([-0.5, 0.5])
    x = sample_trajectories(model, start, goal, samples=3, steps=5,
                            generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 8, 6)
    assert torch.allclose(x[:, 0, :4], start.expand(3, -1), atol=1e-5)
    assert torch.allclose(x[:, -1, :2], goal.expand(3, -1), atol=1e-5)
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="expected 4"):
        sample_trajectories(model, torch.zeros(3), goal)


def test_save_load_roundtrip_reproduces_samples(tmp_path):
    model = _tiny(seed=3)
    loaded = TrajectoryModel.load(model.save(tmp_path / "m"))
    args = (torch.tensor([0.0, 0.0, 0.1, 0.1]), torch.tensor([0.4, 0.4]))
    a = sample_trajectories(model, *args, steps=5, generator=torch.Generator().manual_seed(1))
    b = sample_trajectories(loaded, *args, steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no model.json"):
        TrajectoryModel.load(tmp_path / "nothing")


def test_cost_guidance_lowers_the_guided_cost():
    model = _tiny(horizon=16)
    start, goal = torch.zeros(4), torch.zeros(2)

    def high_y(x):  # cost: mean y of the interior states, so guidance pushes the plan down
        return x[:, 1:-1, 1].mean(dim=1)

    plain = sample_trajectories(model, start, goal, samples=8, steps=6,
                                generator=torch.Generator().manual_seed(0))
    guided = sample_trajectories(model, start, goal, samples=8, steps=6, guide=high_y, guide_scale=2.0,
                                 generator=torch.Generator().manual_seed(0))
    assert high_y(guided).mean() < high_y(plain).mean() - 0.05


def test_pd_tracker_holds_a_point_on_the_maze(maze):
    env, _ = maze
    u = env.unwrapped
    tracker = PDTracker(PDTrackerConfig(), u.model.actuator_ctrlrange[:, 0], u.model.actuator_ctrlrange[:, 1])
    target = u.data.qpos.copy() + np.array([0.08, 0.0])  # within the start cell, the free direction
    for _ in range(60):
        a = tracker.action(u.data.qpos.copy(), u.data.qvel.copy(), target, np.zeros(2))
        assert np.all(np.abs(a) <= 1.0)
        env.step(a.astype(np.float32))
    assert np.linalg.norm(u.data.qpos - target) < 0.01
    with pytest.raises(ValueError, match="gains >= 0"):
        PDTrackerConfig(kp=-1.0)


def test_interpolate_states_clamps_and_blends():
    s = np.array([[0.0, 0.0], [2.0, 4.0]])
    assert interpolate_states(s, 0.5).tolist() == [1.0, 2.0]
    assert interpolate_states(s, 7.0).tolist() == [2.0, 4.0]
    assert interpolate_states(s, -1.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("execution", ["track", "open_loop"])
def test_planner_replans_on_schedule_and_on_goal_change(maze, checkpoint, execution):
    env, obs = maze
    planner = make_planner("trajectory_diffusion", env, checkpoint=checkpoint, execution=execution,
                           replan_every=3, inference_steps=4)
    planner.reset(seed=0)
    goal = obs[4:6].astype(np.float64)
    for i in range(7):
        plan = planner.plan(env_state(env), goal)
        assert plan.diagnostics["replanned"] == (i % 3 == 0)
        assert plan.states.shape == (len(plan.actions), 2) and np.isfinite(plan.cost)
        obs, *_ = env.step(plan.actions[0].astype(np.float32))
    assert planner.replans == 3
    assert planner.plan(env_state(env), goal + 0.1).diagnostics["replanned"]


def test_open_loop_executes_the_diffused_actions(maze, checkpoint):
    env, obs = maze
    planner = make_planner("trajectory_diffusion", env, checkpoint=checkpoint, execution="open_loop",
                           replan_every=0, inference_steps=4)
    plan = planner.plan(env_state(env), obs[4:6])
    traj = plan.diagnostics["planned_states"]
    assert traj.shape == (8, 4)
    # Stride 2: each diffused action is held for two control steps, with no replan in between.
    second = planner.plan(env_state(env), obs[4:6])
    assert np.array_equal(second.actions[0], plan.actions[0]) and not second.diagnostics["replanned"]
    third = planner.plan(env_state(env), obs[4:6])
    assert np.array_equal(third.actions[0], plan.actions[1])


def test_bad_settings_raise_clear_errors(maze, checkpoint):
    env, _ = maze
    with pytest.raises(ValueError, match="needs checkpoint"):
        make_planner("trajectory_diffusion", env)
    with pytest.raises(ValueError, match="execution 'pd'"):
        make_planner("trajectory_diffusion", env, checkpoint=checkpoint, execution="pd")
    planner = make_planner("trajectory_diffusion", env, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="needs a goal"):
        planner.plan(env_state(env))
    with pytest.raises(ValueError, match="state has shape"):
        planner.plan(np.zeros(2), np.zeros(2))


@pytest.mark.parametrize("damping", [None, 0.125])
def test_feedforward_is_read_off_the_tasks_model(checkpoint, damping):
    env = gym.make("kinodiff/Maze-v0", layout="u", damping=damping)
    env.reset(seed=0)
    planner = make_planner("trajectory_diffusion", env, checkpoint=checkpoint)
    # Joint damping over motor gear: 2 / 2 by default, 0.125 / 2 weakly damped.
    assert planner.tracker.config.feedforward == pytest.approx(1.0 if damping is None else 0.0625)
    assert make_planner("trajectory_diffusion", env, checkpoint=checkpoint,
                        feedforward=0.5).tracker.config.feedforward == 0.5


def test_tracker_holds_the_goal_within_hold_radius(maze, checkpoint):
    env, obs = maze
    u = env.unwrapped
    goal = obs[4:6].astype(np.float64)
    planner = make_planner("trajectory_diffusion", env, checkpoint=checkpoint, hold_radius=0.05,
                           inference_steps=4)
    u.data.qpos[:] = goal + [0.03, 0.0]  # inside the radius, moving away from the goal
    u.data.qvel[:] = [0.2, 0.0]
    plan = planner.plan(env_state(env), goal)
    assert plan.diagnostics["holding"] and planner.replans == 0
    # PD towards the goal at rest: -kp * 0.03 - kd * 0.2 (plus no feed-forward for a zero reference).
    assert plan.actions[0].tolist() == pytest.approx([-8.0 * 0.03 - 1.0 * 0.2, 0.0])
    u.data.qpos[:] = goal + [0.2, 0.0]  # outside: a plan is diffused
    u.data.qvel[:] = 0.0
    assert planner.plan(env_state(env), goal).diagnostics["replanned"] and planner.replans == 1
    with pytest.raises(ValueError, match=r"hold_radius=-1.0; expected a finite distance >= 0"):
        make_planner("trajectory_diffusion", env, checkpoint=checkpoint, hold_radius=-1.0)


@pytest.mark.slow
def test_training_lowers_the_loss(tiny_store, tmp_path):
    # tiny_store is PointObstacle data: obs starts with (x, y, vx, vy) like Maze-v0's.
    summary = train(TrajectoryTrainConfig(data=str(tiny_store), out=str(tmp_path / "m"), horizon=8,
                                          stride=2, hidden=32, iterations=60, batch_size=16,
                                          lr=3e-3), log_every=20)
    losses = [e["loss"] for e in summary["log"]]
    assert losses[-1] < losses[0]
    assert TrajectoryModel.load(tmp_path / "m").config.horizon == 8

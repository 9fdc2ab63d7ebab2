"""Roadmap search, the hierarchical planner's replanning triggers, and the multi-goal maze."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401 - registers kinodiff/*
from envs.maze_layouts import make_layout
from envs.wrappers.maze_goal_sequence import MazeGoalSequence
from planners.base import env_state
from planners.hierarchical import CallableLowLevel, HierarchicalConfig, HierarchicalPlanner
from planners.registry import make_planner
from planners.roadmap import Roadmap, grid_roadmap

LOW = {"samples": 16, "horizon": 16, "knots": 4, "substeps": 1, "nthread": 1}


def test_grid_roadmap_paths_match_the_mazes_bfs_distances():
    layout = make_layout("large")
    roadmap = grid_roadmap(layout)
    goal = roadmap.locate(layout.goal)
    for cell, dist in layout.distance_to_goal.items():
        path = roadmap.shortest_path(roadmap.locate(layout.cell_center(cell)), goal)
        assert len(path) - 1 == dist  # unit edges: A* length equals the BFS move count


def test_penalties_reroute_around_an_edge():
    # A unit square 0-1-2-3-0: from 0 to 2 both ways are 2 long; the penalty on 0-1 picks 0-3-2.
    nodes = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    rm = Roadmap(nodes=nodes, edges=((1, 3), (0, 2), (1, 3), (0, 2)), locate=lambda p: 0)
    assert rm.shortest_path(0, 2, {(0, 1): 0.5}) == [0, 3, 2]
    assert rm.shortest_path(0, 2, {(0, 3): 0.5}) == [0, 1, 2]


def _pd(state, subgoal):
    # A point-mass PD law: any callable policy can be the low level.
    pos, vel = state[1:3], state[3:5]
    return 3.0 * (subgoal - pos) - 1.0 * vel


def _callable_planner(env, **config):
    u = env.unwrapped
    low = CallableLowLevel(_pd, u.model.actuator_ctrlrange[:, 0], u.model.actuator_ctrlrange[:, 1])
    return HierarchicalPlanner(grid_roadmap(u.layout), low, u.model.nq, HierarchicalConfig(**config))


def _run(env, planner, obs, steps):
    info = {}
    for _ in range(steps):
        action = planner.plan(env_state(env), obs[4:6]).actions[0].astype(np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return info


def test_hierarchical_with_a_callable_low_level_solves_the_u_maze():
    env = gym.make("kinodiff/Maze-v0", layout="u")
    obs, _ = env.reset(seed=4)
    # A PD law cannot cut corners through walls: it aims at the next cell centre only.
    planner = _callable_planner(env, lookahead=1)
    info = _run(env, planner, obs, 300)
    assert info["is_success"]
    assert planner.replans["start"] == 1


def test_hierarchical_mpc_solves_the_u_maze_and_follows_the_contract():
    env = gym.make("kinodiff/Maze-v0", layout="u")
    obs, _ = env.reset(seed=0)
    planner = make_planner("hierarchical", env, low_level_settings=LOW)
    state = env_state(env)
    before = state.copy()
    plan = planner.plan(state, obs[4:6])
    assert np.array_equal(state, before)
    assert plan.actions.shape == (16, 2) and plan.states.shape == (16, 2)
    assert np.all(np.abs(plan.actions) <= 1.0)
    assert "subgoal" in plan.diagnostics and len(plan.diagnostics["path"]) >= 2
    planner.reset(seed=7)
    a = planner.plan(state, obs[4:6]).actions
    planner.reset(seed=7)
    assert np.array_equal(a, planner.plan(state, obs[4:6]).actions)
    planner.reset(seed=0)
    assert _run(env, planner, obs, 300)["is_success"]


def test_replanning_on_failure_schedule_and_alarm():
    env = gym.make("kinodiff/Maze-v0", layout="u")
    obs, _ = env.reset(seed=1)
    u = env.unwrapped
    stuck = CallableLowLevel(lambda s, g: np.zeros(2), -np.ones(2), np.ones(2))
    planner = HierarchicalPlanner(grid_roadmap(u.layout), stuck, u.model.nq,
                                  HierarchicalConfig(stall_steps=3, replan_every=0))
    for _ in range(9):
        planner.plan(env_state(env), obs[4:6])
    # The robot never moves: the 4th call after each (re)plan sees 3 stalled calls -> a failure.
    assert planner.replans["failure"] == 2 and planner.replans["schedule"] == 0
    fired = iter([False, True] + [False] * 10)
    planner = HierarchicalPlanner(grid_roadmap(u.layout), stuck, u.model.nq,
                                  HierarchicalConfig(stall_steps=100, replan_every=3),
                                  alarm=lambda state, plan: next(fired))
    for _ in range(7):
        planner.plan(env_state(env), obs[4:6])
    assert planner.replans == {"start": 1, "schedule": 1, "goal": 0, "failure": 0, "alarm": 1}
    planner.request_replan()
    planner.plan(env_state(env), obs[4:6])
    assert planner.replans["alarm"] == 2
    with pytest.raises(ValueError, match="needs a goal"):
        planner.plan(env_state(env))


def test_hierarchical_refuses_a_task_without_a_roadmap():
    env = gym.make("kinodiff/TinyReach-v0")
    with pytest.raises(ValueError, match="needs a grid roadmap"):
        make_planner("hierarchical", env)


def test_goal_sequence_wrapper_draws_reproducible_goals_and_counts_visits():
    env = MazeGoalSequence(gym.make("kinodiff/Maze-v0", layout="medium"), n_goals=3)
    obs, info = env.reset(seed=5)
    goals = info["goals"]
    assert goals.shape == (3, 2) and np.array_equal(goals[-1], env.layout.goal)
    assert np.array_equal(obs[4:6], goals[0].astype(np.float32))
    assert np.array_equal(env.reset(seed=5)[1]["goals"], goals)
    # Put the robot on the first goal: the step counts the visit and shows the next goal.
    env.unwrapped.data.qpos[:] = goals[0]
    env.unwrapped.data.qvel[:] = 0.0
    obs, reward, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["goal_index"] == 1 and not terminated and not info["is_success"]
    assert np.array_equal(obs[4:6], goals[1].astype(np.float32))
    assert reward == pytest.approx(sum(v for k, v in info.items() if k.startswith("reward_")))
    assert info["reward_success"] == 10.0
    with pytest.raises(ValueError, match="n_goals"):
        MazeGoalSequence(gym.make("kinodiff/Maze-v0"), n_goals=0)


@pytest.mark.slow
def test_hierarchical_visits_three_goals_in_order_on_the_large_maze():
    env = MazeGoalSequence(gym.make("kinodiff/Maze-v0", layout="large", max_episode_steps=1800), 3)
    obs, _ = env.reset(seed=0)
    planner = make_planner("hierarchical", env)
    info = _run(env, planner, obs, 1800)
    assert info["is_success"] and info["goal_index"] == 3

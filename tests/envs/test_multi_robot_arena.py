import pickle

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import envs
from envs.experts.multi_robot_arena import closest_feasible
from envs.multi_robot_arena_pz import MultiRobotArenaParallelEnv
from envs.multi_robot_arena_v0 import MultiRobotArenaEnv

ENV_ID = "kinodiff/MultiRobotArena-v0"


@pytest.mark.parametrize("n_robots", [2, 5])
def test_parallel_api(n_robots):
    # N=2 leaves 3 of the 4 neighbour slots empty; N=5 fills them all.
    parallel_api_test(MultiRobotArenaParallelEnv(n_robots=n_robots), num_cycles=40)


@pytest.mark.parametrize("bad", [1, 65, 0, -3, 2.5])
def test_n_robots_out_of_range_is_named(bad):
    with pytest.raises(ValueError, match=rf"n_robots {bad!r}.*\[2, 64\]"):
        MultiRobotArenaEnv(n_robots=bad)
    with pytest.raises(ValueError, match=rf"n_robots {bad!r}"):
        envs.make_env(ENV_ID, n_robots=bad)


def test_spaces_scale_with_n_robots():
    for n in (2, 8, 64):
        env = envs.make_env(ENV_ID, n_robots=n)
        dim = env.unwrapped.layout.obs_dim
        assert dim == 6 + 4 * 4
        assert env.observation_space.shape == (n * dim,) and env.action_space.shape == (2 * n,)
        assert env.unwrapped.model.nu == 2 * n and env.unwrapped.model.nq == 2 * n


def test_starts_do_not_overlap_and_goals_are_apart_and_inside():
    env = MultiRobotArenaEnv(n_robots=64)
    lay = env.layout
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        starts, goals = info["positions"], env.goals
        for pts in (starts, goals):
            gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(64) * 9
            assert gaps.min() >= env.min_separation > 2 * lay.robot_radius
            assert np.abs(pts).max() <= lay.half_size - lay.robot_radius
        assert np.linalg.norm(goals - starts, axis=1).min() >= env.min_goal_distance
        # Non-overlapping starts: no contact at all in the reset state.
        assert env.data.ncon == 0 and info["n_at_goal"] == 0


def test_neighbour_features_match_a_brute_force_computation():
    for n in (3, 9):
        env = MultiRobotArenaEnv(n_robots=n)
        env.reset(seed=n)
        rng = np.random.default_rng(0)
        for _ in range(15):
            obs, *_ = env.step(rng.uniform(-1, 1, 2 * n))
        rows = obs.reshape(n, -1)
        pos, vel = env.data.qpos.reshape(n, 2), env.data.qvel.reshape(n, 2)
        visible = min(4, n - 1)
        for i in range(n):
            d = np.linalg.norm(pos - pos[i], axis=1)
            d[i] = np.inf
            near = np.argsort(d)[:visible]
            expected = np.concatenate([pos[near] - pos[i], vel[near] - vel[i]], axis=1)
            got = rows[i, 6:].reshape(4, 4)
            assert np.allclose(got[:visible], expected, atol=1e-6)
            assert np.all(got[visible:] == 0.0)  # zero padding when N - 1 < K
            assert np.allclose(rows[i, :4], np.r_[pos[i], vel[i]], atol=1e-6)
            assert np.allclose(rows[i, 4:6], env.goals[i] - pos[i], atol=1e-6)


def test_collisions_are_counted_robot_robot_and_wall():
    env = MultiRobotArenaEnv(n_robots=3)
    env.reset(seed=0)
    half, r = env.layout.half_size, env.layout.robot_radius
    # Robots 0 and 1 overlap by 2 cm; robot 2 presses into the east wall.
    env.data.qpos[:] = [0.0, 0.0, 2 * r - 0.02, 0.0, half - r + 0.01, 0.5]
    env.data.qvel[:] = 0.0
    *_, info = env.step(np.array([1.0, 0.0, -1.0, 0.0, 1.0, 0.0]))
    assert info["robot_collisions"] == 1 and info["wall_collisions"] == 1
    # Robot 1 is in one contact, robot 0 in one, robot 2 in one (the wall): -0.1 each.
    ctrl_cost = 0.01 * np.array([1.0, 1.0, 1.0])
    assert np.allclose(env.robot_rewards - (env._prev_dist - env._dist), -0.1 - ctrl_cost)
    assert info["reward_collision"] == pytest.approx(-0.1 * 3 / 3)


def test_closest_feasible_velocity_hand_cases():
    pairs = np.triu_indices(2, 1)
    v_pref = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    normals = np.array([
        [[-1.0, 0.0], [0.0, 1.0]],  # vx <= 0.5 and vy >= -1 (inactive)
        [[-1.0, 0.0], [0.0, 1.0]],  # vx <= 0.5 and vy >= 0.2: the corner
        [[-1.0, 0.0], [0.0, 1.0]],  # nothing binding but the speed disc
        [[1.0, 0.0], [-1.0, 0.0]],  # vx >= 1 and vx <= 0: infeasible
    ])
    offsets = np.array([[-0.5, -1.0], [-0.5, 0.2], [-10.0, -10.0], [1.0, 0.0]])
    v, found = closest_feasible(v_pref, normals, offsets, 2.0, pairs)
    assert found.tolist() == [True, True, True, False]
    # (1, 0) projected on vx = 0.5; the corner (0.5, 0.2); (3, 0) scaled onto the disc |v| = 2.
    assert np.allclose(v[:3], [[0.5, 0.0], [0.5, 0.2], [2.0, 0.0]])


def _run_orca(n_robots, seed):
    env = envs.make_env(ENV_ID, n_robots=n_robots)
    expert = envs.make_expert(ENV_ID, "orca", env)
    obs, _ = env.reset(seed=seed)
    expert.reset(seed, np.random.default_rng(seed))
    done, contacts = False, 0
    while not done:
        obs, _, term, trunc, info = env.step(expert.act(obs))
        contacts += info["robot_collisions"]
        done = term or trunc
    return info, contacts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orca_expert_brings_four_robots_home(seed):
    info, contacts = _run_orca(4, seed)
    assert info["is_success"] and info["n_at_goal"] == 4 and info["at_goal"].all()
    assert contacts == 0


def test_reset_info_is_fresh_after_a_successful_episode():
    env = envs.make_env(ENV_ID, n_robots=4)
    expert = envs.make_expert(ENV_ID, "orca", env)
    obs, _ = env.reset(seed=0)
    expert.reset(0, np.random.default_rng(0))
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(expert.act(obs))
        done = term or trunc
    assert info["n_at_goal"] == 4
    _, info = env.reset(seed=1)
    assert info["n_at_goal"] == 0 and not info["at_goal"].any() and not info["is_success"]
    assert info["robot_collisions"] == 0 and info["wall_collisions"] == 0


def test_pettingzoo_rows_equal_the_stacked_observation():
    n = 6
    gym_env = MultiRobotArenaEnv(n_robots=n)
    pz_env = MultiRobotArenaParallelEnv(n_robots=n)
    stacked, _ = gym_env.reset(seed=11)
    per_agent, _ = pz_env.reset(seed=11)
    rng = np.random.default_rng(11)
    for _ in range(25):
        rows = stacked.reshape(n, -1)
        for i, agent in enumerate(pz_env.possible_agents):
            assert per_agent[agent].shape == pz_env.observation_space(agent).shape
            assert np.array_equal(per_agent[agent], rows[i])
        assert np.array_equal(pz_env.state(), stacked)
        action = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        stacked, reward, *_ = gym_env.step(action.reshape(-1))
        per_agent, rewards, *_ = pz_env.step(
            {a: action[i] for i, a in enumerate(pz_env.possible_agents)}
        )
        # The team reward is the mean of the per-robot rewards.
        assert np.mean(list(rewards.values())) == pytest.approx(reward, abs=1e-12)


def test_pettingzoo_truncates_every_agent_and_rejects_bad_actions():
    env = MultiRobotArenaParallelEnv(n_robots=3, max_cycles=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="missing"):
        env.step({"robot_0": np.zeros(2)})
    zeros = {a: np.zeros(2, dtype=np.float32) for a in env.agents}
    _, _, term, trunc, _ = env.step(zeros)
    assert not any(trunc.values()) and env.agents
    _, _, term, trunc, _ = env.step(zeros)
    assert all(trunc.values()) and not any(term.values()) and env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step(zeros)
    assert pickle.loads(pickle.dumps(env)).possible_agents == env.possible_agents


@pytest.mark.parametrize("n_robots", [3, 8, 30, 64])
def test_neighbour_order_is_a_stable_sort_of_float32_distances(n_robots):
    # The env sorts int64 keys (float32 squared distance, then index): the neighbours must come
    # out exactly as a stable argsort of the float32 squared distances, ties to the lower index,
    # including exact ties (robots 1 and 2 mirror each other about robot 0).
    env = MultiRobotArenaEnv(n_robots=n_robots)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for step in range(40):
        action = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
        if step == 20:  # robots 0-2 held still, 1 and 2 exactly as far from 0
            env.data.qpos[0:6] = [0.0, 0.0, 0.3, 0.2, -0.3, 0.2]
            env.data.qvel[0:6] = 0.0
            action[0:6] = 0.0
        obs, *_ = env.step(action)
        if step == 20 and n_robots == 3:  # the tie goes to the lower index: robot 1, then 2
            np.testing.assert_array_equal(obs[6:14], np.float32([0.3, 0.2, 0, 0, -0.3, 0.2, 0, 0]))
        rows = obs.reshape(n_robots, -1)
        xy = rows[:, 0:2]
        d = xy[None, :, :] - xy[:, None, :]
        d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]
        np.fill_diagonal(d2, np.inf)
        visible = min(4, n_robots - 1)
        near = np.argsort(d2, axis=1, kind="stable")[:, :visible]
        expected = rows[:, 0:4][near] - rows[:, None, 0:4]
        np.testing.assert_array_equal(rows[:, 6:6 + 4 * visible].reshape(n_robots, visible, 4), expected)

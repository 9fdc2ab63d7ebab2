import dataclasses
import pickle

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.maze_layouts import GRIDS, WALL, MazeLayout, make_layout, wall_boxes
from sim_assets import asset_path

ENV_ID = "kinodiff/Maze-v0"
LAYOUTS = sorted(GRIDS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_builds_and_observes_the_goal(layout):
    env = envs.make_env(ENV_ID, layout=layout)
    obs, info = env.reset(seed=0)
    lay = env.unwrapped.layout
    assert lay.name == layout and lay.grid == GRIDS[layout]
    assert obs.shape == (6,) and obs.dtype == np.float32 and env.action_space.shape == (2,)
    assert np.allclose(obs[4:], lay.goal) and np.allclose(info["position"], obs[:2], atol=1e-6)
    assert lay.grid[lay.goal_cell[0]][lay.goal_cell[1]] == "G"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_passes_the_checker_and_pickles(layout):
    # The contract suite runs the default layout only; the others get the same basic checks here.
    env = envs.make_env(ENV_ID, layout=layout)
    check_env(env.unwrapped, skip_render_check=True)
    clone = pickle.loads(pickle.dumps(env))  # EzPickle rebuilds from the constructor arguments
    assert clone.unwrapped.layout == env.unwrapped.layout
    assert np.array_equal(env.reset(seed=4)[0], clone.reset(seed=4)[0])
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 2))
    a = [env.step(u)[0] for u in actions]
    b = [clone.step(u)[0] for u in actions]
    assert np.array_equal(a, b)


def test_layout_shapes_and_goals_follow_d4rl():
    assert [make_layout(n).shape for n in ("u", "medium", "large")] == [(5, 5), (8, 8), (9, 12)]
    assert [make_layout(n).goal_cell for n in ("u", "medium", "large")] == [(1, 1), (6, 6), (7, 9)]
    # U-maze: the far end of the U, (3, 1), is 6 moves from the goal (1, 1): right 2, up 2, left 2.
    assert make_layout("u").distance_to_goal[(3, 1)] == 6
    # Centres: cell (0, 0) of the 5x5 grid with 0.5 m cells is the top-left, at (-1.0, 1.0).
    assert np.allclose(make_layout("u").cell_center((0, 0)), [-1.0, 1.0])


def test_layout_is_frozen_plain_data():
    lay = make_layout("medium")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.cell_size = 1.0
    assert not lay.goal.flags.writeable and not lay.free.flags.writeable
    assert lay.goal_cell not in lay.start_cells
    assert len(lay.start_cells) == int(lay.free.sum()) - 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_start_is_a_free_non_goal_cell_with_small_jitter(layout):
    env = envs.make_env(ENV_ID, layout=layout)
    lay = env.unwrapped.layout
    cells = set()
    for seed in range(150):
        obs, _ = env.reset(seed=seed)
        cell = lay.cell_of(obs[:2])
        assert lay.free[cell] and cell != lay.goal_cell and cell in lay.start_cells
        offset = np.abs(obs[:2] - lay.cell_center(cell))
        assert np.all(offset <= 0.1 * lay.cell_size + 1e-6) and np.all(obs[2:4] == 0)
        cells.add(cell)
    assert len(cells) >= min(len(lay.start_cells), 20)  # uniform draws cover the free cells


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shipped_mjcf_walls_match_the_grid(layout):
    lay = make_layout(layout)
    model = mujoco.MjModel.from_xml_path(str(asset_path(f"maze_{layout}.xml")))
    walls, others = [], []
    for g in range(model.ngeom):
        geom = model.geom(g)
        if geom.name.startswith("wall_"):
            assert int(geom.type[0]) == int(mujoco.mjtGeom.mjGEOM_BOX)
            walls.append((*geom.pos[:2], *geom.size[:2]))
        elif model.geom_contype[g] or model.geom_conaffinity[g]:
            others.append(geom.name)
    assert others == ["robot"]  # nothing else collides: no wall outside the grid
    assert np.allclose(sorted(walls), sorted(wall_boxes(lay)), atol=1e-6)
    assert np.isclose(model.geom("robot").size[0], lay.robot_radius)
    assert np.allclose(model.site("goal").pos[:2], lay.goal)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wall_boxes_cover_exactly_the_wall_cells(layout):
    lay = make_layout(layout)
    rows, cols = lay.shape
    covered = np.zeros((rows, cols), dtype=int)
    for cx, cy, hx, hy in wall_boxes(lay):
        for r in range(rows):
            for c in range(cols):
                x, y = lay.cell_center((r, c))
                covered[r, c] += abs(x - cx) < hx and abs(y - cy) < hy
    expected = np.array([[ch == WALL for ch in row] for row in lay.grid], dtype=int)
    assert np.array_equal(covered, expected)  # every wall cell once, no free cell


@pytest.mark.parametrize("layout", LAYOUTS)
def test_expert_solves_each_layout(layout):
    env = envs.make_env(ENV_ID, layout=layout)
    expert = envs.make_expert(ENV_ID, "scripted", env)
    assert expert.mode is None
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        expert.reset(seed, np.random.default_rng(seed))
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(expert.act(obs))
            done = term or trunc
        assert term and info["is_success"] and info["reward_success"] == 10.0, (layout, seed)
        assert np.hypot(*(info["position"] - env.unwrapped.layout.goal)) <= 0.1 * 0.5


def test_bad_layout_names_the_valid_ones():
    with pytest.raises(ValueError, match="layout 'huge'.*large"):
        envs.make_env(ENV_ID, layout="huge")
    with pytest.raises(ValueError, match="exactly one 'G'"):
        MazeLayout(name="x", grid=("###", "#O#", "###"))
    with pytest.raises(ValueError, match="cannot be reached"):
        MazeLayout(name="x", grid=("#####", "#G#O#", "#####"))


def test_weak_damping_makes_actions_accelerations_and_the_expert_adapts():
    """``damping=0.125`` (D4RL Maze2D's ~4 s speed decay): a held force keeps accelerating the
    robot past the default's 1 m/s, and the expert's feed-forward follows the model."""
    speeds = {}
    for damping in (None, 0.125):
        env = envs.make_env(ENV_ID, layout="large", damping=damping)
        env.reset(seed=0)
        u = env.unwrapped
        free = u.layout.free
        # A cell with two free cells to its right: 0.5 s of full force stays clear of the walls.
        cell = next((r, c) for r in range(free.shape[0]) for c in range(free.shape[1] - 2)
                    if free[r, c:c + 3].all())
        u.data.qpos[:] = u.layout.cell_center(cell)
        u.data.qvel[:] = 0.0
        for _ in range(10):
            obs, *_ = env.step(np.array([1.0, 0.0], dtype=np.float32))
        speeds[damping] = float(obs[2])
        expert = envs.make_expert(ENV_ID, "scripted", env)
        assert expert.damping == pytest.approx(env.unwrapped.model.dof_damping[0] / 2.0)
        assert pickle.loads(pickle.dumps(env.unwrapped)).model.dof_damping[0] == pytest.approx(
            2.0 if damping is None else damping)
    # Default: 1 - exp(-0.5 s / 0.25 s) of its 1 m/s; weak: ~4 m/s^2 for 0.5 s (terminal 16 m/s).
    assert speeds[None] == pytest.approx(1.0 - np.exp(-2.0), abs=0.05)
    assert speeds[0.125] == pytest.approx(2.0, abs=0.15)


def test_expert_solves_the_weakly_damped_maze():
    env = envs.make_env(ENV_ID, layout="u", damping=0.125)
    expert = envs.make_expert(ENV_ID, "scripted", env)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(expert.act(obs))
            done = term or trunc
        assert term and info["is_success"], seed


@pytest.mark.parametrize("damping", [-1.0, float("nan")])
def test_bad_damping_is_refused_in_one_line(damping):
    with pytest.raises(ValueError, match=r"damping=.*expected a finite joint damping >= 0"):
        envs.make_env(ENV_ID, layout="u", damping=damping)


def test_sparse_reward_counts_steps_at_the_goal_and_runs_to_the_time_limit():
    """D4RL Maze2D's scoring: 1 per step at the goal, no termination there. The expert arrives and
    stays, so its return is the steps left after arriving; the dense task ends on arrival."""
    dense = envs.make_env(ENV_ID, layout="u")
    sparse = envs.make_env(ENV_ID, layout="u", reward="sparse")
    lengths, returns = {}, {}
    for name, env in (("dense", dense), ("sparse", sparse)):
        expert = envs.make_expert(ENV_ID, "scripted", env)
        obs, _ = env.reset(seed=3)
        total, steps, term, trunc, arrived = 0.0, 0, False, False, None
        while not (term or trunc):
            obs, reward, term, trunc, info = env.step(expert.act(obs))
            steps += 1
            total += reward
            if name == "sparse":
                assert set(k for k in info if k.startswith("reward_")) == {"reward_at_goal"}
                assert reward == (1.0 if info["is_success"] else 0.0)
                if info["is_success"] and arrived is None:
                    arrived = steps
        lengths[name], returns[name] = steps, total
    assert lengths["sparse"] == env.spec.max_episode_steps and trunc and not term
    assert info["is_success"]  # the expert holds the goal to the end
    assert lengths["dense"] == arrived  # both runs are the same episode up to the arrival
    assert returns["sparse"] == pytest.approx(lengths["sparse"] - arrived + 1, abs=3)


def test_bad_reward_type_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"reward='shaped'; expected 'dense' or 'sparse'"):
        envs.make_env(ENV_ID, layout="u", reward="shaped")

"""In-process rollout workers: batched slots, one policy call per step, hangs, VecEnv, ordered commits."""

import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from agents.collect import CollectConfig, collect
from agents.rollout.actors import PolicyActorFactory, expert_actor_factory
from agents.rollout.env_factory import EnvFactory
from agents.rollout.pool import PoolConfig, RolloutError, RolloutPool
from agents.rollout.vec_env import RolloutVecEnv
from agents.rollout.worker import VecRolloutWorker
from agents.utils import episode_seed
from envs import make_env
from policies import make_policy, save_policy

REACH = "kinodiff/TinyReach-v0"
ARENA = "kinodiff/MultiRobotArena-v0"


def _jobs(n, seed=0):
    return [(i, episode_seed(seed, i)) for i in range(n)]


def test_episodes_do_not_depend_on_how_many_envs_a_worker_holds():
    factory = EnvFactory("kinodiff/PointObstacle-v0")
    expert = expert_actor_factory("kinodiff/PointObstacle-v0", "scripted")
    one = {r.index: r for r in VecRolloutWorker(factory, expert, num_envs=1).run_jobs(_jobs(6))}
    three = {r.index: r for r in VecRolloutWorker(factory, expert, num_envs=3).run_jobs(_jobs(6))}
    assert sorted(three) == list(range(6))
    for i in range(6):
        assert np.array_equal(one[i].steps["obs"], three[i].steps["obs"])
        assert np.array_equal(one[i].steps["action"], three[i].steps["action"])
        assert one[i].mode == three[i].mode  # the two-modal expert's side follows the index


@pytest.mark.parametrize("n_action_steps", [1, 4])
def test_64_robots_in_one_arena_take_one_batched_policy_call_per_control_step(
        tmp_path, n_action_steps):
    # One robot's policy: the arena's per-robot row is D = 6 + 4 K = 22 with K = 4 neighbours.
    policy = make_policy("mlp", obs_dim=22, action_dim=2, n_obs_steps=2, horizon=4,
                         n_action_steps=n_action_steps, hidden_dims=(32,))
    save_policy(policy, tmp_path / "p")
    steps, envs_per_worker = 12, 2
    factory = EnvFactory(ARENA, {"n_robots": 64, "max_episode_steps": steps})
    worker = VecRolloutWorker(factory, PolicyActorFactory(str(tmp_path / "p"), "mlp"),
                              num_envs=envs_per_worker)
    batch_sizes = []
    inner = worker.actor.policy.predict_action_chunk

    def counting(obs):
        batch_sizes.append(obs.shape[0])
        return inner(obs)

    worker.actor.policy.predict_action_chunk = counting
    results = worker.run_jobs(_jobs(envs_per_worker))
    assert [r.length for r in results] == [steps] * envs_per_worker  # untrained: runs to the limit
    # Both envs run in lockstep: one call every Ta control steps, each over 64 robots x 2 envs.
    assert len(batch_sizes) == steps // n_action_steps
    assert batch_sizes == [64 * envs_per_worker] * (steps // n_action_steps)
    assert all(r.steps["action"].shape == (steps, 128) for r in results)


def test_arena_actions_map_each_robot_row_to_its_own_action(tmp_path):
    policy = make_policy("mlp", obs_dim=22, action_dim=2, n_obs_steps=1, horizon=1,
                         n_action_steps=1, hidden_dims=(8,))
    save_policy(policy, tmp_path / "p")
    factory = EnvFactory(ARENA, {"n_robots": 3, "max_episode_steps": 2})
    [result] = VecRolloutWorker(factory, PolicyActorFactory(str(tmp_path / "p"), "mlp")).run_jobs(
        _jobs(1))
    obs = torch.as_tensor(result.steps["obs"][0].reshape(3, 1, 22))
    expected = policy.predict_action_chunk(obs)[:, 0].numpy().reshape(-1)  # robot-major
    assert np.allclose(result.steps["action"][0], expected, atol=1e-6)


class _HangAt(gym.Wrapper):
    """Sleeps (as a stuck simulator would) at step 3 of the episode reset with ``seed``, as long as
    ``hangs["left"]`` (shared by every copy in this process) is positive."""

    def __init__(self, env, seed, hangs):
        super().__init__(env)
        self.hang_seed, self.hangs, self.seed_now, self.t = seed, hangs, None, 0

    def reset(self, *, seed=None, options=None):
        self.seed_now, self.t = seed, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        if self.seed_now == self.hang_seed and self.t == 3 and self.hangs["left"] > 0:
            self.hangs["left"] -= 1
            time.sleep(60)
        return self.env.step(action)


def test_a_hung_env_step_is_reported_with_worker_and_env_index():
    hang, hangs = _jobs(3)[1], {"left": 10}
    factory = lambda: _HangAt(make_env(REACH), hang[1], hangs)  # noqa: E731
    pool = RolloutPool(factory, expert_actor_factory(REACH, "scripted"),
                       PoolConfig(envs_per_worker=2, step_timeout=0.3, max_attempts=2))
    with pytest.raises(RolloutError, match=r"episode 1 .*failed 2 times.*worker 0, env 1 "
                                           r"\(episode 1"):
        list(pool.run(_jobs(3)))
    assert hangs["left"] == 8  # tried twice, then reported


def test_a_transient_hang_is_retried_from_the_seed():
    hang, hangs = _jobs(3)[2], {"left": 1}
    factory = lambda: _HangAt(make_env(REACH), hang[1], hangs)  # noqa: E731
    pool = RolloutPool(factory, expert_actor_factory(REACH, "scripted"),
                       PoolConfig(envs_per_worker=1, step_timeout=0.3))
    got = {r.index: r for r in pool.run(_jobs(3))}
    clean = {r.index: r for r in RolloutPool(EnvFactory(REACH), expert_actor_factory(
        REACH, "scripted")).run(_jobs(3))}
    assert sorted(got) == [0, 1, 2] and hangs["left"] == 0
    assert all(np.array_equal(got[i].steps["obs"], clean[i].steps["obs"]) for i in range(3))


def _collect(tmp_path, name, **kw):
    cfg = dict(env=REACH, episodes=12, seed=3, out=str(tmp_path / name))
    return collect(CollectConfig(**{**cfg, **kw}), progress=False)


def test_store_content_is_the_same_for_any_number_of_envs_per_worker(tmp_path):
    a = _collect(tmp_path, "a.zarr", envs_per_worker=1)
    b = _collect(tmp_path, "b.zarr", envs_per_worker=5)
    assert a["episodes"] == b["episodes"] == 12
    assert a["content_sha256"] == b["content_sha256"]


class _StopAfter(RolloutPool):
    """A pool whose driver is interrupted (Ctrl-C) after ``n`` results."""

    def __init__(self, n, *args):
        super().__init__(*args)
        self.n = n

    def run(self, jobs, **kw):
        for k, result in enumerate(super().run(jobs, **kw)):
            if k == self.n:
                raise KeyboardInterrupt
            yield result


def test_an_interrupted_collection_resumes_to_the_clean_store(tmp_path):
    clean = _collect(tmp_path, "clean.zarr", envs_per_worker=3)
    pool = _StopAfter(7, EnvFactory(REACH), expert_actor_factory(REACH, "scripted"),
                      PoolConfig(envs_per_worker=3))
    with pytest.raises(KeyboardInterrupt):
        collect(CollectConfig(env=REACH, episodes=12, seed=3, out=str(tmp_path / "cut.zarr")),
                progress=False, pool=pool)
    resumed = _collect(tmp_path, "cut.zarr", resume=True)
    assert 0 < resumed["already_committed"] < 12
    assert resumed["episodes"] == 12 and resumed["new_episodes"] == 12 - resumed["already_committed"]
    assert resumed["content_sha256"] == clean["content_sha256"]


def test_sb3_ppo_learns_on_the_rollout_vec_env():
    venv = RolloutVecEnv(EnvFactory(REACH), PoolConfig(envs_per_worker=4))
    venv.seed(0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, verbose=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps == 256
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    obs = venv.reset()
    assert obs.shape == (4, 3)
    _, _, dones, infos = venv.step(np.zeros((4, 1), dtype=np.float32))
    assert len(infos) == 4 and dones.shape == (4,)
    venv.close()


@pytest.mark.slow
def test_a_sigkilled_driver_resumes_to_the_clean_store(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from agents.data.episode_store import EpisodeStore

    n, out = 600, tmp_path / "killed.zarr"
    code = ("import torch; torch.set_num_threads(1)\n"
            "from agents.collect import CollectConfig, collect\n"
            f"collect(CollectConfig(env={REACH!r}, episodes={n}, seed=3, out={str(out)!r}), "
            "progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if EpisodeStore.open(out).n_episodes > 0:
                    break
            except (FileNotFoundError, ValueError, KeyError):
                pass  # not created yet, or caught mid-creation
            time.sleep(0.05)
        assert proc.poll() is None, "the collection finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    cut = EpisodeStore.open(out).n_episodes
    assert 0 < cut < n
    resumed = _collect(tmp_path, "killed.zarr", episodes=n, resume=True)
    clean = _collect(tmp_path, "clean.zarr", episodes=n)
    assert resumed["already_committed"] == cut and resumed["episodes"] == n
    assert resumed["content_sha256"] == clean["content_sha256"]

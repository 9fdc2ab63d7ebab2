"""Ray rollout workers: same store for 0, 1 or 2 workers, a SIGKILLed worker, hangs, SB3 on Ray.

One embedded Ray instance serves the whole module (it takes seconds to start).
"""

import os
import signal
import sys

import numpy as np
import pytest
from stable_baselines3 import PPO

from agents.collect import CollectConfig, collect
from agents.data.episode_store import EpisodeStore
from agents.rollout.actors import expert_actor_factory
from agents.rollout.env_factory import EnvFactory
from agents.rollout.pool import PoolConfig, RolloutError, RolloutPool, init_ray
from agents.rollout.vec_env import RolloutVecEnv
from agents.utils import episode_id, episode_seed
from envs import make_env

pytestmark = pytest.mark.slow
REACH = "kinodiff/TinyReach-v0"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    import ray

    init_ray(num_cpus=2)
    # The hanging env below lives in this test module, which Ray workers cannot import: ship it
    # by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _collect(tmp_path, name, **kw):
    return collect(CollectConfig(env=REACH, episodes=40, seed=5, out=str(tmp_path / name), **kw),
                   progress=False)


def test_the_same_seed_list_gives_the_same_store_with_0_1_or_2_workers(tmp_path):
    hashes = {w: _collect(tmp_path, f"w{w}.zarr", workers=w, envs_per_worker=2)["content_sha256"]
              for w in (0, 1, 2)}
    assert hashes[0] == hashes[1] == hashes[2]


class _KillOne(RolloutPool):
    """Streams results; SIGKILLs worker 1 once ``after`` episodes have come back."""

    def __init__(self, after, *args):
        super().__init__(*args)
        self.after, self.killed = after, None

    def run(self, jobs, **kw):
        for k, result in enumerate(super().run(jobs, **kw)):
            if k == self.after:
                self.killed = self.worker_pids()[1]
                os.kill(self.killed, signal.SIGKILL)
            yield result


def test_a_sigkilled_worker_loses_no_episode_and_duplicates_none(tmp_path):
    n, seed = 200, 11
    clean = collect(CollectConfig(env=REACH, episodes=n, seed=seed, out=str(tmp_path / "clean.zarr")),
                    progress=False)
    pool = _KillOne(40, EnvFactory(REACH), expert_actor_factory(REACH, "scripted"),
                    PoolConfig(workers=2, envs_per_worker=2, max_restarts=2))
    try:
        summary = collect(CollectConfig(env=REACH, episodes=n, seed=seed,
                                        out=str(tmp_path / "killed.zarr")),
                          progress=False, pool=pool)
        assert pool.killed is not None and pool.killed not in pool.worker_pids()  # restarted
    finally:
        pool.close()
    store = EpisodeStore.open(tmp_path / "killed.zarr")
    table = store.table()
    assert store.n_episodes == n and len(set(table["episode_id"].tolist())) == n
    assert sorted(table["episode_id"].tolist()) == sorted(episode_id(seed, i) for i in range(n))
    assert store.n_steps == int(table["length"].sum())  # nothing torn: every row is accounted for
    reference = EpisodeStore.open(tmp_path / "clean.zarr")
    for e in range(n):
        a, b = store.episode(e), reference.episode(e)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert summary["content_sha256"] == clean["content_sha256"]


class _HangOn:
    """An env factory whose env sleeps forever at the first step of the episode with ``seed``."""

    def __init__(self, seed):
        self.seed = seed

    def __call__(self):
        import time

        import gymnasium as gym

        hang_seed = self.seed

        class Hang(gym.Wrapper):
            def reset(self, *, seed=None, options=None):
                self.now = seed
                return self.env.reset(seed=seed, options=options)

            def step(self, action):
                if self.now == hang_seed:
                    time.sleep(3600)
                return self.env.step(action)

        return Hang(make_env(REACH))


def test_a_hung_step_on_a_ray_worker_is_reported_with_worker_and_env_index():
    jobs = [(i, episode_seed(0, i)) for i in range(8)]
    pool = RolloutPool(_HangOn(jobs[1][1]), expert_actor_factory(REACH, "scripted"),
                       PoolConfig(workers=2, envs_per_worker=2, step_timeout=1.0, max_attempts=1))
    try:
        # Worker 0 takes the first call (episodes 0-7, slots 0 and 1): episode 1 runs in env 1.
        with pytest.raises(RolloutError, match=r"worker 0, env 1 \(episode 1, seed"):
            list(pool.run(jobs))
    finally:
        pool.close()


def test_sb3_ppo_learns_on_ray_workers():
    venv = RolloutVecEnv(EnvFactory(REACH), PoolConfig(workers=2, envs_per_worker=2))
    try:
        venv.seed(0)
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, verbose=0)
        model.learn(256)
        assert model.num_timesteps == 256
        assert venv.get_attr("spec")[3].id == REACH
    finally:
        venv.close()

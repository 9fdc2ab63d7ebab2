"""Collect expert demonstrations into a zarr episode store, resumable and exactly once.

Workers send finished episodes; this process is the one writer. It commits them in episode-index
order (holding early arrivals back), so the store's content is the same whatever the number of
workers, and a store interrupted at any point holds a prefix of the run that ``--resume``
continues. Episode ids are a fixed function of (run seed, episode index): an id already committed
or already seen is never written again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.data.episode_store import EpisodeStore
from agents.data.observations import chunk_steps_for, obs_specs
from agents.rollout.actors import expert_actor_factory
from agents.rollout.env_factory import EnvFactory
from agents.rollout.pool import PoolConfig, RolloutPool
from agents.rollout.worker import EpisodeResult
from agents.utils import episode_id, episode_seed, versions
from envs.registry import check_env_id


@dataclass(kw_only=True)
class CollectConfig:
    """Demonstration collection."""

    env: str = "kinodiff/PointObstacle-v0"
    """Task id."""
    expert: str = "scripted"
    """Expert: one of the task's own (e.g. ``scripted``) or ``sb3:[ALGO:]PATH`` (a trained SB3 model)."""
    episodes: int = 100
    """Episodes to collect (even numbers balance two-modal experts exactly)."""
    out: str = "data.zarr"
    """Path of the episode store to write."""
    seed: int = 0
    """Run seed; episode seeds and ids derive from it."""
    workers: int = 0
    """0 collects in this process; W > 0 uses W Ray actors."""
    envs_per_worker: int = 1
    """Envs each worker steps together."""
    ray_address: str | None = None
    """Join an existing Ray cluster."""
    step_timeout: float | None = 60.0
    """Seconds an env step may take before it is reported as hung and its episode re-run."""
    resume: bool = False
    """Append to an existing store, skipping episodes already committed."""
    keep_failed: bool = False
    """Also store episodes the expert failed."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task (e.g. ``start_spread``), recorded in the store."""
    action_noise: float = 0.0
    """DART (Laskey et al. 2017): standard deviation of Gaussian noise added to every action the
    env executes, while the store keeps the expert's clean action for each visited state. Mix
    noise levels in one store with several runs (different ``seed``, ``--resume``)."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes}; expected >= 1")
        self.env_factory()  # validates action_noise
        self.pool_config()  # validates workers, envs_per_worker and step_timeout

    def env_factory(self) -> EnvFactory:
        """What every worker builds its envs from."""
        return EnvFactory(self.env, self.env_kwargs, action_noise=self.action_noise)

    def pool_config(self) -> PoolConfig:
        """Where the rollouts run."""
        return PoolConfig(workers=self.workers, envs_per_worker=self.envs_per_worker,
                          ray_address=self.ray_address, step_timeout=self.step_timeout)


def collect(config: CollectConfig, progress: bool = True, pool: RolloutPool | None = None) -> dict:
    """Run the expert and commit its episodes to ``config.out``; returns a summary dict.

    Args:
        config: What to collect.
        progress: Show a progress bar.
        pool: Run on this pool (built from the same env and expert) instead of a new one.
    """
    check_env_id(config.env)
    env_factory = config.env_factory()
    probe = env_factory()
    actor_factory = expert_actor_factory(config.env, config.expert)
    actor_factory(probe)  # fail fast on an unknown expert, before any file is touched
    out = Path(config.out)
    if out.exists() and not config.resume:
        raise FileExistsError(f"dataset {str(out)!r} already exists; pass --resume to extend it "
                              "or choose a new --out")
    if config.resume and out.exists():
        store = EpisodeStore.open(out, mode="a")
        if store.env_id != config.env:
            store.close()
            raise ValueError(f"dataset {str(out)!r} holds {store.env_id}; expected {config.env}")
    else:
        # Images (a Dict observation) get one array per key and shorter time chunks.
        specs = {**obs_specs(probe.observation_space),
                 "action": (probe.action_space.shape, "float32"), "reward": ((), "float32")}
        store = EpisodeStore.create(
            out, specs, env_id=config.env, chunk_steps=chunk_steps_for(specs),
            provenance={"collect": asdict(config), "versions": versions(), "argv": sys.argv},
        )
    probe.close()
    done = set(store.table()["episode_id"].tolist())
    jobs = [(i, episode_seed(config.seed, i)) for i in range(config.episodes)
            if episode_id(config.seed, i) not in done]
    if pool is not None and pool.env_factory != env_factory:
        raise ValueError(f"the pool runs {pool.env_factory}; expected {env_factory}")
    own_pool = pool is None
    with store:
        pool = pool or RolloutPool(env_factory, actor_factory, config.pool_config())
        try:
            counts = commit_in_order(store, pool.run(jobs, progress=progress, desc="collect"),
                                     [i for i, _ in jobs], config.seed, config.keep_failed, done)
        finally:
            if own_pool:
                pool.close()
    final = EpisodeStore.open(out)
    return {"out": str(out), "new_episodes": counts["kept"], "skipped_failed": counts["failed"],
            "duplicates_dropped": counts["duplicates"], "already_committed": len(done),
            "episodes": final.n_episodes, "steps": final.n_steps,
            "content_sha256": final.content_hash()}


def commit_in_order(store: EpisodeStore, results: Iterable[EpisodeResult], order: list[int],
                    run_seed: int, keep_failed: bool, committed: set[int]) -> dict[str, int]:
    """Commit ``results`` (any arrival order) to ``store`` in the episode-index order ``order``.

    An episode whose id is in ``committed`` or was already taken is dropped, so a re-delivered
    episode is never written twice. Returns counts: kept, failed (skipped), duplicates.
    """
    position = {index: k for k, index in enumerate(order)}
    held: dict[int, EpisodeResult] = {}
    seen = set(committed)
    counts = {"kept": 0, "failed": 0, "duplicates": 0}
    nxt = 0
    for res in results:
        eid = episode_id(run_seed, res.index)
        if eid in seen or res.index not in position:
            counts["duplicates"] += 1
            continue
        seen.add(eid)
        held[res.index] = res
        while nxt < len(order) and order[nxt] in held:
            ready = held.pop(order[nxt])
            nxt += 1
            if not ready.success and not keep_failed:
                counts["failed"] += 1
                continue
            store.add_episode(ready.steps, episode_id=episode_id(run_seed, ready.index),
                              seed=ready.seed, source=ready.source, success=ready.success)
            counts["kept"] += 1
    return counts

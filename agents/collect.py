"""Collect expert demonstrations into a zarr episode store, resumable and exactly once."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.data.episode_store import EpisodeStore
from agents.rollout.actors import expert_actor_factory
from agents.rollout.env_factory import EnvFactory
from agents.rollout.pool import run_episodes
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
    ray_address: str | None = None
    """Join an existing Ray cluster."""
    resume: bool = False
    """Append to an existing store, skipping episodes already committed."""
    keep_failed: bool = False
    """Also store episodes the expert failed."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task (e.g. ``start_spread``), recorded in the store."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes}; expected >= 1")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}; expected >= 0")


def collect(config: CollectConfig, progress: bool = True) -> dict:
    """Run the expert and commit its episodes to ``config.out``; returns a summary dict."""
    check_env_id(config.env)
    env_factory = EnvFactory(config.env, config.env_kwargs)
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
        obs_shape = probe.observation_space.shape
        act_shape = probe.action_space.shape
        store = EpisodeStore.create(
            out,
            {"obs": (obs_shape, "float32"), "action": (act_shape, "float32"),
             "reward": ((), "float32")},
            env_id=config.env,
            provenance={"collect": asdict(config), "versions": versions(), "argv": sys.argv},
        )
    probe.close()
    done = set(store.table()["episode_id"].tolist())
    jobs = [(i, episode_seed(config.seed, i)) for i in range(config.episodes)
            if episode_id(config.seed, i) not in done]
    kept = failed = 0
    with store:
        for res in run_episodes(env_factory, actor_factory, jobs, workers=config.workers,
                                ray_address=config.ray_address, desc="collect", progress=progress):
            if not res.success and not config.keep_failed:
                failed += 1
                continue
            store.add_episode(res.steps, episode_id=episode_id(config.seed, res.index),
                              seed=res.seed, source=res.source, success=res.success)
            kept += 1
    final = EpisodeStore.open(out)
    return {"out": str(out), "new_episodes": kept, "skipped_failed": failed,
            "already_committed": len(done), "episodes": final.n_episodes, "steps": final.n_steps,
            "content_sha256": final.content_hash()}

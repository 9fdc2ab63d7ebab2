"""One rollout worker: builds its env and actor from factories and runs seeded episodes.

The same class runs in-process (``--workers 0``) and as a Ray actor, so collection, evaluation and
(later) RL share one path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np


@dataclass(kw_only=True)
class EpisodeResult:
    """Everything one episode produced."""

    index: int
    """Episode index within the run."""
    seed: int
    """Env reset seed."""
    source: str
    """Who acted (``expert:scripted``, a policy run, ...)."""
    steps: dict[str, np.ndarray]
    """Time-major ``obs`` [T, Do], ``action`` [T, Da], ``reward`` [T]."""
    success: bool
    """``info["is_success"]`` at the last step."""
    diverged: bool
    """The simulation blew up and the env ended the episode."""
    episode_return: float
    """Sum of rewards."""
    length: int
    """Steps."""
    mode: str | None
    """The task's mode label (e.g. passing side), if it reports one."""
    positions: np.ndarray
    """[T+1, 2] robot positions, when the task reports ``info["position"]``."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per network call of the actor."""
    frames: list[np.ndarray] = field(default_factory=list)
    """Rendered frames, when asked for."""


class RolloutWorker:
    """Runs episodes of one env with one actor.

    Args:
        env_factory: Picklable callable returning a fresh env (never a live env).
        actor_factory: Picklable callable ``env -> Actor``.
    """

    def __init__(self, env_factory: Callable[[], gym.Env], actor_factory: Callable) -> None:
        self.env = env_factory()
        self.actor = actor_factory(self.env)

    def run_episode(self, index: int, seed: int, render: bool = False) -> EpisodeResult:
        """Run one episode from ``reset(seed=seed)`` to termination or truncation."""
        obs, info = self.env.reset(seed=seed)
        self.actor.reset(index, seed)
        self.actor.pop_latencies()
        obs_list, act_list, rew_list = [], [], []
        positions = [info["position"]] if "position" in info else []
        frames = [self.env.render()] if render else []
        ret, done = 0.0, False
        while not done:
            action = np.asarray(self.actor.act(obs), dtype=np.float32)
            obs_list.append(obs)
            act_list.append(action)
            obs, reward, terminated, truncated, info = self.env.step(action)
            rew_list.append(reward)
            ret += reward
            done = terminated or truncated
            if "position" in info:
                positions.append(info["position"])
            if render:
                frames.append(self.env.render())
        return EpisodeResult(
            index=index,
            seed=seed,
            source=self.actor.source,
            steps={
                "obs": np.asarray(obs_list, dtype=np.float32),
                "action": np.asarray(act_list, dtype=np.float32),
                "reward": np.asarray(rew_list, dtype=np.float32),
            },
            success=bool(info.get("is_success", False)),
            diverged=bool(info.get("diverged", False)),
            episode_return=float(ret),
            length=len(act_list),
            mode=info.get("mode"),
            positions=np.asarray(positions, dtype=np.float32).reshape(-1, 2),
            latencies=self.actor.pop_latencies(),
            frames=frames,
        )

    def run_episodes(self, jobs: list[tuple[int, int]]) -> list[EpisodeResult]:
        """Run ``(index, seed)`` jobs in order."""
        return [self.run_episode(i, s) for i, s in jobs]

    def close(self) -> None:
        """Close the env."""
        self.env.close()

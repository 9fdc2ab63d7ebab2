"""The rollout worker: M envs built from a factory, one batch actor, seeded episodes or RL steps.

The same class runs in-process (``--workers 0``) and as a Ray actor, and serves collection,
evaluation (``run_jobs``) and RL (``reset_envs`` / ``step_envs``, behind the SB3 ``VecEnv`` in
``agents.rollout.vec_env``): one path, not three.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from agents.data.observations import stack_observations
from agents.rollout.batch_actors import BatchActor, PerSlotBatchActor


class StepTimeoutError(RuntimeError):
    """An env step ran longer than the allowed time; names the worker, env slot and episode."""

    def __init__(self, worker: int, env_index: int, episode_index: int | None, seed: int | None,
                 seconds: float) -> None:
        self.worker, self.env_index = worker, env_index
        self.episode_index, self.seed, self.seconds = episode_index, seed, seconds
        super().__init__(f"env step hung: worker {worker}, env {env_index} (episode "
                         f"{episode_index}, seed {seed}) ran over {seconds:.1f} s")


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
    """Time-major ``obs`` [T, Do] (or ``obs.<key>`` per key of a Dict observation), ``action``
    [T, Da], ``reward`` [T]."""
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
    max_coverage: float | None = None
    """Largest ``info["coverage"]`` over the episode, reset included, when the task reports one
    (PushT: the goal-area overlap; the Diffusion Policy paper and LeRobot score episodes by it)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per network call of the actor."""
    frames: list[np.ndarray] = field(default_factory=list)
    """Rendered frames, when asked for."""
    worker: int = 0
    """Index of the worker that ran it."""


class _Episode:
    """The running record of one slot's episode."""

    def __init__(self, index: int, seed: int, obs: np.ndarray, info: dict, frame) -> None:
        self.index, self.seed, self.obs = index, seed, obs
        self.obs_list: list[np.ndarray] = []
        self.act_list: list[np.ndarray] = []
        self.rew_list: list[float] = []
        self.positions = [info["position"]] if "position" in info else []
        self.max_coverage: float | None = info.get("coverage")
        self.frames = [frame] if frame is not None else []


class VecRolloutWorker:
    """M envs and one batch actor; runs ``(episode index, seed)`` jobs across its env slots.

    Args:
        env_factory: Picklable callable returning a fresh env (never a live env).
        actor_factory: Picklable callable ``env -> Actor``, optionally with ``batch(envs)`` returning
            a :class:`~agents.rollout.batch_actors.BatchActor`; ``None`` for RL stepping only.
        num_envs: Env slots M.
        worker_index: This worker's index in its pool (for reports).
        step_timeout: Seconds one env step may take in-process before it is interrupted and
            reported (``SIGALRM``, main thread only; Ray workers are watched by the pool instead).
    """

    def __init__(self, env_factory: Callable[[], gym.Env], actor_factory: Callable | None,
                 num_envs: int = 1, worker_index: int = 0, step_timeout: float | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}; expected >= 1")
        self.worker_index, self.step_timeout = worker_index, step_timeout
        self.envs = [env_factory() for _ in range(num_envs)]
        self.actor: BatchActor | None = None
        if actor_factory is not None:
            batch = getattr(actor_factory, "batch", None)
            self.actor = batch(self.envs) if batch else PerSlotBatchActor(actor_factory, self.envs)
        # What is stepping now, read by ``heartbeat`` from another thread: (slot, index, seed, t0).
        self._stepping: tuple[int, int | None, int | None, float] | None = None
        self._last_obs: list[Any] = [None] * num_envs

    @property
    def num_envs(self) -> int:
        """Env slots M."""
        return len(self.envs)

    def pid(self) -> int:
        """Process id (tests kill workers by it)."""
        return os.getpid()

    def node_id(self) -> str | None:
        """The Ray node this worker runs on (hex id), or ``None`` outside Ray."""
        import sys

        ray = sys.modules.get("ray")  # never import Ray into an in-process worker
        if ray is None or not ray.is_initialized():
            return None
        return ray.get_runtime_context().get_node_id()

    def heartbeat(self) -> dict[str, Any] | None:
        """The env step in progress: worker, env slot, episode, seed, seconds so far; or ``None``."""
        return self._beat(self._stepping)

    def _beat(self, now: tuple[int, int | None, int | None, float] | None) -> dict[str, Any] | None:
        if now is None:
            return None
        slot, index, seed, t0 = now
        return {"worker": self.worker_index, "env_index": slot, "episode_index": index,
                "seed": seed, "seconds": time.monotonic() - t0, "answered_at": time.time()}

    def watch(self, limit: float, wait: float) -> dict[str, Any] | None:
        """Block up to ``wait`` s; return the heartbeat the moment an env step runs over ``limit`` s.

        Served from a second thread beside a running ``run_jobs``: it sleeps until the step in
        progress would cross ``limit`` (so a hang is seen ``limit`` s after it began, not at the
        next poll) and looks again every ``limit / 4`` s between steps. ``None``: no hang so far.
        """
        deadline = time.monotonic() + wait
        while True:
            now, t = self._stepping, time.monotonic()
            if now is not None and t - now[3] > limit:
                return self._beat(now)
            if t >= deadline:
                return None
            until = now[3] + limit if now is not None else t + limit / 4
            time.sleep(max(min(until, deadline) - t, 0.0) + 1e-4)

    def _step(self, slot: int, action: np.ndarray, index: int | None = None,
              seed: int | None = None):
        self._stepping = (slot, index, seed, time.monotonic())
        try:
            return self.envs[slot].step(action)
        finally:
            self._stepping = None

    @contextmanager
    def _watchdog(self):
        """Interrupt an env step that runs over ``step_timeout`` (in-process, main thread only).

        A periodic ``SIGALRM`` (every quarter of the timeout) checks the step in progress, so a
        step costs no system call; the handler raises :class:`StepTimeoutError` inside the step.
        """
        limit = self.step_timeout
        if limit is None or threading.current_thread() is not threading.main_thread():
            yield
            return

        def check(signum, frame):
            now = self._stepping
            if now is not None and time.monotonic() - now[3] > limit:
                self._stepping = None
                slot, index, seed, t0 = now
                raise StepTimeoutError(self.worker_index, slot, index, seed, time.monotonic() - t0)

        previous = signal.signal(signal.SIGALRM, check)
        signal.setitimer(signal.ITIMER_REAL, limit / 4, limit / 4)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    # -- collection and evaluation ------------------------------------------------------------
    def run_jobs(self, jobs: Sequence[tuple[int, int]], render: bool = False) -> list[EpisodeResult]:
        """Run ``(index, seed)`` jobs across the slots; results in completion order.

        Slots take jobs in order and a slot that finishes takes the next one, so which slot runs
        which episode (and hence each episode) is a fixed function of the job list.
        """
        if self.actor is None:
            raise ValueError("this worker was built without an actor_factory; expected one to run "
                             "episodes")
        queue, results = deque(jobs), []
        running: dict[int, _Episode] = {}

        def start(slot: int) -> None:
            index, seed = queue.popleft()
            obs, info = self.envs[slot].reset(seed=int(seed))
            self.actor.reset(slot, index, seed)
            running[slot] = _Episode(index, seed, obs, info,
                                     self.envs[slot].render() if render else None)

        with self._watchdog():
            for slot in range(self.num_envs):
                if queue:
                    start(slot)
            self._run(running, queue, start, results, render)
        return results

    def _run(self, running: dict[int, _Episode], queue: deque, start: Callable, results: list,
             render: bool) -> None:
        """Step every running slot (one batched ``act`` per control step) until all are done."""
        while running:
            slots = sorted(running)
            actions = self.actor.act([running[s].obs for s in slots], slots)
            for slot, action in zip(slots, actions, strict=True):
                ep = running[slot]
                action = np.asarray(action, dtype=np.float32)
                ep.obs_list.append(ep.obs)
                ep.act_list.append(action)
                ep.obs, reward, terminated, truncated, info = self._step(slot, action, ep.index, ep.seed)
                ep.rew_list.append(reward)
                if "position" in info:
                    ep.positions.append(info["position"])
                if "coverage" in info:
                    ep.max_coverage = max(ep.max_coverage or 0.0, float(info["coverage"]))
                if render:
                    ep.frames.append(self.envs[slot].render())
                if terminated or truncated:
                    results.append(self._finish(slot, running.pop(slot), info))
                    if queue:
                        start(slot)

    def _finish(self, slot: int, ep: _Episode, info: dict) -> EpisodeResult:
        rewards = np.asarray(ep.rew_list, dtype=np.float32)
        return EpisodeResult(
            index=ep.index,
            seed=ep.seed,
            source=self.actor.source,
            steps={**stack_observations(ep.obs_list),
                   "action": np.asarray(ep.act_list, dtype=np.float32),
                   "reward": rewards},
            success=bool(info.get("is_success", False)),
            diverged=bool(info.get("diverged", False)),
            episode_return=float(sum(ep.rew_list)),
            length=len(ep.act_list),
            mode=info.get("mode"),
            positions=np.asarray(ep.positions, dtype=np.float32).reshape(-1, 2),
            max_coverage=ep.max_coverage,
            latencies=self.actor.pop_latencies(slot),
            frames=ep.frames,
            worker=self.worker_index,
        )

    # -- RL stepping (the SB3 VecEnv) ----------------------------------------------------------
    def reset_envs(self, seeds: Sequence[int | None], options: Sequence[dict] | None = None):
        """Reset every env; returns (observations, infos)."""
        obs, infos = [], []
        for slot, env in enumerate(self.envs):
            kwargs = {"options": options[slot]} if options and options[slot] else {}
            o, info = env.reset(seed=seeds[slot], **kwargs)
            self._last_obs[slot] = o
            obs.append(o)
            infos.append(info)
        return obs, infos

    def step_envs(self, actions: np.ndarray):
        """Step every env once, resetting those that end (SB3's auto-reset).

        Returns:
            ``(obs, rewards, terminated, truncated, infos)``; for an env that ended, ``obs`` is the
            first observation of its next episode and its info holds ``terminal_observation`` and
            ``reset_info``.
        """
        obs, rewards, terms, truncs, infos = [], [], [], [], []
        with self._watchdog():
            for slot, env in enumerate(self.envs):
                o, r, term, trunc, info = self._step(slot, actions[slot])
                if term or trunc:
                    info = dict(info, terminal_observation=o)
                    o, info["reset_info"] = env.reset()
                self._last_obs[slot] = o
                obs.append(o)
                rewards.append(r)
                terms.append(term)
                truncs.append(trunc)
                infos.append(info)
        return obs, np.asarray(rewards, dtype=np.float32), np.asarray(terms), np.asarray(truncs), infos

    def get_env_attr(self, name: str, slots: Sequence[int]) -> list[Any]:
        """``getattr(env, name)`` of each slot (through wrappers, as SB3 does)."""
        return [getattr(self.envs[s], name) if hasattr(self.envs[s], name)
                else self.envs[s].get_wrapper_attr(name) for s in slots]

    def set_env_attr(self, name: str, value: Any, slots: Sequence[int]) -> None:
        """``setattr(env.unwrapped, name, value)`` on each slot."""
        for s in slots:
            setattr(self.envs[s].unwrapped, name, value)

    def call_env(self, method: str, slots: Sequence[int], args: tuple, kwargs: dict) -> list[Any]:
        """``env.method(*args, **kwargs)`` on each slot."""
        return [getattr(self.envs[s], method)(*args, **kwargs) for s in slots]

    def env_is_wrapped(self, wrapper_class: type, slots: Sequence[int]) -> list[bool]:
        """Whether each slot's env is wrapped by ``wrapper_class``."""
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(self.envs[s], wrapper_class) for s in slots]

    def close(self) -> None:
        """Close the envs."""
        for env in self.envs:
            env.close()


class RolloutWorker(VecRolloutWorker):
    """One env and one actor: :class:`VecRolloutWorker` with M = 1, run episode by episode."""

    def __init__(self, env_factory: Callable[[], gym.Env], actor_factory: Callable) -> None:
        super().__init__(env_factory, actor_factory, num_envs=1)

    @property
    def env(self) -> gym.Env:
        """The worker's env."""
        return self.envs[0]

    def run_episode(self, index: int, seed: int, render: bool = False) -> EpisodeResult:
        """Run one episode from ``reset(seed=seed)`` to termination or truncation."""
        return self.run_jobs([(index, seed)], render=render)[0]

    def run_episodes(self, jobs: list[tuple[int, int]]) -> list[EpisodeResult]:
        """Run ``(index, seed)`` jobs in order."""
        return self.run_jobs(jobs)

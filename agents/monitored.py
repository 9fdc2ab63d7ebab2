"""Rollouts of a monitored policy: scores on every chunk, the calibrated alarm, hand-overs.

The loop is kept here rather than in ``agents.rollout`` because it records per-chunk score traces
and hand-overs that ``EpisodeResult`` does not carry; it runs in-process (one env, one policy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.plan import PlannerActor
from agents.rollout.env_factory import EnvFactory
from envs import make_expert
from planners.costs import cost_preset
from planners.registry import PLANNERS
from policies import load_policy
from policies.uncertainty import (
    SCORES,
    Calibration,
    MonitoredPolicy,
    SafeStop,
    UncertaintyEstimator,
    load_estimator,
)


@dataclass(kw_only=True)
class MonitoredEpisode:
    """One monitored episode."""

    index: int
    """Episode index."""
    seed: int
    """Env reset seed."""
    success: bool
    """``info["is_success"]`` at the last step."""
    length: int
    """Control steps."""
    trace: np.ndarray
    """[T_chunks, S] raw scores, one row per predicted chunk (columns ``SCORES``)."""
    chunk_steps: list[int]
    """Control step of each chunk."""
    alarm_step: int | None
    """First control step at which the calibrated combined alarm fired (None: never or uncalibrated)."""
    handovers: list[dict[str, Any]] = field(default_factory=list)
    """Hand-overs to the fallback (step, combined score, threshold, raw scores, the fallback's first
    action and the steps it served)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per scored chunk prediction (K samples and every score)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the trace as nested lists)."""
        return {"index": self.index, "seed": self.seed, "success": self.success,
                "length": self.length, "alarm_step": self.alarm_step,
                "handovers": self.handovers, "chunk_steps": self.chunk_steps,
                "trace": np.round(self.trace, 6).tolist()}


class _Fallback:
    """A fallback controller for one env: ``act(obs)`` plus a per-episode ``reset``."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray],
                 reset: Callable[[int, int], None] | None = None) -> None:
        self.act, self._reset = act, reset

    def reset(self, index: int, seed: int) -> None:
        if self._reset is not None:
            self._reset(index, seed)


class _PlannerFallback:
    """A registered planner in receding horizon, built at its first action of each episode.

    Built late because a planner copies the MuJoCo model: by then the episode's reset has applied
    its shift (scaled physics, moved obstacles or goal), so the planner predicts the real scene.
    """

    def __init__(self, name: str, env_id: str, env: gym.Env) -> None:
        if name not in PLANNERS:
            raise ValueError(f"unknown planner {name!r} for the fallback; expected one of "
                             f"{sorted(PLANNERS)}")
        cost_preset(env_id)  # fail fast for a task without a cost preset, naming the tasks
        self._make = lambda: PlannerActor(env, env_id, name, None, {})
        self._actor: PlannerActor | None = None
        self._seed = 0

    def reset(self, index: int, seed: int) -> None:
        """Drop the last episode's planner; the next one is seeded with ``seed``."""
        self._actor, self._seed = None, seed

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The first action of a fresh plan from the env's current state."""
        if self._actor is None:
            self._actor = self._make()
            self._actor.reset(0, self._seed)
        return self._actor.act(obs)


def make_fallback(spec: str, env_id: str, env: gym.Env) -> _Fallback | _PlannerFallback:
    """``stop`` (zero action), ``planner:NAME`` (a registered planner) or ``expert:NAME``."""
    if spec == "stop":
        return _Fallback(SafeStop(int(np.prod(env.action_space.shape))))
    if spec.startswith("planner:"):
        return _PlannerFallback(spec.split(":", 1)[1], env_id, env)
    if spec.startswith("expert:"):
        expert = make_expert(env_id, spec.split(":", 1)[1], env)
        return _Fallback(expert.act,
                         lambda i, s: expert.reset(i, np.random.default_rng(s)))
    raise ValueError(f"unknown fallback {spec!r}; expected 'stop', 'planner:NAME' or 'expert:NAME'")


def load_monitored(policy_dir: str | Path, threads: int = 1
                   ) -> tuple[UncertaintyEstimator, Calibration | None]:
    """Load a saved policy and its uncertainty estimator (and calibration, if fitted)."""
    if threads:
        torch.set_num_threads(threads)
    policy, _ = load_policy(policy_dir)
    return load_estimator(policy_dir, policy)


def run_monitored_episodes(
    env_factory: EnvFactory,
    estimator: UncertaintyEstimator,
    calibration: Calibration | None,
    jobs: list[tuple[int, int]],
    *,
    fallback: str = "stop",
    enabled: bool = False,
    progress: bool = True,
    desc: str = "monitored",
) -> list[MonitoredEpisode]:
    """Run ``(index, seed)`` jobs with the monitored policy.

    Args:
        env_factory: Builds the env (optionally under a shift preset).
        estimator: Estimator around the trained policy.
        calibration: Thresholds; None records scores only.
        jobs: Episode indices and reset seeds.
        fallback: ``stop``, ``planner:NAME`` or ``expert:NAME``.
        enabled: Hand over to the fallback on the alarm (False: the bare policy keeps control and
            the alarm is only recorded).
        progress: Show a progress bar.
        desc: Progress bar label.
    """
    env = env_factory()
    fb = make_fallback(fallback, env_factory.env_id, env)
    monitored = MonitoredPolicy(estimator, calibration, fb.act, enabled=enabled)
    out = []
    try:
        for index, seed in tqdm(jobs, desc=desc, disable=not progress, leave=False):
            obs, info = env.reset(seed=seed)
            monitored.reset(seed)
            fb.reset(index, seed)
            latencies, steps, done = [], 0, False
            while not done:
                pending = monitored.chunk_pending
                t0 = time.perf_counter()
                action = monitored.select_action(obs)
                if pending:
                    latencies.append(time.perf_counter() - t0)
                obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
                steps += 1
                done = terminated or truncated
            out.append(MonitoredEpisode(
                index=index, seed=seed, success=bool(info.get("is_success", False)), length=steps,
                trace=monitored.episode_trace(0), chunk_steps=list(monitored.chunk_steps),
                alarm_step=monitored.alarm_steps.get(0),
                handovers=[{k: v for k, v in asdict(h).items() if k != "row"}
                           for h in monitored.handovers],
                latencies=latencies))
    finally:
        env.close()
    return out


__all__ = ["SCORES", "MonitoredEpisode", "load_monitored", "make_fallback", "run_monitored_episodes"]

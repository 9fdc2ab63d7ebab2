"""Run and evaluate a planner on a task, beside the task's expert and a random policy.

The planner acts through the same rollout workers as ``kinodiff eval`` (one path): each step it
reads the env's full physics state (never writing it), takes the goal from the task's cost preset,
and executes the first action of its plan. With ``baselines`` the task's own expert and a uniform
random policy run on the same seeds, which defines the normalized score (D4RL style)::

    score = 100 * (R_planner - R_random) / (R_expert - R_random)

from mean episode returns measured in the same run, so 100 means "as good as the expert".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.evaluate import summarize
from agents.rollout.actors import expert_actor_factory
from agents.rollout.env_factory import EnvFactory
from agents.rollout.pool import run_episodes
from agents.utils import episode_seed, write_json_atomic
from envs import ENV_SPECS
from envs.registry import check_env_id
from envs.wrappers.maze_goal_sequence import MazeGoalSequence
from planners.base import env_state
from planners.costs import cost_preset
from planners.registry import PLANNERS, make_planner


@dataclass(kw_only=True)
class PlanConfig:
    """A planner evaluation."""

    env: str = "kinodiff/Maze-v0"
    """Task id (kinodiff or a Gymnasium MuJoCo task with a cost preset)."""
    planner: str = "hierarchical"
    """Registered planner name."""
    episodes: int = 10
    """Episodes per actor; seeds derive from ``seed`` and are recorded."""
    seed: int = 1000
    """Evaluation seed."""
    cost: str | None = None
    """Cost preset of the task (default: its first)."""
    goals: int = 1
    """Maze only: goals to visit in order (> 1 wraps the task in MazeGoalSequence)."""
    baselines: bool = True
    """Also run the task's expert and a random policy on the same seeds (normalized score)."""
    workers: int = 0
    """0 runs in this process; W > 0 uses W Ray actors."""
    out: str | None = None
    """Report folder (default: runs/plan/<planner>)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Planner config fields, e.g. ``{"samples": 128}``."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments (e.g. ``layout``)."""

    def __post_init__(self) -> None:
        check_env_id(self.env)
        if self.planner not in PLANNERS:
            raise ValueError(f"unknown planner {self.planner!r}; expected one of {sorted(PLANNERS)}")
        if self.episodes < 1 or self.goals < 1:
            raise ValueError(f"episodes={self.episodes} and goals={self.goals}; expected >= 1")
        if self.goals > 1 and self.env != "kinodiff/Maze-v0":
            raise ValueError(f"goals={self.goals} needs env kinodiff/Maze-v0; got {self.env}")
        cost_preset(self.env, self.cost)  # fail fast naming the presets

    @property
    def out_dir(self) -> Path:
        """The report folder."""
        return Path(self.out or f"runs/plan/{self.planner}")


@dataclass(frozen=True)
class GoalSequenceFactory:
    """A picklable env factory: the task, wrapped in :class:`MazeGoalSequence` when ``goals > 1``."""

    base: EnvFactory
    """Builds the task."""
    goals: int = 1
    """Goals per episode."""

    def __call__(self) -> gym.Env:
        """A fresh env."""
        env = self.base()
        return MazeGoalSequence(env, self.goals) if self.goals > 1 else env


class PlannerActor:
    """Executes the first action of a fresh plan every step (receding horizon)."""

    def __init__(self, env: gym.Env, env_id: str, planner: str, cost: str | None,
                 settings: dict[str, Any]) -> None:
        self.env = env
        self.planner = make_planner(planner, env, cost, **settings)
        self.preset = cost_preset(env_id, cost)
        self.source = f"planner:{planner}"
        self._state = env_state(env)
        self._latencies: list[float] = []

    def reset(self, episode_index: int, seed: int) -> None:
        """Reseed the planner with the episode seed and drop its warm start."""
        self.planner.reset(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Plan from the env's current state; the time of each plan is recorded."""
        t0 = time.perf_counter()
        state = env_state(self.env, self._state)
        plan = self.planner.plan(state, self.preset.goal(self.env.unwrapped, obs))
        self._latencies.append(time.perf_counter() - t0)
        return plan.actions[0].astype(np.float32)

    def pop_latencies(self) -> list[float]:
        """Plan times since the last pop, seconds."""
        out, self._latencies = self._latencies, []
        return out


class RandomActor:
    """Uniform random actions in the action space, seeded per episode (the score's 0 reference)."""

    source = "random"

    def __init__(self, env: gym.Env) -> None:
        self.space = env.action_space
        self._rng = np.random.default_rng(0)

    def reset(self, episode_index: int, seed: int) -> None:
        """Reseed with the episode seed."""
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One uniform sample."""
        return self._rng.uniform(self.space.low, self.space.high).astype(self.space.dtype)

    def pop_latencies(self) -> list[float]:
        """Not timed."""
        return []


@dataclass(frozen=True)
class PlannerActorFactory:
    """Picklable ``env -> PlannerActor``: each worker builds its own planner."""

    env_id: str
    planner: str
    cost: str | None
    settings: dict[str, Any]

    def __call__(self, env: gym.Env) -> PlannerActor:
        """A planner actor for ``env``."""
        return PlannerActor(env, self.env_id, self.planner, self.cost, self.settings)


def normalized_score(ret: float, random_ret: float, expert_ret: float) -> float:
    """``100 * (ret - random_ret) / (expert_ret - random_ret)``; e.g. the expert's own return -> 100."""
    if expert_ret == random_ret:
        raise ValueError(f"expert return {expert_ret} equals random return {random_ret}; the score "
                         "is undefined")
    return 100.0 * (ret - random_ret) / (expert_ret - random_ret)


def run_plan(config: PlanConfig, progress: bool = True) -> dict[str, Any]:
    """Evaluate the planner (and the baselines); write report.json/report.md; return the summary."""
    from agents.plan_trace import plot_trace, trace_episode
    from agents.report import write_report

    seeds = [episode_seed(config.seed, i) for i in range(config.episodes)]
    jobs = list(enumerate(seeds))
    env_factory = GoalSequenceFactory(EnvFactory(config.env, dict(config.env_kwargs)), config.goals)
    actors: dict[str, Any] = {config.planner: PlannerActorFactory(config.env, config.planner, config.cost,
                                                                  dict(config.settings))}
    experts = ENV_SPECS[config.env].experts if config.env in ENV_SPECS else {}
    if config.baselines:
        if experts and config.goals == 1:
            actors["expert"] = expert_actor_factory(config.env, next(iter(experts)))
        actors["random"] = RandomActor
    summaries, episodes = {}, {}
    for name, factory in actors.items():
        results = sorted(run_episodes(env_factory, factory, jobs, workers=config.workers,
                                      desc=f"plan {name}", progress=progress), key=lambda r: r.index)
        summaries[name], episodes[name] = summarize(results, seeds), results
    score = None
    if "expert" in summaries:
        score = normalized_score(summaries[config.planner]["return_mean"],
                                 summaries["random"]["return_mean"], summaries["expert"]["return_mean"])
    summary = {"env_id": config.env, "planner": config.planner, "normalized_score": score,
               "success_rate": summaries[config.planner]["success_rate"], "config": asdict(config)}
    env = env_factory()
    layout = getattr(env.unwrapped, "layout", None)
    files = write_report(config.out_dir, summaries, episodes, layout, None,
                         env.metadata.get("render_fps", 20), extra=summary)
    if hasattr(layout, "free"):
        # The plan trace: episode 0 again, in this process, with its plans kept.
        planner = make_planner(config.planner, env, config.cost, **config.settings)
        trace = trace_episode(env, planner, cost_preset(config.env, config.cost).goal, seeds[0])
        files["plan_trace"] = plot_trace(trace, layout, config.out_dir / "plan_trace.png",
                                         f"{config.planner} on {config.env} {config.env_kwargs or ''}")
    env.close()
    summary["files"] = {k: str(v) for k, v in files.items()}
    summary["report"] = str(files["md"])
    summary["summaries"] = summaries
    write_json_atomic(config.out_dir / "plan.json", summary)
    return summary

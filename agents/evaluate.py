"""Evaluate a trained policy on a task over a fixed, recorded list of seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.rollout.actors import PolicyActorFactory
from agents.rollout.batch_actors import robots_per_env
from agents.rollout.env_factory import EnvFactory
from agents.rollout.pool import PoolConfig, run_episodes
from agents.rollout.worker import EpisodeResult, RolloutWorker
from agents.train.checkpoint import latest_checkpoint
from agents.utils import episode_seed
from envs import make_env
from envs.registry import check_env_id
from envs.wrappers.domain_randomization import shift_spec
from planners.registry import PLANNERS
from policies.constraints import METHODS as CONSTRAINT_METHODS
from policies.io import read_policy_config
from policies.registry import policy_class


@dataclass(kw_only=True)
class EvalConfig:
    """Policy evaluation."""

    run: str
    """Run folder (its latest checkpoint) or a saved policy folder."""
    env: str = "kinodiff/PointObstacle-v0"
    """Task id."""
    episodes: int = 50
    """Episodes; their seeds are derived from ``seed`` and recorded in the report."""
    seed: int = 1000
    """Evaluation seed (kept apart from collection seeds)."""
    workers: int = 0
    """0 evaluates in this process; W > 0 uses W Ray actors."""
    envs_per_worker: int = 1
    """Envs each worker steps together, one batched policy call per step over all their robots
    (with more than one, the policy's sampling noise depends on which episodes share a batch)."""
    ray_address: str | None = None
    """Join an existing Ray cluster."""
    step_timeout: float | None = 60.0
    """Seconds an env step may take before it is reported as hung and its episode re-run."""
    video: bool = True
    """Render the first episode to a video."""
    threads: int = 1
    """torch threads per worker (policy latency is measured with this many)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task (e.g. ``start_spread``)."""
    shift: str | None = None
    """Evaluate under a domain-randomization preset (mass, friction, actuator_gain, obs_noise, all,
    obstacle_shift, goal_shift: the last two move the task's obstacles / goal outside the training
    support)."""
    constraint_method: str = "none"
    """Enforce the task's ``constraint_spec`` while sampling: ``none``, ``clip``, ``project``,
    ``guidance``, ``cbf`` or ``final`` (diffusion policies; ``policies.constraints``)."""
    uncertainty: bool = False
    """Also evaluate the calibrated uncertainty alarm (``kinodiff calibrate`` first) on nominal and
    ``shift`` episodes, bare and with ``fallback``: uncertainty.md / .json and reliability.png."""
    fallback: str = "stop"
    """With ``uncertainty``: who takes over on the alarm, ``stop`` (zero action), ``planner:NAME``
    (a registered planner, e.g. ``planner:mppi``) or ``expert:NAME``."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes}; expected >= 1")
        if self.constraint_method not in CONSTRAINT_METHODS:
            raise ValueError(f"constraint_method={self.constraint_method!r} is invalid; expected one of "
                             f"{list(CONSTRAINT_METHODS)}")
        if self.shift is not None:
            shift_spec(self.shift)
        check_fallback_spec(self.fallback)
        PoolConfig(workers=self.workers, envs_per_worker=self.envs_per_worker,
                   step_timeout=self.step_timeout)  # validates them


def check_fallback_spec(spec: str) -> None:
    """Refuse a fallback that is not ``stop``, ``planner:NAME`` or ``expert:NAME``, naming it."""
    kind, _, name = spec.partition(":")
    if spec != "stop" and not (kind in ("planner", "expert") and name):
        raise ValueError(f"fallback={spec!r}; expected 'stop', 'planner:NAME' or 'expert:NAME'")
    if kind == "planner" and name not in PLANNERS:
        raise ValueError(f"fallback planner {name!r} is unknown; expected one of {sorted(PLANNERS)}")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def resolve_policy_dir(run: str | Path) -> Path:
    """The policy folder of a run (its latest checkpoint) or the folder itself."""
    run = Path(run)
    if (run / "policy.json").is_file():
        return run
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no policy in {str(run)!r}; expected a run folder with "
                                "checkpoints/latest.json or a folder with policy.json")
    return ckpt


def check_policy_fits_env(policy_dir: Path, env_id: str, env_kwargs: dict | None = None) -> None:
    """Refuse a policy whose shapes differ from the task's, naming both.

    A multi-robot task fits a policy of one robot's shapes: the policy serves each robot.
    """
    doc = read_policy_config(policy_dir)
    env = make_env(env_id, **(env_kwargs or {}))
    c = doc["config"]
    trained_on = doc.get("metadata", {}).get("env_id", "unknown")
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):  # images: the policy's fields must be the env's
        try:
            wanted = policy_class(doc["policy"]).config_class.observation_fields(
                {k: tuple(s.shape) for k, s in space.spaces.items()})
        finally:
            env.close()
        got = {k: (tuple(c[k]) if isinstance(c.get(k), list) else c.get(k)) for k in wanted}
        if got != wanted or c["action_dim"] != int(np.prod(env.action_space.shape)):
            raise ValueError(f"policy {str(policy_dir)!r} (trained on {trained_on}) has {got}, "
                             f"action_dim={c['action_dim']}; {env_id} needs {wanted}, action_dim="
                             f"{int(np.prod(env.action_space.shape))}")
        return
    if c.get("obs_encoder", "state") != "state":
        env.close()
        raise ValueError(f"policy {str(policy_dir)!r} (trained on {trained_on}) takes {c['obs_encoder']} "
                         f"observations; {env_id} has a flat observation (expected a dict one)")
    obs_dim = int(np.prod(env.observation_space.shape))
    act_dim = int(np.prod(env.action_space.shape))
    try:
        robots_per_env(c["obs_dim"], c["action_dim"], env)
    except ValueError:
        raise ValueError(
            f"policy {str(policy_dir)!r} (trained on {trained_on}) expects obs_dim={c['obs_dim']}, "
            f"action_dim={c['action_dim']}; {env_id} has obs_dim={obs_dim}, action_dim={act_dim} "
            "(expected the same, or N robots of them)") from None
    finally:
        env.close()


def summarize(results: list[EpisodeResult], seeds: list[int]) -> dict[str, Any]:
    """Success rate with a Wilson 95% interval, returns, lengths, latency and mode coverage."""
    n = len(results)
    successes = sum(r.success for r in results)
    lat_ms = np.array([x for r in results for x in r.latencies]) * 1e3
    modes = [r.mode for r in results if r.success and r.mode is not None]
    labels = sorted({r.mode for r in results if r.mode is not None})
    coverage = {m: (modes.count(m) / len(modes) if modes else 0.0) for m in labels}
    max_cov = [r.max_coverage for r in results if r.max_coverage is not None]
    return {
        "episodes": n,
        "seeds": seeds,
        "success_rate": successes / n,
        "success_ci95": list(wilson_interval(successes, n)),
        "return_mean": float(np.mean([r.episode_return for r in results])),
        "return_std": float(np.std([r.episode_return for r in results])),
        "length_mean": float(np.mean([r.length for r in results])),
        "diverged": int(sum(r.diverged for r in results)),
        "latency_ms_p50": float(np.percentile(lat_ms, 50)) if lat_ms.size else None,
        "latency_ms_p99": float(np.percentile(lat_ms, 99)) if lat_ms.size else None,
        "mode_coverage": coverage,
        # PushT-style scoring (Diffusion Policy, LeRobot): each episode's best goal overlap.
        "max_coverage_mean": float(np.mean(max_cov)) if max_cov else None,
    }


def evaluate(config: EvalConfig, progress: bool = True) -> tuple[dict[str, Any], list[EpisodeResult]]:
    """Run the evaluation; returns (summary, episode results sorted by index).

    The video episode (index 0, when asked for) is rendered in this process after the others.
    """
    check_env_id(config.env)
    policy_dir = resolve_policy_dir(config.run)
    check_policy_fits_env(policy_dir, config.env, config.env_kwargs)
    seeds = [episode_seed(config.seed, i) for i in range(config.episodes)]
    env_factory = EnvFactory(config.env, config.env_kwargs, config.shift)
    actor_factory = PolicyActorFactory(str(policy_dir), f"policy:{config.run}", config.threads,
                                       config.constraint_method)
    results = sorted(
        run_episodes(env_factory, actor_factory, list(enumerate(seeds)), workers=config.workers,
                     ray_address=config.ray_address, desc=f"eval {Path(config.run).name}",
                     progress=progress, envs_per_worker=config.envs_per_worker,
                     step_timeout=config.step_timeout),
        key=lambda r: r.index)
    summary = summarize(results, seeds)
    summary.update(env_id=config.env, policy_dir=str(policy_dir), shift=config.shift)
    if config.video:
        render_factory = EnvFactory(config.env, config.env_kwargs, config.shift, "rgb_array")
        worker = RolloutWorker(render_factory, actor_factory)
        results[0].frames = worker.run_episode(0, seeds[0], render=True).frames
        worker.close()
    return summary, results

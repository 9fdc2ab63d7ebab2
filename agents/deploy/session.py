"""``kinodiff deploy``: an exported policy driving a robot through the control loop.

Loads only onnxruntime and numpy in this process (the simulated robot runs MuJoCo in its own).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.deploy.loop import ControlLoop, LoopConfig
from agents.deploy.policy_process import ProcessChunkWorker
from agents.deploy.robot import make_robot
from agents.deploy.runtime import OnnxPolicy
from agents.seeds import episode_seed
from planners.safety_filter import SafetyFilter, SafetyFilterConfig


@dataclass(kw_only=True)
class DeployConfig:
    """A deployment run."""

    policy: str
    """Exported ``.onnx`` policy (its sidecar beside it)."""
    robot: str
    """Robot URI: ``sim://ENV_ID`` runs the task in a separate simulator process."""
    hz: float = 0.0
    """Control rate; 0 uses the rate the policy was trained at (from the sidecar)."""
    episodes: int = 1
    """Episodes to run (robots that can start episodes); their seeds derive from ``seed``."""
    seed: int = 1000
    """Seed of the episode seeds (the same derivation as ``kinodiff eval``) and of the noise."""
    cycles: int = 0
    """Stop after this many control ticks (0: when the episodes end)."""
    threads: int = 1
    """onnxruntime threads of the policy."""
    prefetch: int = 2
    """Request the next chunk when this many actions of the current one remain."""
    realtime_priority: int = 0
    """SCHED_FIFO priority of the control-loop thread (0: normal scheduling; needs CAP_SYS_NICE);
    the policy process gets one less; a simulated robot process gets the same."""
    policy_process: bool = True
    """Compute chunks in a separate policy process (no GIL shared with the loop); else a thread
    (which a real-time loop thread would starve of the GIL, so that pair is refused)."""

    def __post_init__(self) -> None:
        if self.hz < 0:
            raise ValueError(f"hz={self.hz}; expected > 0 (or 0 for the policy's own rate)")
        if self.episodes < 0 or self.cycles < 0:
            raise ValueError(f"episodes={self.episodes}, cycles={self.cycles}; expected >= 0")
        if self.episodes == 0 and self.cycles == 0:
            raise ValueError("episodes=0 and cycles=0; expected at least one to be > 0")
        if self.realtime_priority and not self.policy_process:
            raise ValueError(f"realtime_priority={self.realtime_priority} with policy_process=False: a "
                             "real-time loop starves a policy thread of the GIL; expected --policy-process")
        if not Path(self.policy).suffix == ".onnx":
            raise ValueError(f"policy={self.policy!r}; expected an .onnx file from `kinodiff export`")


def safety_filter_for(spec: dict[str, Any]) -> SafetyFilter:
    """The safety filter built from a sidecar's action limits."""
    action = spec["action"]
    return SafetyFilter(SafetyFilterConfig(low=action["low"], high=action["high"],
                                           rate_limit=action.get("rate_limit")))


def deploy(config: DeployConfig) -> dict[str, Any]:
    """Run the deployment; returns the loop's statistics with a success summary.

    Ctrl-C triggers the e-stop (the robot stops before the process exits).
    """
    policy = OnnxPolicy(config.policy, threads=config.threads, seed=config.seed)
    robot = make_robot(config.robot, realtime_priority=config.realtime_priority)
    try:
        if config.episodes and not hasattr(robot, "reset"):
            raise ValueError(f"robot {config.robot!r} cannot start episodes; expected --episodes 0 "
                             "with --cycles N")
        hz = config.hz or policy.control_hz
        worker = ProcessChunkWorker(config.policy, (policy.horizon, policy.action_dim), config.threads,
                                    config.seed, max(config.realtime_priority - 1, 0)) \
            if config.policy_process else None
        loop = ControlLoop(robot, policy, safety_filter_for(policy.spec),
                           LoopConfig(hz=hz, prefetch=config.prefetch,
                                      realtime_priority=config.realtime_priority), worker)
        seeds = [episode_seed(config.seed, i) for i in range(config.episodes)]
        previous = signal.signal(signal.SIGINT, lambda *_: (loop.estop("SIGINT"), _interrupt()))
        try:
            stats = loop.run(cycles=config.cycles or None, seeds=seeds or None)
        finally:
            signal.signal(signal.SIGINT, previous)
            loop.close()
        stats["robot"] = robot.stats() if hasattr(robot, "stats") else {}
    finally:
        if hasattr(robot, "close"):
            robot.close()
    eps = stats["episodes"]
    stats.update(policy=config.policy, robot_uri=config.robot, seed=config.seed,
                 success_rate=(sum(e["success"] for e in eps) / len(eps)) if eps else None)
    return stats


def _interrupt() -> None:
    raise KeyboardInterrupt


def print_summary(stats: dict[str, Any], json_path: str | None = None) -> None:
    """A short human summary; the full statistics as JSON to ``json_path`` (when given)."""
    import json

    j, m = stats["jitter_us"], stats["deadline_misses"]
    print(f"{stats['cycles']} ticks at {stats['hz']:g} Hz: jitter p50 {j['p50']:.0f} us, "
          f"p99 {j['p99']:.0f} us; "
          f"deadline misses {m} ({100 * stats['deadline_miss_fraction']:.2f}%); "
          f"watchdog holds {sum(stats['holds'].values())}; "
          f"safety-filter interventions {stats['safety_filter']['interventions']}")
    if stats["episodes"]:
        n = len(stats["episodes"])
        print(f"{n} episodes: success {stats['success_rate']:.2f} "
              f"({sum(e['success'] for e in stats['episodes'])}/{n})")
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stats, indent=2) + "\n")
        print(f"wrote {path}")

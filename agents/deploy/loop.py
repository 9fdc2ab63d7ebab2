"""The fixed-rate control loop: chunks computed ahead, a safety filter, a watchdog and an e-stop.

Each tick, at an absolute deadline: read the robot's observation, collect a finished chunk, ask for
the next chunk ``prefetch`` actions before the current one's Ta run out (computed in a thread, so
inference never blocks a tick), then send the chunk's action for this tick through the safety
filter, or hold the robot.

A chunk computed from the observation taken after ``n`` commands covers commands ``n, n+1, ...``;
the action sent is the one for the number of commands executed since, so a chunk that arrives a
tick late skips the action already overtaken by time (a held robot does not move, so holding
does not consume actions).

The watchdog holds the robot when the observation is older than ``stale_after_periods``, when a
chunk request has run longer than ``inference_timeout_periods``, when the chunk is used up, or when
the safety filter refuses a command (non-finite). The e-stop (``estop``) stops the robot at once,
from any thread, and latches: no command is sent until ``clear_estop``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agents.deploy.chunks import ChunkWorker
from agents.deploy.clock import FixedRateClock
from agents.deploy.robot import Robot
from planners.safety_filter import SafetyFilter

# Reasons to hold; "waiting_for_policy" (before an episode's first chunk) is not a watchdog event.
WATCHDOG_REASONS = ("stale_observation", "inference_overrun", "chunk_exhausted", "non_finite_command",
                    "policy_error")


class ChunkPolicy(Protocol):
    """What the loop needs from a policy (``OnnxPolicy`` is one)."""

    n_action_steps: int
    horizon: int

    def reset(self, seed: int | None = None) -> None:
        """Start an episode."""
        ...

    def observe(self, obs: np.ndarray) -> np.ndarray:
        """Append [Do]; return the history [To, Do]."""
        ...

    def predict_chunk(self, obs: np.ndarray) -> np.ndarray:
        """History [To, Do] -> chunk [H, Da]."""
        ...


@dataclass(kw_only=True)
class LoopConfig:
    """Timing and watchdog settings of the control loop."""

    hz: float
    """Control rate (ticks per second); one action per tick."""
    spin_s: float = 5e-4
    """Busy-wait this long before each deadline (sleep before that)."""
    prefetch: int = 2
    """Request the next chunk when this many of the current chunk's Ta actions remain."""
    stale_after_periods: float = 2.0
    """Hold when the last observation is older than this many periods."""
    inference_timeout_periods: float = 1.5
    """Hold when a chunk request has run longer than this many periods (checked once a tick, so a
    frozen policy is caught at most ``ceil(1.5) + 1 = 3`` ticks after its request)."""
    obs_timeout_periods: float = 0.5
    """How long one ``read_observation`` may wait, in periods."""
    switch_interval_s: float = 1e-4
    """Python's GIL switch interval while the loop runs (default 5 ms would let another thread's
    Python code delay a tick by that much)."""
    max_events: int = 10_000
    """Hold / e-stop events kept in the log."""
    realtime_priority: int = 0
    """SCHED_FIFO priority (1-99) of the loop thread while it runs, as robot controllers use
    (ros2_control, libfranka); 0 keeps normal scheduling. Needs CAP_SYS_NICE on Linux; when refused
    the loop runs normally and says so in its statistics. The loop sleeps most of each period, so
    it takes little from other processes."""

    def __post_init__(self) -> None:
        if not self.hz > 0:
            raise ValueError(f"hz={self.hz}; expected > 0")
        if self.prefetch < 0:
            raise ValueError(f"prefetch={self.prefetch}; expected >= 0")
        for name in ("stale_after_periods", "inference_timeout_periods", "obs_timeout_periods",
                     "switch_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected > 0")
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority={self.realtime_priority}; expected 0 (off) to 99")

    @property
    def period(self) -> float:
        """Seconds per tick."""
        return 1.0 / self.hz


def _enter_realtime(priority: int) -> tuple[str, Any]:
    """Switch the calling thread to SCHED_FIFO; returns (status, what to restore)."""
    if priority == 0:
        return "off", None
    if not hasattr(os, "sched_setscheduler"):
        return "unsupported on this platform", None
    old = (os.sched_getscheduler(0), os.sched_getparam(0))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:  # no CAP_SYS_NICE: run with normal scheduling
        return f"refused ({exc.strerror})", None
    return f"SCHED_FIFO {priority}", old


def _leave_realtime(old: Any) -> None:
    if old is not None:
        os.sched_setscheduler(0, old[0], old[1])


def _pct(values: list[float], q: float, scale: float = 1.0) -> float | None:
    return float(np.percentile(values, q) * scale) if values else None


class ControlLoop:
    """Drives a robot with a chunked policy at a fixed rate.

    Args:
        robot: The robot (``EpisodicRobot`` when ``run`` is given seeds).
        policy: The policy (its ``observe`` keeps the history; chunks come from ``worker``).
        safety: Safety filter every command passes through.
        config: Timing and watchdog settings.
        worker: Computes chunks beside the loop (default: ``policy.predict_chunk`` in a thread;
            ``policy_process.ProcessChunkWorker`` runs it in its own process).
    """

    def __init__(self, robot: Robot, policy: ChunkPolicy, safety: SafetyFilter, config: LoopConfig,
                 worker: Any = None) -> None:
        if config.prefetch >= policy.n_action_steps:
            raise ValueError(f"prefetch={config.prefetch}; expected < n_action_steps={policy.n_action_steps}")
        self.robot, self.policy, self.safety, self.config = robot, policy, safety, config
        self.worker = worker or ChunkWorker(policy.predict_chunk)
        self._lock = threading.Lock()  # orders e-stop against command sends
        self._estopped = False
        self.events: list[dict[str, Any]] = []
        self.commands_blocked_by_estop = 0

    # ---- e-stop -------------------------------------------------------------------------------
    def estop(self, reason: str = "software") -> None:
        """Stop the robot now and latch: no command is sent until ``clear_estop``. Thread-safe."""
        with self._lock:
            first = not self._estopped
            self._estopped = True
            self.robot.stop()
        if first:
            self._log(kind="estop", reason=reason)

    def clear_estop(self) -> None:
        """Release the e-stop latch; the loop waits for a fresh chunk before commanding again."""
        with self._lock:
            was = self._estopped
            self._estopped = False
        if was:
            self._log(kind="estop_cleared")

    @property
    def estopped(self) -> bool:
        """The e-stop latch is set."""
        return self._estopped

    def _log(self, **event: Any) -> None:
        if len(self.events) < self.config.max_events:
            self.events.append({"t": time.perf_counter(), **event})

    # ---- the loop -----------------------------------------------------------------------------
    def run(self, cycles: int | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
        """Run until ``cycles`` ticks have passed or the episodes of ``seeds`` are done.

        Args:
            cycles: Ticks to run (``None``: until the episodes end).
            seeds: Episode seeds; the robot is reset with each in turn (needs ``robot.reset``).

        Returns:
            Statistics: jitter, deadline misses, latencies, holds, safety-filter and episode results.
        """
        if cycles is None and not seeds:
            raise ValueError("run() needs cycles or seeds; expected at least one")
        c, period = self.config, self.config.period
        seeds = list(seeds or [])
        episodes: list[dict[str, Any]] = []
        st = _EpisodeState(self.policy.n_action_steps)
        if seeds:
            st.start(seeds[0], self.policy, self.safety, self.worker)
            self.robot.reset(seeds[0])
        else:
            self.policy.reset()
            self.safety.reset()
        clock = FixedRateClock(c.hz, c.spin_s)
        jitter, work, tick_latency, action_age, chunk_s = [], [], [], [], []
        misses = tick = 0
        holds = dict.fromkeys(WATCHDOG_REASONS, 0)
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(c.switch_interval_s)
        realtime, old_sched = _enter_realtime(c.realtime_priority)
        try:
            while cycles is None or tick < cycles:
                deadline, woke = clock.wait()
                jitter.append(woke - deadline)
                tick += 1
                obs = self.robot.read_observation(c.obs_timeout_periods * period)
                t_obs = time.perf_counter()
                if self._estopped:  # keep watching the robot, but plan and command nothing
                    st.reset_plan()  # after a clear, command only from a chunk computed afterwards
                    st.holding = "estop"
                    work.append(time.perf_counter() - woke)
                    continue
                new_obs = obs is not None and obs.seq != st.last_seq
                if obs is not None:
                    st.last_obs_t = t_obs  # the robot answers: not stale
                if new_obs:
                    st.last_seq = obs.seq
                    st.ep_return += obs.reward if st.commands else 0.0  # no reward before acting
                    if seeds and obs.done:
                        episodes.append(st.result(obs))
                        if len(episodes) == len(seeds):
                            break
                        seed = seeds[len(episodes)]
                        st.start(seed, self.policy, self.safety, self.worker)
                        obs = self.robot.reset(seed)
                        st.last_seq = obs.seq
                        t_obs = st.last_obs_t = time.perf_counter()
                    # A held robot repeats its observation: the history grows only when it moves.
                    st.history = self.policy.observe(obs.values)
                self._collect(st, chunk_s)
                # Without a plan (start, after a refused chunk or an e-stop) a repeated observation
                # will do: a held robot has not moved, and it sends nothing new until commanded.
                due = new_obs and st.commands - st.origin >= st.ta - c.prefetch
                if obs is not None and not self.worker.busy and st.history is not None and (
                        st.chunk is None or due):
                    self.worker.submit(st.history, (st.episode, st.commands))
                    st.request_obs_t, st.request_tick = t_obs, tick
                reason, command = self._decide(st, t_obs)
                if reason is None:
                    with self._lock:
                        if self._estopped:
                            self.commands_blocked_by_estop += 1
                        else:
                            self.robot.send_command(command)
                            t_sent = time.perf_counter()
                            st.commands += 1
                            st.holding = None
                            tick_latency.append(t_sent - t_obs)
                            action_age.append(t_sent - st.chunk_obs_t)
                elif reason != st.holding:
                    if st.holding is None:
                        self.robot.hold()
                    st.holding = reason
                    if reason in holds:
                        holds[reason] += 1
                        busy = self.worker.busy
                        self._log(kind="hold", reason=reason, tick=tick, episode=st.episode,
                                  request_tick=st.request_tick if busy else None,
                                  request_age_periods=(time.perf_counter() - self.worker.submitted_at)
                                  / period if busy else None)
                end = time.perf_counter()
                work.append(end - woke)
                misses += end > deadline + period
        finally:
            sys.setswitchinterval(old_switch)
            _leave_realtime(old_sched)
        n = len(jitter)
        missed = misses + clock.skipped
        return {
            "cycles": n, "hz": c.hz, "scheduling": realtime, "deadline_misses": missed,
            "deadline_miss_fraction": missed / max(n + clock.skipped, 1), "skipped_ticks": clock.skipped,
            "jitter_us": {"p50": _pct(jitter, 50, 1e6), "p99": _pct(jitter, 99, 1e6),
                          "max": float(max(jitter) * 1e6) if jitter else None},
            "tick_work_us": {"p50": _pct(work, 50, 1e6), "p99": _pct(work, 99, 1e6)},
            "obs_to_command_us": {"p50": _pct(tick_latency, 50, 1e6), "p99": _pct(tick_latency, 99, 1e6)},
            "action_obs_age_ms": {"p50": _pct(action_age, 50, 1e3), "p99": _pct(action_age, 99, 1e3)},
            "chunk_ms": {"count": len(chunk_s), "p50": _pct(chunk_s, 50, 1e3), "p99": _pct(chunk_s, 99, 1e3)},
            "holds": holds, "commands_blocked_by_estop": self.commands_blocked_by_estop,
            "safety_filter": self.safety.summary(), "episodes": episodes,
            "events": self.events[:200],
        }

    def _collect(self, st: _EpisodeState, chunk_s: list[float]) -> None:
        result = self.worker.poll()
        if result is None or result.tag[0] != st.episode:
            return  # nothing new, or a chunk for an episode that has ended
        chunk_s.append(result.seconds)
        if result.chunk is None:
            st.policy_error = result.error
            self._log(kind="policy_error", message=result.error)
            return
        st.policy_error = None
        st.chunk, st.origin, st.chunk_obs_t = result.chunk, result.tag[1], st.request_obs_t

    def _decide(self, st: _EpisodeState, now: float) -> tuple[str | None, np.ndarray | None]:
        """The reason to hold this tick, or ``(None, command)``."""
        c, period = self.config, self.config.period
        if now - st.last_obs_t > c.stale_after_periods * period:
            return "stale_observation", None
        if self.worker.busy and now - self.worker.submitted_at > c.inference_timeout_periods * period:
            return "inference_overrun", None
        if st.chunk is None:
            return ("policy_error" if st.policy_error else "waiting_for_policy"), None
        index = st.commands - st.origin
        if index >= len(st.chunk):
            return "chunk_exhausted", None
        command = self.safety.filter(st.chunk[index])
        if command is None:
            st.chunk = None  # a chunk with a non-finite action is not trusted again: ask anew
            return "non_finite_command", None
        return None, command

    def close(self) -> None:
        """Stop the chunk thread."""
        self.worker.close()


class _EpisodeState:
    """Per-episode bookkeeping of the loop."""

    def __init__(self, ta: int) -> None:
        self.episode = 0
        self.seed: int | None = None
        self.ta = ta
        self.last_seq: int | None = None
        self.commands = 0
        self.ep_return = 0.0
        self.last_obs_t = time.perf_counter()
        self.request_obs_t = self.chunk_obs_t = 0.0
        self.request_tick = 0
        self.history: np.ndarray | None = None
        self.holding: str | None = None
        self.policy_error: str | None = None
        self.reset_plan()

    def reset_plan(self) -> None:
        self.chunk: np.ndarray | None = None
        self.origin = 0

    def start(self, seed: int, policy: ChunkPolicy, safety: SafetyFilter, worker: Any) -> None:
        self.episode += 1
        self.seed = seed
        worker.reset(seed)
        self.commands, self.ep_return, self.history, self.holding = 0, 0.0, None, None
        self.reset_plan()
        policy.reset(seed)
        safety.reset()

    def result(self, obs: Any) -> dict[str, Any]:
        return {"seed": self.seed, "success": bool(obs.success), "length": self.commands,
                "return": self.ep_return}

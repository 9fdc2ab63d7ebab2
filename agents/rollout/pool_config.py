"""How a rollout pool runs: its settings, and how a job list is cut into worker calls."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class PoolConfig:
    """Where and how rollouts run."""

    workers: int = 0
    """0 runs in this process; W > 0 starts W Ray actors."""
    envs_per_worker: int = 1
    """Envs M each worker steps together (one batched policy call per control step)."""
    ray_address: str | None = None
    """Join this Ray cluster instead of starting a local one."""
    cpus_per_worker: float = 1.0
    """Ray CPUs reserved per worker."""
    episodes_per_call: int = 0
    """Episodes per worker call; 0 picks ``4 * envs_per_worker``."""
    step_timeout: float | None = 60.0
    """Seconds one env step may take before it is reported as hung (None: no limit)."""
    max_restarts: int = 3
    """Restarts Ray grants each worker actor."""
    max_attempts: int = 3
    """Runs of one episode (its first included) before the rollout gives up."""
    spread: bool = False
    """Place Ray workers on as many nodes as possible (Ray's SPREAD strategy) instead of packing."""
    dashboard: bool = False
    """Start the embedded Ray with its dashboard, on 127.0.0.1 (needs ``ray[default]``)."""

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}; expected 0 (in-process) or a positive count")
        for name in ("envs_per_worker", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if self.episodes_per_call < 0 or self.max_restarts < 0 or self.cpus_per_worker <= 0:
            raise ValueError(f"episodes_per_call={self.episodes_per_call}, max_restarts="
                             f"{self.max_restarts}, cpus_per_worker={self.cpus_per_worker}; expected "
                             ">= 0, >= 0 and > 0")
        if self.step_timeout is not None and self.step_timeout <= 0:
            raise ValueError(f"step_timeout={self.step_timeout}; expected seconds > 0 or None")

    @property
    def per_call(self) -> int:
        """Episodes per worker call."""
        return self.episodes_per_call or 4 * self.envs_per_worker

    @property
    def uses_ray(self) -> bool:
        """Whether the workers are Ray actors."""
        return self.workers > 0 or self.ray_address is not None


def split_calls(jobs: list, per_call: int, workers: int, min_call: int = 1) -> list[list]:
    """Jobs in calls that shrink towards the end of the list (guided self-scheduling).

    Each call takes ``ceil(remaining / (2 * workers))`` jobs, at most ``per_call`` and at least
    ``min_call`` and a multiple of it (a worker's env count: other sizes leave envs idle in the
    call's last round); one worker gets calls of ``per_call``. Big calls first keep
    the calls few; small calls last let the worker that runs fastest take more of the tail, so
    the workers finish together. With fixed calls the last one leaves the other workers idle for
    up to a call's time: measured with 2 workers on 2 cores, the two ran the same 10 episodes in
    times up to 13% apart.
    """
    calls, start, n = [], 0, len(jobs)
    while start < n:
        remaining = n - start
        size = per_call if workers == 1 else min(per_call, -(-remaining // (2 * workers)))
        size = min(remaining, max(min_call, size // min_call * min_call))
        calls.append(jobs[start:start + size])
        start += size
    return calls


CALLS_QUEUED_PER_WORKER = 2
"""Calls a Ray worker holds at once: the one it runs and the next, so it never waits on the driver."""


def assign_calls(calls, load: list[int], workers: list[int],
                 depth: int = CALLS_QUEUED_PER_WORKER) -> list[tuple[int, list]]:
    """Hand ``calls`` (a deque, consumed from the left) to ``workers``, least loaded first.

    Round by round, each worker below the current level gets one call, up to ``depth`` held calls;
    ``load`` (calls each worker holds, indexed by worker) is updated in place. Filling one worker to
    ``depth`` before the next would give the first worker 2 of 2 calls while the second idles, or
    8 of the first 14 episodes of 20 (a 1.82x ceiling for 2 workers).

    Returns:
        ``(worker, call)`` pairs in the order to send them.
    """
    sent = []
    for level in range(1, depth + 1):
        for w in workers:
            if calls and load[w] < level:
                sent.append((w, calls.popleft()))
                load[w] += 1
    return sent

"""The rollout worker's episode loop in plain processes, no Ray: what Ray's workers are measured against.

The Ray scaling bar (2 workers >= 1.8x 1 worker) sits near what a shared 2-core machine gives at
all, so the rollouts benchmark runs the same ``VecRolloutWorker`` loop (same task, policy and
episodes) in 1 or 2 spawned processes beside it, in the same repeats. The processes stay up between
measurements and get the jobs split in halves ahead of time: no driver in the loop, but no
scheduling either, so a process slowed by the machine finishes last (on 2026-12-07: 1.73x, while
Ray's workers, which share out the last episodes, reached 1.86x at the same 2-worker rate).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable

from agents.rollout.actors import PolicyActorFactory
from agents.rollout.env_factory import EnvFactory


def _serve(env_factory: EnvFactory, actor_factory: PolicyActorFactory, conn) -> None:
    """Child loop: run each job list received and send back the seconds it took; None stops."""
    import torch

    from agents.rollout.worker import VecRolloutWorker

    torch.set_num_threads(1)
    worker = VecRolloutWorker(env_factory, actor_factory, num_envs=1)
    while (jobs := conn.recv()) is not None:
        t0 = time.perf_counter()
        worker.run_jobs(jobs)
        conn.send(time.perf_counter() - t0)


class PlainProcesses:
    """``n`` spawned processes, each holding one env and the policy, serving job lists."""

    def __init__(self, n: int, env_factory: EnvFactory, actor_factory: PolicyActorFactory) -> None:
        ctx = mp.get_context("spawn")
        self.size = n
        self._conns, self._procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(env_factory, actor_factory, child), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def run(self, jobs: list[tuple[int, int]]) -> float:
        """Wall seconds for all processes to run their share of ``jobs`` (dealt round-robin)."""
        t0 = time.perf_counter()
        for i, conn in enumerate(self._conns):
            conn.send(jobs[i::len(self._conns)])
        for conn in self._conns:
            conn.recv()
        return time.perf_counter() - t0

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs, strict=True):
            conn.send(None)
            proc.join(timeout=10)


def plain_runner(processes: PlainProcesses,
                 jobs: Callable[[int, int], list]) -> Callable[[int, int], float]:
    """``(episodes, offset) -> seconds`` on plain processes, after one warm-up episode each."""
    processes.run(jobs(processes.size, 0))
    return lambda episodes, offset: processes.run(jobs(episodes, offset))

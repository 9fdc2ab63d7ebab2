"""A pool of rollout workers, in this process or as Ray actors, that survives crashes and hangs.

Jobs ``(episode index, seed)`` go out in calls of ``episodes_per_call``; each worker has two calls
queued so it never waits for the driver. Results stream back call by call, in completion order.

Fault tolerance: a Ray worker that dies (SIGKILL, OOM, segfault) is restarted by Ray
(``max_restarts``) and the episodes of its lost calls are run again from their seeds, so they come
out the same; a worker whose env step runs over ``step_timeout`` is reported with its worker and
env index (kept in :attr:`RolloutPool.hangs`, with how long detection took), killed and restarted
the same way. An episode that fails ``max_attempts`` times ends the
run with :class:`RolloutError`. Nothing is yielded twice: a lost call returns nothing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from agents.rollout.hang_watch import HangReport, RayHangWatch
from agents.rollout.pool_config import PoolConfig, assign_calls, split_calls
from agents.rollout.ray_session import init_ray
from agents.rollout.worker import EpisodeResult, StepTimeoutError, VecRolloutWorker

log = logging.getLogger(__name__)

__all__ = ["PoolConfig", "RolloutError", "RolloutPool", "init_ray", "run_episodes", "split_calls"]


class RolloutError(RuntimeError):
    """An episode could not be completed within its attempts; the message says why."""


class RolloutPool:
    """W rollout workers of M envs each (or one in-process worker), fed job lists.

    Args:
        env_factory: Picklable callable returning a fresh env.
        actor_factory: Picklable ``env -> Actor`` (with optional ``batch``); None for RL stepping.
        config: Placement and fault-tolerance settings.
    """

    def __init__(self, env_factory: Callable, actor_factory: Callable | None,
                 config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self.env_factory, self.actor_factory = env_factory, actor_factory
        # Worker -> (why the pool killed it, the hung episode): reported with the calls it loses.
        self._kill_reasons: dict[int, tuple[str, int | None]] = {}
        self.hangs: list[HangReport] = []
        """Every env step reported as hung, in the order reported."""
        c = self.config
        if not c.uses_ray:
            self._local = self._new_local_worker()
            self._actors: list = []
            return
        import ray

        workers = max(c.workers, 1)
        init_ray(c.ray_address, max(os.cpu_count() or 1, math.ceil(workers * c.cpus_per_worker)),
                 c.dashboard)
        # "control": a hang watch and a ping may run beside ``run_jobs`` and beside each other.
        remote = ray.remote(concurrency_groups={"control": 2})(VecRolloutWorker).options(
            num_cpus=c.cpus_per_worker, max_restarts=c.max_restarts, max_task_retries=0,
            scheduling_strategy="SPREAD" if c.spread else "DEFAULT")
        # The pool watches Ray workers (``watch`` calls); in-worker alarms are for the main thread.
        self._actors = [remote.remote(env_factory, actor_factory, c.envs_per_worker, i, None)
                        for i in range(workers)]
        self._local = None
        self._hang_watch = (RayHangWatch(self._actors, c.step_timeout, self._on_hang)
                            if c.step_timeout else None)
        self.worker_pids()  # every worker built (construction errors surface here) and watchable

    def _new_local_worker(self) -> VecRolloutWorker:
        c = self.config
        return VecRolloutWorker(self.env_factory, self.actor_factory, c.envs_per_worker, 0,
                                c.step_timeout)

    @property
    def n_workers(self) -> int:
        """Workers in the pool (1 when in-process)."""
        return len(self._actors) or 1

    @property
    def num_envs(self) -> int:
        """Envs over all workers."""
        return self.n_workers * self.config.envs_per_worker

    def worker_pids(self) -> list[int]:
        """Process id of each worker (waiting for workers Ray is restarting)."""
        if self._local is not None:
            return [os.getpid()]
        return [self._ready(w) for w in range(len(self._actors))]

    def placement(self) -> list[dict[str, Any]]:
        """Where each worker runs: ``{"worker", "pid", "node_id"}`` (``node_id`` None in-process)."""
        if self._local is not None:
            return [{"worker": 0, "pid": os.getpid(), "node_id": None}]
        import ray

        pids = self.worker_pids()
        nodes = ray.get([a.node_id.options(concurrency_group="control").remote()
                         for a in self._actors])
        return [{"worker": w, "pid": pid, "node_id": node}
                for w, (pid, node) in enumerate(zip(pids, nodes, strict=True))]

    def _ready(self, w: int) -> int:
        """Wait until worker ``w`` is up (pinged, see :meth:`_ping`) and return its pid."""
        import ray
        from ray.exceptions import ActorUnavailableError

        for _ in range(150):  # a worker Ray is restarting answers once it is back
            try:
                return ray.get(self._ping(w))
            except ActorUnavailableError:
                time.sleep(0.2)
        raise RolloutError(f"rollout worker {w} did not come back from its restart within 30 s")

    # -- episodes -----------------------------------------------------------------------------
    def run(self, jobs: Sequence[tuple[int, int]], *, progress: bool = False,
            desc: str = "episodes") -> Iterator[EpisodeResult]:
        """Yield one result per ``(index, seed)`` job, in completion order, each exactly once."""
        calls = deque(split_calls(list(jobs), self.config.per_call, max(1, self.config.workers),
                                  self.config.envs_per_worker))
        bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
        try:
            source = self._run_local(calls) if self._local is not None else self._run_ray(calls)
            for result in source:
                bar.update()
                yield result
        finally:
            bar.close()

    def _charge(self, attempts: dict[int, int], call: list, reason: str,
                culprit: int | None = None) -> None:
        """Count a failed attempt; give up on an episode past ``max_attempts``.

        Only the episode that hung (``culprit``) is charged when it is known; otherwise every
        episode of a call lost with its worker is.
        """
        log.warning("rollout call of episodes %s lost, re-running from their seeds: %s",
                    [i for i, _ in call], reason)
        for index, seed in call:
            if culprit is not None and index != culprit:
                continue
            attempts[index] = attempts.get(index, 1) + 1
            if attempts[index] > self.config.max_attempts:
                raise RolloutError(f"episode {index} (seed {seed}) failed "
                                   f"{self.config.max_attempts} times; last: {reason}")

    def _run_local(self, calls: deque) -> Iterator[EpisodeResult]:
        attempts: dict[int, int] = {}
        while calls:
            call = calls.popleft()
            try:
                results = self._local.run_jobs(call)
            except StepTimeoutError as exc:
                # The alarm raises inside the hung step: detection is the moment of the report.
                self.hangs.append(HangReport(
                    worker=exc.worker, env_index=exc.env_index, episode_index=exc.episode_index,
                    seed=exc.seed, limit=self.config.step_timeout, stalled_for=exc.seconds,
                    detection_latency=exc.seconds))
                # The interrupted env may be mid-step: rebuild the worker's envs from the factory.
                self._local.close()
                self._local = self._new_local_worker()
                self._charge(attempts, call, str(exc), exc.episode_index)
                calls.appendleft(call)
                continue
            yield from results

    def _run_ray(self, calls: deque) -> Iterator[EpisodeResult]:
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        attempts: dict[int, int] = {}
        inflight: dict[Any, tuple[int, list]] = {}
        load = [0] * len(self._actors)
        alive = set(range(len(self._actors)))
        # Workers that lost a call, pinged until Ray has restarted them: no work goes to a worker
        # while it restarts (a call sent then fails at once and would be charged for nothing).
        restarting: dict[int, Any] = {}
        poll = min(1.0, self.config.step_timeout / 2) if self.config.step_timeout else 1.0
        while calls or inflight:
            self._revive(restarting, alive)
            for w, call in assign_calls(calls, load, sorted(alive - set(restarting))):
                inflight[self._actors[w].run_jobs.remote(call)] = (w, call)
            busy = {w for w, _ in inflight.values()} - set(restarting)
            if self._hang_watch is not None:
                self._hang_watch.arm(busy)
            if not inflight:
                if not alive:
                    raise RolloutError("every rollout worker died and used up its restarts "
                                       f"(max_restarts={self.config.max_restarts})")
                ray.wait(list(restarting.values()), num_returns=1, timeout=poll)
                time.sleep(0.05)  # a ping to a restarting actor may fail at once: do not spin
                continue
            watching = self._hang_watch.refs() if self._hang_watch is not None else []
            done, _ = ray.wait(list(inflight) + watching, num_returns=1, timeout=poll)
            if self._hang_watch is not None:
                self._hang_watch.check_unresponsive()
            if not done:
                continue
            if done[0] not in inflight:
                self._hang_watch.answered(done[0])
                continue
            w, call = inflight.pop(done[0])
            load[w] -= 1
            try:
                results = ray.get(done[0])
            except RayActorError as exc:
                reason, culprit = self._kill_reasons.get(
                    w, (f"worker {w} died ({type(exc).__name__})", None))
                self._charge(attempts, call, reason,
                             culprit if any(i == culprit for i, _ in call) else None)
                calls.appendleft(call)
                if self._hang_watch is not None:
                    self._hang_watch.forget(w)
                if isinstance(exc, ActorDiedError):  # restarts used up: Ray will not bring it back
                    alive.discard(w)
                elif w not in restarting:
                    restarting[w] = self._ping(w)
                continue
            self._kill_reasons.pop(w, None)
            yield from results

    def _ping(self, w: int):
        """Ask worker ``w`` for its pid through the "control" group.

        A Ray actor serves that group's heartbeats beside a running ``run_jobs`` only once it has
        served a call in it, so every (re)started worker is pinged before it gets work.
        """
        return self._actors[w].pid.options(concurrency_group="control").remote()

    def _revive(self, restarting: dict[int, Any], alive: set[int]) -> None:
        """Return to service each restarting worker that answered its ping."""
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        for w, ref in list(restarting.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            try:
                ray.get(ref)
            except ActorDiedError:
                alive.discard(w)
                del restarting[w]
            except RayActorError:
                restarting[w] = self._ping(w)  # still restarting: ask again
            else:
                del restarting[w]

    def _on_hang(self, report: HangReport) -> None:
        """Record a hang and kill its worker for Ray to restart (its lost calls are re-run)."""
        import ray

        log.warning("%s; killing it for a restart (detected %.3f s after the step began)",
                    report.message, report.detection_latency)
        self.hangs.append(report)
        self._kill_reasons[report.worker] = (report.message, report.episode_index)
        ray.kill(self._actors[report.worker], no_restart=False)

    # -- RL stepping ----------------------------------------------------------------------------
    def call_workers(self, method: str, args_per_worker: Sequence[tuple]) -> list[Any]:
        """``worker.method(*args)`` on every worker at once; results in worker order.

        A worker that dies or hangs here ends the call with :class:`RolloutError` naming it: an RL
        step cannot be re-run from a seed the way an episode can.
        """
        if self._local is not None:
            return [getattr(self._local, method)(*args_per_worker[0])]
        import ray
        from ray.exceptions import RayActorError

        refs = [getattr(a, method).remote(*args) for a, args in
                zip(self._actors, args_per_worker, strict=True)]
        poll = min(1.0, self.config.step_timeout / 2) if self.config.step_timeout else None
        pending, watch = set(refs), self._hang_watch
        while pending:
            if watch is not None:
                watch.arm({refs.index(r) for r in pending})
            done, _ = ray.wait(list(pending) + (watch.refs() if watch else []), num_returns=1,
                               timeout=poll)
            if watch is not None:
                watch.check_unresponsive()
            for ref in done:
                if ref in pending:
                    pending.discard(ref)
                else:
                    watch.answered(ref)
        try:
            return ray.get(refs)
        except RayActorError as exc:
            w = next(i for i, r in enumerate(refs) if _failed(r))
            reason = self._kill_reasons.pop(w, (None,))[0] or (
                f"worker {w} died ({type(exc).__name__})")
            raise RolloutError(f"{method} failed: {reason}") from exc

    def close(self) -> None:
        """Stop the workers (Ray itself keeps running for the next pool)."""
        if self._local is not None:
            self._local.close()
            return
        import ray

        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _failed(ref) -> bool:
    import ray

    try:
        ray.get(ref, timeout=0)
    except Exception:  # noqa: BLE001 - any failure marks the worker that failed
        return True
    return False


def run_episodes(
    env_factory: Callable,
    actor_factory: Callable,
    jobs: list[tuple[int, int]],
    *,
    workers: int = 0,
    ray_address: str | None = None,
    desc: str = "episodes",
    progress: bool = True,
    **pool_options: Any,
) -> Iterator[EpisodeResult]:
    """Yield one ``EpisodeResult`` per ``(index, seed)`` job, in completion order.

    Args:
        env_factory: Picklable callable returning a fresh env.
        actor_factory: Picklable callable ``env -> Actor``.
        jobs: ``(episode index, reset seed)`` pairs.
        workers: 0 runs in this process; W > 0 starts W Ray actors.
        ray_address: Join this Ray cluster instead of starting a local one.
        desc: Progress bar label.
        progress: Show a progress bar.
        **pool_options: Further :class:`PoolConfig` fields (``envs_per_worker``, ``step_timeout``...).
    """
    config = PoolConfig(workers=workers, ray_address=ray_address, **pool_options)
    with RolloutPool(env_factory, actor_factory, config) as pool:
        yield from pool.run(jobs, progress=progress, desc=desc)

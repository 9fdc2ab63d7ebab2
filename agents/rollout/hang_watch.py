"""Hung env steps: the report the pool keeps, and the driver side of watching Ray workers.

Each busy Ray worker has one ``watch`` call outstanding in its "control" concurrency group; the
call returns the moment an env step there has run over ``step_timeout`` (see
:meth:`~agents.rollout.worker.VecRolloutWorker.watch`), so the driver, which waits on those calls
beside the rollout calls, learns of a hang ``step_timeout`` plus one RPC after it began.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.rollout.worker import StepTimeoutError

log = logging.getLogger(__name__)

WATCH_WAIT = 5.0
"""Seconds one ``watch`` call waits before it answers "no hang" and is asked again."""
UNRESPONSIVE_GRACE = 10.0
"""Seconds past its wait a ``watch`` call may stay unanswered before its worker counts as hung
(a step holding the GIL starves the watching thread)."""


@dataclass(kw_only=True)
class HangReport:
    """One env step reported as hung."""

    worker: int
    """Worker index in the pool."""
    env_index: int | None
    """Env slot in that worker (None: the worker stopped answering, slot unknown)."""
    episode_index: int | None
    """Episode that was running there."""
    seed: int | None
    """Its reset seed."""
    limit: float
    """The ``step_timeout`` in force, seconds."""
    stalled_for: float
    """Seconds the step had run when the worker reported it (>= ``limit`` by construction)."""
    detection_latency: float
    """Seconds from the start of the hung step to the pool's report of it (the pool's clock and
    the worker's wall clock; exact on one machine)."""

    @property
    def message(self) -> str:
        """The one-line report, naming worker, env and episode."""
        if self.env_index is None:
            return f"worker {self.worker} unresponsive for {self.stalled_for:.1f} s"
        return str(StepTimeoutError(self.worker, self.env_index, self.episode_index, self.seed,
                                    self.stalled_for))


class RayHangWatch:
    """Keeps one ``watch`` call outstanding per busy worker and turns answers into reports.

    Args:
        actors: The pool's Ray actor handles (the list object, so restarts are seen).
        limit: ``step_timeout`` in seconds.
        on_hang: Called with each :class:`HangReport`; kills the worker for a restart.
    """

    def __init__(self, actors: list, limit: float, on_hang: Callable[[HangReport], None]) -> None:
        self.actors, self.limit, self.on_hang = actors, limit, on_hang
        self.calls: dict[Any, tuple[int, float]] = {}  # watch ref -> (worker, asked at)
        self.killed_at: dict[int, float] = {}

    def arm(self, busy: set[int]) -> None:
        """Ask each busy worker without a watch call outstanding for one."""
        watched = {w for w, _ in self.calls.values()}
        now = time.monotonic()
        for w in sorted(busy - watched):
            if now - self.killed_at.get(w, -math.inf) < self.limit:
                continue  # killed moments ago: let Ray restart it first
            ref = self.actors[w].watch.options(concurrency_group="control").remote(
                self.limit, WATCH_WAIT)
            self.calls[ref] = (w, now)

    def refs(self) -> list:
        """The outstanding watch calls, to wait on beside the work."""
        return list(self.calls)

    def answered(self, ref) -> None:
        """Handle the answer of watch call ``ref`` (a hang is reported and its worker killed)."""
        import ray
        from ray.exceptions import RayActorError

        w, _ = self.calls.pop(ref)
        try:
            beat = ray.get(ref)
        except RayActorError:
            return  # the worker died: its calls fail and are re-run
        if beat is not None:
            self._report(w, beat["env_index"], beat["episode_index"], beat["seed"], beat["seconds"],
                         beat["seconds"] + max(0.0, time.time() - beat["answered_at"]))

    def check_unresponsive(self) -> None:
        """Report each worker whose watch call is long overdue (its thread cannot run).

        An answer that came while nobody was waiting (between two runs) is read, not taken for
        silence.
        """
        import ray

        now = time.monotonic()
        late = [ref for ref, (_, asked) in self.calls.items()
                if now - asked - WATCH_WAIT > self.limit + UNRESPONSIVE_GRACE]
        if not late:
            return
        ready, silent = ray.wait(late, num_returns=len(late), timeout=0)
        for ref in ready:
            self.answered(ref)
        for ref in silent:
            if ref in self.calls:  # not dropped by a report above
                w, asked = self.calls.pop(ref)
                self._report(w, None, None, None, now - asked, now - asked)

    def forget(self, w: int) -> None:
        """Drop worker ``w``'s outstanding watch calls (it died or restarts)."""
        for ref, (v, _) in list(self.calls.items()):
            if v == w:
                del self.calls[ref]

    def _report(self, w: int, env_index, episode_index, seed, stalled_for: float,
                latency: float) -> None:
        self.forget(w)
        self.killed_at[w] = time.monotonic()
        self.on_hang(HangReport(worker=w, env_index=env_index, episode_index=episode_index,
                                seed=seed, limit=self.limit, stalled_for=stalled_for,
                                detection_latency=latency))

"""Absolute-time scheduling for a fixed-rate loop: sleep most of the period, spin the rest.

Deadlines are ``t0 + k * period`` on ``time.perf_counter`` (monotonic), never "now + period", so
lateness in one tick does not shift every later tick. ``time.sleep`` wakes up to a scheduler
quantum late; sleeping until ``spin_s`` before the deadline and busy-waiting the rest trades a
little CPU for sub-10-us wake-ups on a quiet machine.
"""

from __future__ import annotations

import math
import time


class FixedRateClock:
    """Ticks at ``hz`` from the first ``wait``.

    Args:
        hz: Ticks per second.
        spin_s: Busy-wait this long before each deadline.
    """

    def __init__(self, hz: float, spin_s: float = 5e-4) -> None:
        if not hz > 0 or not math.isfinite(hz):
            raise ValueError(f"hz={hz}; expected a finite rate > 0")
        if spin_s < 0:
            raise ValueError(f"spin_s={spin_s}; expected >= 0")
        self.period = 1.0 / hz
        self.spin_s = spin_s
        self.t0: float | None = None
        self.index = 0
        """Index of the deadline last waited for."""
        self.skipped = 0
        """Deadlines dropped because the loop was more than a whole period behind."""

    def wait(self) -> tuple[float, float]:
        """Block until the next deadline; returns ``(deadline, woke)`` in perf_counter seconds.

        A loop that has fallen more than one period behind skips the deadlines it missed (counted
        in ``skipped``) instead of running a burst of late ticks.
        """
        now = time.perf_counter()
        if self.t0 is None:
            self.t0, self.index = now, 0
            return now, now
        self.index += 1
        deadline = self.t0 + self.index * self.period
        if now - deadline > self.period:
            behind = int((now - deadline) // self.period)
            self.skipped += behind
            self.index += behind
            deadline = self.t0 + self.index * self.period
        remaining = deadline - now - self.spin_s
        if remaining > 0:
            time.sleep(remaining)
        while (woke := time.perf_counter()) < deadline:
            pass
        return deadline, woke

"""A runtime safety filter between any policy and the robot: clamp, rate-limit, refuse non-finite.

numpy only (no torch, no mujoco), so a deployed controller can run it without the training stack.
Limits arrive as plain arrays, e.g. the fields of ``envs.constraints.ConstraintSpec``::

    SafetyFilterConfig(low=spec.ctrl_low, high=spec.ctrl_high, rate_limit=spec.action_rate_limit)

Every intervention is counted and logged as an event, so a deployment report can say how often
the filter had to act and on which step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

INTERVENTIONS = ("non_finite", "clamped", "rate_limited")


def _vector(value: Any, name: str, size: int | None = None) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True).reshape(-1)
    if size is not None and arr.size != size:
        raise ValueError(f"{name} has {arr.size} entries; expected {size} (one per action dimension)")
    arr.setflags(write=False)
    return arr


@dataclass(kw_only=True)
class SafetyFilterConfig:
    """Limits the filter enforces, per action dimension (Da)."""

    low: np.ndarray
    """(Da,) lowest command allowed (``ConstraintSpec.ctrl_low`` or the action space's low)."""
    high: np.ndarray
    """(Da,) highest command allowed (``ConstraintSpec.ctrl_high`` or the action space's high)."""
    rate_limit: np.ndarray | None = None
    """(Da,) largest change of each command between consecutive commands sent, or ``None`` (off)
    (``ConstraintSpec.action_rate_limit``)."""
    max_events: int = 10_000
    """Events kept in the log (the counts keep counting past it)."""

    def __post_init__(self) -> None:
        self.low = _vector(self.low, "low")
        self.high = _vector(self.high, "high", self.low.size)
        if self.low.size == 0:
            raise ValueError("low is empty; expected one bound per action dimension")
        if np.isnan(self.low).any() or np.isnan(self.high).any():
            raise ValueError(f"limits low={self.low.tolist()} high={self.high.tolist()} contain NaN")
        if np.any(self.low > self.high):
            raise ValueError(f"low {self.low.tolist()} exceeds high {self.high.tolist()}; "
                             "expected low <= high")
        if self.rate_limit is not None:
            self.rate_limit = _vector(self.rate_limit, "rate_limit", self.low.size)
            if not np.all(self.rate_limit > 0):
                raise ValueError(f"rate_limit {self.rate_limit.tolist()} must be > 0 (or None = off)")
        if self.max_events < 0:
            raise ValueError(f"max_events={self.max_events}; expected >= 0")

    @property
    def action_dim(self) -> int:
        """Da: action dimensions."""
        return int(self.low.size)


@dataclass
class Intervention:
    """One time the filter changed or refused a command."""

    step: int
    """Index of the command (0-based, counting every call to ``filter``)."""
    kind: str
    """One of ``INTERVENTIONS``."""
    dims: tuple[int, ...]
    """Action dimensions affected."""
    requested: list[float | None]
    """The command as asked for (non-finite entries as ``None``, so the log stays valid JSON)."""
    sent: list[float] | None
    """The command let through, or ``None`` when the filter refused it (the robot holds)."""


class SafetyFilter:
    """Stateful filter: remembers the last command it let through, for the rate limit.

    Attributes:
        counts: Interventions of each kind since construction (``reset`` keeps them).
        events: Logged interventions, oldest first (at most ``config.max_events``).
        steps: Commands seen.

    Args:
        config: Limits.
    """

    def __init__(self, config: SafetyFilterConfig) -> None:
        self.config = config
        self.counts: dict[str, int] = dict.fromkeys(INTERVENTIONS, 0)
        self.events: list[Intervention] = []
        self.steps = 0
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the last command (a new episode starts without a rate-limit reference)."""
        self._last = None

    def filter(self, command: np.ndarray) -> np.ndarray | None:
        """Make ``command`` safe, or refuse it.

        Args:
            command: (Da,) the policy's command.

        Returns:
            (Da,) float64 command to send, or ``None`` when the command had a non-finite entry:
            the caller must hold the robot instead of sending anything.
        """
        c = self.config
        cmd = np.asarray(command, dtype=np.float64).reshape(-1)
        if cmd.size != c.action_dim:
            raise ValueError(f"command has {cmd.size} entries; expected {c.action_dim}")
        step = self.steps
        self.steps += 1
        finite = np.isfinite(cmd)
        if not finite.all():
            self._log(step, "non_finite", ~finite, cmd, None)
            return None
        out = np.minimum(np.maximum(cmd, c.low), c.high)
        clamped = out != cmd
        if clamped.any():
            self._log(step, "clamped", clamped, cmd, out)
        if c.rate_limit is not None and self._last is not None:
            limited = np.clip(out, self._last - c.rate_limit, self._last + c.rate_limit)
            changed = limited != out
            if changed.any():
                # Both bounds hold after this: the last command was inside [low, high] and the
                # step towards the request stays between the two.
                self._log(step, "rate_limited", changed, cmd, limited)
                out = limited
        self._last = out
        return out

    def _log(self, step: int, kind: str, mask: np.ndarray, requested: np.ndarray,
             sent: np.ndarray | None) -> None:
        self.counts[kind] += 1
        if len(self.events) < self.config.max_events:
            self.events.append(Intervention(
                step=step, kind=kind, dims=tuple(int(i) for i in np.flatnonzero(mask)),
                requested=[float(x) if np.isfinite(x) else None for x in requested],
                sent=None if sent is None else sent.tolist()))

    @property
    def interventions(self) -> int:
        """Total interventions of every kind."""
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        """Counts and the first logged events, as JSON-ready data."""
        return {"commands": self.steps, "interventions": self.interventions, "counts": dict(self.counts),
                "events_logged": len(self.events),
                "first_events": [vars(e) for e in self.events[:20]]}

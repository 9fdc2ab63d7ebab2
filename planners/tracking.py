"""PD tracking of planned states for point-mass tasks (a planned ``(x, y, vx, vy)`` -> a force).

A trajectory planner gives states, not trustworthy actions (Janner et al. 2022, Sec. 5.1: Diffuser's
own diffused actions fail open loop on Maze2D, a PD controller on its states succeeds). The tracker
closes that loop: a velocity feed-forward (joint damping over motor gear holds a speed with a
constant force) plus proportional-derivative feedback on the position and velocity errors::

    a = clip(feedforward * v_ref + kp * (p_ref - p) + kd * (v_ref - v), low, high)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(kw_only=True)
class PDTrackerConfig:
    """Gains of the PD tracker (action units per metre and per metre per second)."""

    kp: float = 8.0
    """Position gain: action per metre of position error."""
    kd: float = 1.0
    """Velocity gain: action per m/s of velocity error."""
    feedforward: float = 1.0
    """Action per m/s of reference velocity (Maze-v0: damping 2 N s/m over gear 2 N = 1)."""

    def __post_init__(self) -> None:
        if self.kp < 0 or self.kd < 0 or self.feedforward < 0:
            raise ValueError(f"kp={self.kp}, kd={self.kd}, feedforward={self.feedforward}; "
                             "expected gains >= 0")


class PDTracker:
    """Tracks a reference ``(p_ref, v_ref)`` with bounded actions.

    Args:
        config: Gains.
        low: ``(D,)`` lower action bounds.
        high: ``(D,)`` upper action bounds.
    """

    def __init__(self, config: PDTrackerConfig, low: np.ndarray, high: np.ndarray) -> None:
        self.config = config
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if self.low.shape != self.high.shape or (self.low > self.high).any():
            raise ValueError(f"action bounds low={self.low.tolist()} high={self.high.tolist()}; "
                             "expected equal shapes with low <= high")

    def action(self, pos: np.ndarray, vel: np.ndarray, ref_pos: np.ndarray,
               ref_vel: np.ndarray) -> np.ndarray:
        """The bounded action that drives ``(pos, vel)`` towards ``(ref_pos, ref_vel)``; each ``(D,)``."""
        c = self.config
        a = c.feedforward * ref_vel + c.kp * (ref_pos - pos) + c.kd * (ref_vel - vel)
        return np.clip(a, self.low, self.high)


def interpolate_states(states: np.ndarray, index: float) -> np.ndarray:
    """The state at fractional ``index`` of ``states`` ``(T, D)`` (linear; clamped to the ends)."""
    if states.ndim != 2 or not len(states):
        raise ValueError(f"states has shape {states.shape}; expected (T, D) with T >= 1")
    index = min(max(float(index), 0.0), len(states) - 1.0)
    i = int(np.floor(index))
    j = min(i + 1, len(states) - 1)
    w = index - i
    return (1.0 - w) * states[i] + w * states[j]

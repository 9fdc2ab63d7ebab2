"""A policy wrapper that scores every chunk, raises the calibrated alarm and hands control over.

``MonitoredPolicy(estimator, calibration, fallback)`` serves ``select_action`` like a policy. Each
time a chunk is predicted its scores are appended to a trace; when the calibrated combined alarm
fires for a batch row, that row is handed to ``fallback`` for the rest of the episode (a planner, an
expert or, by default, a safe stop), and the hand-over is logged with the step, the score and the
threshold it crossed. ``Fallback`` is the seam: this package never imports planners; ``agents``
wraps a registered planner into a ``Fallback`` (``agents.monitored.make_fallback``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from policies.uncertainty.conformal import Calibration
from policies.uncertainty.estimator import SCORES, UncertaintyEstimator


@runtime_checkable
class Fallback(Protocol):
    """Who takes control of a batch row after the alarm: one action per observation."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """[Do] observation of the handed-over row -> [Da] action executed instead of the policy's."""
        ...


class SafeStop:
    """The default fallback: the zero action (motors off / no command), for any batch row."""

    def __init__(self, action_dim: int) -> None:
        self.action_dim = int(action_dim)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """[Do] -> [Da] zeros."""
        return np.zeros(self.action_dim, dtype=np.float32)


@dataclass(kw_only=True)
class HandOver:
    """One hand-over of a batch row from the policy to the fallback."""

    step: int
    """Control step (since reset) at which the fallback took over."""
    row: int
    """Batch row."""
    combined: float
    """Combined score that exceeded the threshold."""
    threshold: float
    """The calibrated combined threshold it exceeded."""
    scores: dict[str, float]
    """Raw scores of the chunk that raised the alarm."""
    first_action: list[float] | None = None
    """The fallback's first action for the row (None until it has acted)."""
    fallback_steps: int = 0
    """Control steps the fallback has served for the row since the hand-over."""


class MonitoredPolicy:
    """Runs a policy through its uncertainty estimator; abstains to ``fallback`` on the alarm.

    Args:
        estimator: Estimator wrapping the trained policy.
        calibration: Calibrated thresholds; None scores and records but never hands over.
        fallback: A ``Fallback`` (``obs [Do] -> action [Da]``); default ``SafeStop`` (zero action).
        enabled: False records scores and alarms but keeps the policy in control (evaluation of
            the bare policy with the same scores).
    """

    def __init__(self, estimator: UncertaintyEstimator, calibration: Calibration | None = None,
                 fallback: Fallback | Callable[[np.ndarray], np.ndarray] | None = None,
                 enabled: bool = True) -> None:
        policy = estimator.policy
        if policy.config.temporal_ensemble > 0:
            raise ValueError(f"temporal_ensemble={policy.config.temporal_ensemble}; the monitored "
                             "policy expects receding-horizon execution (temporal_ensemble=0)")
        if calibration is not None and tuple(calibration.names) != SCORES:
            raise ValueError(f"calibration scores {calibration.names}; expected {SCORES}")
        self.estimator, self.calibration, self.enabled = estimator, calibration, enabled
        self.fallback = fallback or SafeStop(policy.config.action_dim)
        self._history: deque[torch.Tensor] = deque(maxlen=policy.config.n_obs_steps)
        self._queue: deque[torch.Tensor] = deque()
        self.trace: list[np.ndarray] = []
        """Per chunk: [B, S] raw scores."""
        self.chunk_steps: list[int] = []
        """Control step of each traced chunk."""
        self.handovers: list[HandOver] = []
        self._handover_of: dict[int, HandOver] = {}
        self.alarm_steps: dict[int, int] = {}
        """Row -> first control step at which the alarm fired."""
        self._handed: np.ndarray = np.zeros(0, dtype=bool)
        self._step = 0

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: clear queues, traces and hand-overs; optionally reseed sampling."""
        self.estimator.policy.reset(seed)
        self.estimator.reset(seed)
        self._history.clear()
        self._queue.clear()
        self.trace, self.chunk_steps, self.handovers, self.alarm_steps = [], [], [], {}
        self._handover_of = {}
        self._handed = np.zeros(0, dtype=bool)
        self._step = 0

    @property
    def chunk_pending(self) -> bool:
        """True when the next ``select_action`` runs the network."""
        return not self._queue

    def _combined(self) -> np.ndarray:
        """[B] combined score of the trailing window of chunks."""
        cal = self.calibration
        recent = np.stack(self.trace[-cal.window:], axis=0).mean(axis=0)  # [B, S]
        scales = np.array([max(cal.scales[n], 1e-12) for n in cal.names])
        return (recent / scales).max(axis=1)

    @torch.no_grad()
    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """One control step for [Do] or [B, Do] observations -> [Da] or [B, Da] actions."""
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        o = torch.as_tensor(obs[None] if single else obs)
        if not self._history:
            self._history.extend([o] * self.estimator.policy.config.n_obs_steps)
            self._handed = np.zeros(o.shape[0], dtype=bool)
        else:
            self._history.append(o)
        if not self._queue:
            actions, scores = self.estimator.predict(torch.stack(list(self._history), dim=1))
            self._queue.extend(actions.unbind(dim=1))
            row_scores = np.stack([scores[n].numpy() for n in SCORES], axis=1)
            self.trace.append(row_scores)
            self.chunk_steps.append(self._step)
            if self.calibration is not None:
                self._check_alarm(row_scores)
        out = self._queue.popleft().numpy().copy()
        for row in np.flatnonzero(self._handed):
            out[row] = self.fallback(obs[row] if not single else obs)
            log = self._handover_of[int(row)]
            if log.first_action is None:
                log.first_action = [float(v) for v in out[row]]
            log.fallback_steps += 1
        self._step += 1
        return out[0] if single else out

    def _check_alarm(self, row_scores: np.ndarray) -> None:
        combined = self._combined()
        for row in np.flatnonzero(combined > self.calibration.combined_threshold):
            if int(row) not in self.alarm_steps:
                self.alarm_steps[int(row)] = self._step
                if self.enabled:
                    self._handed[row] = True
                    log = HandOver(
                        step=self._step, row=int(row), combined=float(combined[row]),
                        threshold=float(self.calibration.combined_threshold),
                        scores={n: float(row_scores[row, i]) for i, n in enumerate(SCORES)})
                    self.handovers.append(log)
                    self._handover_of[int(row)] = log

    def episode_trace(self, row: int = 0) -> np.ndarray:
        """[T_chunks, S] raw scores of one batch row."""
        if not self.trace:
            return np.zeros((0, len(SCORES)))
        return np.stack([t[row] for t in self.trace], axis=0)

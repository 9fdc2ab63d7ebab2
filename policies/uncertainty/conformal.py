"""Split conformal calibration of episode-level alarms on successful nominal rollouts only.

A rollout yields a trace of per-chunk scores [T, S]. Its episode score is the maximum over the
episode of the scores smoothed over a window of chunks, so "the alarm fired at least once" is one
exchangeable event per episode. With n calibration episodes the threshold is the
``ceil((n + 1)(1 - alpha))``-th smallest episode score; a new successful nominal episode then raises
the alarm with probability at most alpha (Vovk et al. 2005; Angelopoulos & Bates 2021).

The combined alarm normalizes each score by a scale fitted on one half of the calibration episodes
and takes the maximum ratio; its threshold is fitted on the other half, so the guarantee holds for
the combined alarm itself, not just for each score alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The split-conformal threshold: the ceil((n+1)(1-alpha))-th smallest of n scores.

    Raises:
        ValueError: alpha outside (0, 1) or fewer than ceil(1/alpha) - 1 scores (no finite threshold).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha}; expected 0 < alpha < 1")
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = s.size
    rank = math.ceil((n + 1) * (1.0 - alpha))
    if rank > n:
        raise ValueError(f"{n} calibration episodes cannot give a threshold at alpha={alpha}; "
                         f"expected at least {math.ceil(1.0 / alpha) - 1}")
    return float(s[rank - 1])


def smooth(trace: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` chunks of a [T, S] trace (shorter at the start); -> [T, S]."""
    trace = np.asarray(trace, dtype=np.float64)
    if window <= 1 or trace.shape[0] == 0:
        return trace
    csum = np.cumsum(np.vstack([np.zeros((1, trace.shape[1])), trace]), axis=0)
    t = np.arange(1, trace.shape[0] + 1)
    lo = np.maximum(t - window, 0)
    return (csum[t] - csum[lo]) / (t - lo)[:, None]


@dataclass(kw_only=True)
class Calibration:
    """Thresholds of the per-score and combined alarms, stored with the policy as JSON."""

    alpha: float
    """Target false-alarm rate per successful nominal episode."""
    names: tuple[str, ...]
    """Score names, in trace column order."""
    window: int = 1
    """Chunks in the trailing mean applied before thresholding."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Per-score conformal thresholds (each alone alarms at rate <= alpha)."""
    scales: dict[str, float] = field(default_factory=dict)
    """Per-score scales of the combined score (fitted on the first half)."""
    combined_threshold: float = math.inf
    """Threshold of the combined score (fitted on the second half)."""
    combined_calibration: list[float] = field(default_factory=list)
    """Sorted combined episode scores of the second half (for conformal p-values)."""
    n_episodes: int = 0
    """Successful nominal episodes used."""

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha}; expected 0 < alpha < 1")
        if self.window < 1:
            raise ValueError(f"window={self.window}; expected >= 1")

    def combined(self, trace: np.ndarray) -> np.ndarray:
        """[T, S] smoothed trace -> [T] max over scores of score / scale."""
        scales = np.array([max(self.scales[n], 1e-12) for n in self.names])
        return (np.asarray(trace, dtype=np.float64) / scales).max(axis=1)

    def episode_scores(self, trace: np.ndarray) -> dict[str, float]:
        """Episode scores (max over time after smoothing) of every score and of ``combined``."""
        sm = smooth(trace, self.window)
        if sm.shape[0] == 0:
            return {**{n: 0.0 for n in self.names}, "combined": 0.0}
        out = {n: float(sm[:, i].max()) for i, n in enumerate(self.names)}
        out["combined"] = float(self.combined(sm).max())
        return out

    def first_alarm(self, trace: np.ndarray, name: str = "combined") -> int | None:
        """Index of the first chunk whose smoothed score exceeds the threshold, or None."""
        sm = smooth(trace, self.window)
        if sm.shape[0] == 0:
            return None
        if name == "combined":
            values, thr = self.combined(sm), self.combined_threshold
        else:
            values, thr = sm[:, self.names.index(name)], self.thresholds[name]
        hits = np.flatnonzero(values > thr)
        return int(hits[0]) if hits.size else None

    def p_value(self, combined_score: float) -> float:
        """Conformal p-value of a combined episode score under nominal success."""
        cal = np.asarray(self.combined_calibration)
        return float((1 + np.sum(cal >= combined_score)) / (cal.size + 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Calibration:
        """Inverse of ``to_dict``."""
        return cls(**doc)


def fit_calibration(traces: list[np.ndarray], names: tuple[str, ...], alpha: float, window: int = 1,
                    seed: int = 0) -> Calibration:
    """Fit per-score and combined thresholds on traces of successful nominal episodes.

    Args:
        traces: One [T_i, S] array of per-chunk scores per successful nominal episode.
        names: The S score names.
        alpha: Target false-alarm rate per episode.
        window: Trailing-mean window in chunks.
        seed: Seed of the random half split.
    """
    if not traces:
        raise ValueError("no calibration episodes; expected successful nominal rollouts")
    for t in traces:
        if np.ndim(t) != 2 or np.shape(t)[1] != len(names):
            raise ValueError(f"trace has shape {np.shape(t)}; expected [T, {len(names)}]")
    cal = Calibration(alpha=alpha, names=names, window=window, n_episodes=len(traces))
    ep_max = np.array([smooth(t, window).max(axis=0) if len(t) else np.zeros(len(names))
                       for t in traces])  # [n, S]
    cal.thresholds = {n: conformal_quantile(ep_max[:, i], alpha) for i, n in enumerate(names)}
    order = np.random.default_rng(seed).permutation(len(traces))
    first, second = order[: len(order) // 2], order[len(order) // 2:]
    cal.scales = {n: float(np.quantile(ep_max[first, i], 1.0 - alpha)) if first.size else 1.0
                  for i, n in enumerate(names)}
    combined = np.array([cal.episode_scores(traces[i])["combined"] for i in second])
    cal.combined_threshold = conformal_quantile(combined, alpha)
    cal.combined_calibration = sorted(float(v) for v in combined)
    return cal

"""Spline-parametrized action sequences: P knots, evenly spaced over a horizon of T control steps.

Every interpolation here is linear in the knots, so a sequence is one matrix product:
``actions[K, T, Da] = basis[T, P] @ knots[K, P, Da]``. The same basis, evaluated at shifted times,
warm-starts the next plan (the knots of the last plan, moved forward by the time that passed).
"""

from __future__ import annotations

import numpy as np

INTERPOLATIONS = ("zero", "linear", "cubic")
"""``zero``: hold each knot (zero-order); ``linear``: piecewise linear; ``cubic``: Catmull-Rom."""


def knot_times(num_knots: int, horizon: int) -> np.ndarray:
    """``(P,)`` knot times in control steps, from 0 to ``horizon - 1`` (one knot sits at 0)."""
    if num_knots < 1 or horizon < 1:
        raise ValueError(f"num_knots {num_knots} and horizon {horizon} must be >= 1")
    if num_knots == 1:
        return np.zeros(1)
    return np.linspace(0.0, horizon - 1.0, num_knots)


def basis(times: np.ndarray, num_knots: int, horizon: int, kind: str) -> np.ndarray:
    """Interpolation weights of the knots at ``times``.

    Args:
        times: ``(N,)`` times in control steps; outside the knot span they clamp to its ends.
        num_knots: P.
        horizon: T, the span the knots cover (``knot_times``).
        kind: One of :data:`INTERPOLATIONS`.

    Returns:
        ``(N, P)`` weights; each row sums to 1.
    """
    if kind not in INTERPOLATIONS:
        raise ValueError(f"interpolation {kind!r} is unknown; expected one of {INTERPOLATIONS}")
    times = np.asarray(times, dtype=np.float64)
    out = np.zeros((times.size, num_knots))
    if num_knots == 1:
        out[:, 0] = 1.0
        return out
    spacing = (horizon - 1.0) / (num_knots - 1) if horizon > 1 else 1.0
    u = np.clip(times / spacing, 0.0, num_knots - 1.0)
    seg = np.minimum(np.floor(u).astype(int), num_knots - 2)
    s = u - seg  # position inside the segment, in [0, 1]
    rows = np.arange(times.size)
    if kind == "zero":
        # Hold the knot at or before the time; the last knot holds from its own time on.
        out[rows, np.where(s >= 1.0, seg + 1, seg)] = 1.0
    elif kind == "linear":
        out[rows, seg] = 1.0 - s
        out[rows, seg + 1] += s
    else:
        # Catmull-Rom through the knots, with the end knots repeated as the outer control points.
        s2, s3 = s * s, s * s * s
        weights = (0.5 * (-s3 + 2 * s2 - s), 0.5 * (3 * s3 - 5 * s2 + 2), 0.5 * (-3 * s3 + 4 * s2 + s),
                   0.5 * (s3 - s2))
        for offset, w in zip((-1, 0, 1, 2), weights, strict=True):
            np.add.at(out, (rows, np.clip(seg + offset, 0, num_knots - 1)), w)
    return out


def interpolate(knots: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Action sequences from knots.

    Args:
        knots: ``(K, P, Da)`` knot values.
        weights: ``(T, P)`` from :func:`basis`.

    Returns:
        ``(K, T, Da)`` actions.
    """
    return np.einsum("tp,kpd->ktd", weights, knots)


def shift_knots(knots: np.ndarray, elapsed: float, horizon: int, kind: str) -> np.ndarray:
    """The knots of the same sequence started ``elapsed`` control steps later (warm start).

    Args:
        knots: ``(P, Da)`` knots of the last plan.
        elapsed: Control steps since that plan (its values past the horizon hold the last knot).
        horizon: T.
        kind: Interpolation of the knots.

    Returns:
        ``(P, Da)`` knots: the old sequence evaluated at the new knot times.
    """
    p = knots.shape[0]
    return basis(knot_times(p, horizon) + elapsed, p, horizon, kind) @ knots

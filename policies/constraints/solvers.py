"""Constraint-enforcement math as pure functions on action chunks (no state, no policy).

Shapes: ``B`` batch, ``H`` chunk length, ``A`` action features, ``n = H * A`` a flattened chunk,
``m`` half-space rows. Half-spaces are ``C y <= b`` with ``C [B, m, n]`` and ``b [B, m]``; rows
that should not bind carry ``b = +inf`` (or a zero row with ``b >= 0``).
"""

from __future__ import annotations

import numpy as np
import torch


def project_box(y: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto a box (closed form): clamp each coordinate.

    Args:
        y: [..., n] points.
        low: [n] or broadcastable lower bounds.
        high: [n] or broadcastable upper bounds.

    Returns:
        [..., n] projected points.
    """
    return torch.maximum(torch.minimum(y, high), low)


def project_halfspace(y: torch.Tensor, c: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto one half-space ``c . y <= b`` per batch row (closed form).

    Args:
        y: [B, n] points.
        c: [B, n] normals.
        b: [B] offsets.

    Returns:
        [B, n]: ``y - max(0, c.y - b) / |c|^2 * c``.
    """
    excess = ((c * y).sum(-1) - b).clamp_min(0.0)
    return y - (excess / (c * c).sum(-1).clamp_min(1e-12))[:, None] * c


def averaged_projections(y: torch.Tensor, C: torch.Tensor, b: torch.Tensor, low: torch.Tensor,
                         high: torch.Tensor, iters: int, relax: float = 1.5) -> torch.Tensor:
    """Approach the intersection of a box and half-spaces by averaged closed-form projections.

    Each sweep moves ``y`` by ``relax`` times the mean of its projections onto the violated
    half-spaces (Cimmino's method), then clamps it into the box. It stays cheap and vectorized
    (two matrix products per sweep) at the price of being approximate after finitely many sweeps:
    callers that need hard guarantees follow it with an exact clamp.

    Args:
        y: [B, n] start points.
        C: [B, m, n] half-space normals.
        b: [B, m] offsets.
        low: [n] box lower bounds.
        high: [n] box upper bounds.
        iters: Sweeps.
        relax: Step relaxation in (0, 2).

    Returns:
        [B, n] corrected points (inside the box).
    """
    inv_norm2 = 1.0 / (C * C).sum(-1).clamp_min(1e-12)  # [B, m]
    Ct = C.transpose(1, 2)
    for _ in range(iters):
        excess = (C @ y.unsqueeze(-1)).squeeze(-1) - b
        active = (excess > 0).sum(-1, keepdim=True)
        if not bool(active.any()):
            break
        step = excess.clamp_min(0.0) * inv_norm2
        y = y - relax * (Ct @ step.unsqueeze(-1)).squeeze(-1) / active.clamp_min(1)
        y = project_box(y, low, high)
    return y


def penalty_gradient(y: torch.Tensor, C: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Gradient of the cost ``sum_i max(0, C_i y - b_i)^2`` (guidance by constraint cost).

    Args:
        y: [B, n] points.
        C: [B, m, n] half-space normals.
        b: [B, m] offsets.

    Returns:
        [B, n] gradient.
    """
    excess = ((C @ y.unsqueeze(-1)).squeeze(-1) - b).clamp_min(0.0)
    return 2.0 * (C.transpose(1, 2) @ excess.unsqueeze(-1)).squeeze(-1)


# The step-by-step clamps below run along the chunk one action at a time on tiny arrays, where
# numpy's per-call overhead is a fraction of torch's; they take and return numpy arrays.


def clamp_rate(actions: np.ndarray, previous: np.ndarray, rate: np.ndarray | None,
               low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Make a chunk respect a box and a per-step rate limit exactly, step by step from ``previous``.

    Step k is clamped into ``[a_{k-1} - rate, a_{k-1} + rate]`` intersected with ``[low, high]``
    (a non-empty interval as long as ``a_{k-1}`` is in the box), so the result is feasible.

    Args:
        actions: [B, H, A] raw actions.
        previous: [B, A] the action applied just before the chunk.
        rate: [A] largest change per step, or ``None`` for no rate limit.
        low: [A] lower bounds.
        high: [A] upper bounds.

    Returns:
        [B, H, A] feasible actions (a new array).
    """
    if rate is None:
        return np.clip(actions, low, high)
    out = np.empty_like(actions)
    prev = np.clip(previous, low, high)
    for k in range(actions.shape[1]):
        prev = np.clip(actions[:, k], np.maximum(prev - rate, low), np.minimum(prev + rate, high))
        out[:, k] = prev
    return out


def velocity_box_step(action: np.ndarray, v_free: np.ndarray, v_gain: np.ndarray,
                      v_gain_inv: np.ndarray, v_low: np.ndarray, v_high: np.ndarray,
                      a_low: np.ndarray, a_high: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Correct one step's action so the next velocity ``v_free + v_gain a`` stays in a box.

    The velocity is clipped into its box and mapped back through ``v_gain`` (a closed-form
    correction: the smallest change of velocity, not of action), then the action is clamped into
    its own box; ``rounds`` alternations settle the two. The action box always wins: when both
    cannot hold, the velocity is as close as the actuators allow.

    Args:
        action: [B, A] desired action.
        v_free: [B, J] next velocity with a zero action.
        v_gain: [B, J, A] d next velocity / d action (invertible, J = A).
        v_gain_inv: [B, A, J] its inverse.
        v_low: [B, J] velocity lower bounds.
        v_high: [B, J] velocity upper bounds.
        a_low: [B, A] action lower bounds.
        a_high: [B, A] action upper bounds.
        rounds: Alternations.

    Returns:
        [B, A] corrected action.
    """
    a = np.clip(action, a_low, a_high)
    for _ in range(rounds):
        v = v_free + (v_gain @ a[..., None])[..., 0]
        dv = np.clip(v, v_low, v_high) - v
        a = np.clip(a + (v_gain_inv @ dv[..., None])[..., 0], a_low, a_high)
    return a

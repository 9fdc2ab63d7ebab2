"""Kinematics and clearance of ArmReach's planar 3-link arm, in numpy (the env and its expert share it).

The layout (link lengths, base, target annulus) is read from the MJCF by the env; these functions
are pure: forward and inverse kinematics, the clearance of each link from the obstacles, and a
sampled set of collision-free configurations reaching a point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.constraints import ConstraintSpec

# Spacing of the points sampled along each link for clearance checks, metres. A sampled check
# overestimates the clearance by at most half of this, which the clearance margins absorb.
_POINT_SPACING = 0.05


@dataclass(frozen=True, kw_only=True, eq=False)
class ArmReachLayout:
    """Geometry of the arm and the target distribution, read from the MJCF where it lives there."""

    base: np.ndarray
    """(2,) position of the first joint in the plane, metres."""
    link_lengths: np.ndarray
    """(3,) joint-to-joint lengths, the last one to the end-effector site, metres."""
    link_radius: np.ndarray
    """(3,) capsule radius of each link, metres."""
    height: float
    """z of the arm's plane, metres."""
    home: np.ndarray
    """(3,) joint angles the start configuration is drawn around, rad."""
    target_min_radius: float
    """Targets are at least this far from the base, metres."""
    target_max_radius: float
    """Targets are at most this far from the base (short of full stretch), metres."""
    target_clearance: float
    """Targets are at least this far from every obstacle surface, metres."""
    config_clearance: float
    """A target counts as reachable if an arm configuration reaches it with every link surface at
    least this far from every obstacle, metres."""
    min_start_distance: float
    """Targets are at least this far from the start end-effector position, metres."""

    @property
    def reach(self) -> float:
        """Distance from the base to the end effector at full stretch, metres."""
        return float(self.link_lengths.sum())


def forward_kinematics(q: np.ndarray, layout: ArmReachLayout) -> np.ndarray:
    """Planar positions of the joints and the end effector.

    Args:
        q: (..., 3) joint angles, rad.
        layout: The arm geometry.

    Returns:
        (..., 4, 2) positions of joint 1, joint 2, joint 3 and the end effector, metres.
    """
    q = np.asarray(q, dtype=np.float64)
    theta = np.cumsum(q, axis=-1)
    steps = layout.link_lengths[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    out = np.empty(q.shape[:-1] + (4, 2))
    out[..., 0, :] = layout.base
    out[..., 1:, :] = layout.base + np.cumsum(steps, axis=-2)
    return out


def link_clearance(q: np.ndarray, layout: ArmReachLayout, spec: ConstraintSpec, link: int) -> np.ndarray:
    """Distance from one link's surface to the nearest obstacle, from points sampled along it.

    Args:
        q: (..., 3) joint angles, rad (joints after ``link`` do not matter).
        layout: The arm geometry.
        spec: The constraint spec holding the obstacles.
        link: Link index, 0 (at the base) to 2 (carrying the end effector).

    Returns:
        (...,) clearance, metres (negative when the link penetrates an obstacle).
    """
    joints = forward_kinematics(q, layout)
    frac = np.linspace(0.0, 1.0, int(math.ceil(layout.link_lengths[link] / _POINT_SPACING)) + 1)
    a, b = joints[..., link, None, :], joints[..., link + 1, None, :]
    pts2 = a + frac[:, None] * (b - a)
    pts = np.concatenate([pts2, np.full(pts2.shape[:-1] + (1,), layout.height)], axis=-1)
    return spec.obstacle_distance(pts).min(axis=-1) - layout.link_radius[link]


def arm_clearance(q: np.ndarray, layout: ArmReachLayout, spec: ConstraintSpec) -> np.ndarray:
    """Distance from the arm's surface to the nearest obstacle (see ``link_clearance``).

    Args:
        q: (..., 3) joint angles, rad.
        layout: The arm geometry.
        spec: The constraint spec holding the obstacles.

    Returns:
        (...,) clearance, metres (negative when a link penetrates an obstacle).
    """
    return np.min([link_clearance(q, layout, spec, i) for i in range(3)], axis=0)


def inverse_kinematics(target: np.ndarray, layout: ArmReachLayout, phi: np.ndarray) -> np.ndarray:
    """All analytic solutions reaching ``target`` with the last link at the given absolute angles.

    Args:
        target: (2,) end-effector position, metres.
        layout: The arm geometry.
        phi: (K,) absolute angles of the last link, rad.

    Returns:
        (M, 3) joint angles wrapped to ``[-pi, pi)``, ``M <= 2K`` (elbow down and up for each angle
        whose wrist point is reachable by the first two links).
    """
    l1, l2, l3 = layout.link_lengths
    wrist = np.asarray(target, dtype=np.float64) - layout.base
    wx = wrist[0] - l3 * np.cos(phi)
    wy = wrist[1] - l3 * np.sin(phi)
    c2 = (wx * wx + wy * wy - l1 * l1 - l2 * l2) / (2.0 * l1 * l2)
    ok = np.abs(c2) <= 1.0
    wx, wy, c2, phi = wx[ok], wy[ok], c2[ok], np.asarray(phi)[ok]
    sols = []
    for sign in (1.0, -1.0):
        q2 = sign * np.arccos(c2)
        q1 = np.arctan2(wy, wx) - np.arctan2(l2 * np.sin(q2), l1 + l2 * np.cos(q2))
        sols.append(np.stack([q1, q2, phi - q1 - q2], axis=-1))
    q = np.concatenate(sols, axis=0)
    return (q + np.pi) % (2.0 * np.pi) - np.pi


def feasible_configurations(
    target: np.ndarray,
    layout: ArmReachLayout,
    spec: ConstraintSpec,
    clearance: float,
    limit_margin: float = 0.0,
    n_angles: int = 48,
) -> np.ndarray:
    """IK solutions for ``target`` inside the joint ranges with at least ``clearance`` to obstacles.

    Args:
        target: (2,) end-effector position, metres.
        layout: The arm geometry.
        spec: The constraint spec (joint ranges and obstacles).
        clearance: Smallest allowed link-obstacle distance, metres.
        limit_margin: Solutions must stay this far inside the joint ranges, rad.
        n_angles: Number of last-link angles tried, evenly spread over the circle.

    Returns:
        (M, 3) joint angles, rad (``M`` may be 0).
    """
    phi = np.linspace(-np.pi, np.pi, n_angles, endpoint=False)
    q = inverse_kinematics(target, layout, phi)
    inside = (q >= spec.joint_low + limit_margin) & (q <= spec.joint_high - limit_margin)
    q = q[np.all(inside, axis=-1)]
    return q[arm_clearance(q, layout, spec) >= clearance]

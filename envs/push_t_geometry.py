"""Exact planar geometry of the PushT block: coverage of the goal, pose error, distances.

The T is the union of two non-overlapping rectangles (the bar and the stem), so the area shared by
the block and the goal is the sum, over the four (block rectangle, goal rectangle) pairs, of the
intersection areas of two convex rectangles. Each one is computed exactly by Sutherland-Hodgman
clipping of one rectangle against the other, done in the clipping rectangle's own frame where its
four edges are axis-aligned half-planes, followed by the shoelace formula.

The per-step code path works on Python floats, not numpy arrays: for polygons of at most eight
vertices, float arithmetic is several times faster than numpy's per-call overhead, and the env
computes the coverage on every step. Poses are ``(x, y, angle)`` of the block frame in the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Polygon = list[tuple[float, float]]


@dataclass(frozen=True, kw_only=True)
class TShape:
    """The T's footprint: two axis-aligned rectangles in the block frame."""

    centers: np.ndarray
    """(2, 2) centres of the bar and the stem in the block frame, metres."""
    halves: np.ndarray
    """(2, 2) half extents (x, y) of the bar and the stem, metres."""

    @property
    def area(self) -> float:
        """Footprint area in square metres (the rectangles do not overlap)."""
        return float(4.0 * np.prod(self.halves, axis=1).sum())

    @property
    def centroid(self) -> np.ndarray:
        """(2,) area centroid in the block frame."""
        w = np.prod(self.halves, axis=1)
        return (w[:, None] * self.centers).sum(axis=0) / w.sum()

    @property
    def gyration_sq(self) -> float:
        """Mean squared distance of the footprint's points from the block-frame origin, m^2."""
        w = 4.0 * np.prod(self.halves, axis=1)
        # Per rectangle: |c|^2 + (hx^2 + hy^2) / 3 is the mean of |p|^2 over its area.
        per = (self.centers**2).sum(axis=1) + (self.halves**2).sum(axis=1) / 3.0
        return float((w * per).sum() / w.sum())

    @property
    def radius(self) -> float:
        """Largest distance of any footprint point from the block-frame origin, metres."""
        return float(max(np.hypot(*(np.abs(c) + h)) for c, h in zip(self.centers, self.halves, strict=True)))


def shoelace_area(poly: Polygon) -> float:
    """Signed area of a polygon (positive when counter-clockwise), by the shoelace formula."""
    n = len(poly)
    s = 0.0
    for i in range(n):
        x0, y0 = poly[i - 1]
        x1, y1 = poly[i]
        s += x0 * y1 - x1 * y0
    return 0.5 * s


def _clip_half_plane(poly: Polygon, axis: int, sign: float, bound: float) -> Polygon:
    """One Sutherland-Hodgman pass: keep the part of ``poly`` where ``sign * p[axis] <= bound``."""
    out: Polygon = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i - 1], poly[i]
        da, db = sign * a[axis] - bound, sign * b[axis] - bound
        if db <= 0.0:
            if da > 0.0:
                t = da / (da - db)
                out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
            out.append(b)
        elif da <= 0.0:
            t = da / (da - db)
            out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
    return out


def clip_to_box(poly: Polygon, hx: float, hy: float) -> Polygon:
    """Clip a polygon to the axis-aligned box ``[-hx, hx] x [-hy, hy]`` (Sutherland-Hodgman).

    Args:
        poly: Vertices of a polygon, counter-clockwise.
        hx: Half width of the box.
        hy: Half height of the box.

    Returns:
        The clipped polygon's vertices (empty when the polygon misses the box).
    """
    for axis, sign, bound in ((0, 1.0, hx), (0, -1.0, hx), (1, 1.0, hy), (1, -1.0, hy)):
        if not poly:
            break
        poly = _clip_half_plane(poly, axis, sign, bound)
    return poly


def rect_corners(cx: float, cy: float, hx: float, hy: float, angle: float) -> Polygon:
    """Counter-clockwise corners of a rectangle with centre ``(cx, cy)`` rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    ux, uy, vx, vy = c * hx, s * hx, -s * hy, c * hy
    return [
        (cx - ux - vx, cy - uy - vy),
        (cx + ux - vx, cy + uy - vy),
        (cx + ux + vx, cy + uy + vy),
        (cx - ux + vx, cy - uy + vy),
    ]


def rect_overlap_area(
    a: tuple[float, float, float, float, float], b: tuple[float, float, float, float, float]
) -> float:
    """Exact intersection area of two rectangles given as ``(cx, cy, hx, hy, angle)``.

    ``a`` is expressed in ``b``'s frame, where ``b`` is the box ``[-hx, hx] x [-hy, hy]``, then
    clipped to it and measured.
    """
    ax, ay, ahx, ahy, aang = a
    bx, by, bhx, bhy, bang = b
    c, s = math.cos(bang), math.sin(bang)
    dx, dy = ax - bx, ay - by
    # a's centre and orientation relative to b's frame.
    local = rect_corners(c * dx + s * dy, -s * dx + c * dy, ahx, ahy, aang - bang)
    return abs(shoelace_area(clip_to_box(local, bhx, bhy)))


class CoverageFn:
    """Coverage of a fixed goal pose by the T at any pose, exact and cheap enough for every step.

    Everything happens in the goal frame, where both goal rectangles are axis-aligned boxes: the
    block's eight corners are transformed once, then each (block rectangle, goal box) pair is
    rejected when their bounding boxes are apart, counted whole when the rectangle lies inside the
    box, and otherwise clipped by Sutherland-Hodgman against only the box sides it crosses.

    Args:
        shape: The T's footprint.
        goal: ``(x, y, angle)`` of the goal pose.
    """

    def __init__(self, shape: TShape, goal: np.ndarray) -> None:
        self.shape = shape
        self.goal = tuple(float(v) for v in goal)
        self._cos, self._sin = math.cos(self.goal[2]), math.sin(self.goal[2])
        self._corners = [
            rect_corners(float(c[0]), float(c[1]), float(h[0]), float(h[1]), 0.0)
            for c, h in zip(shape.centers, shape.halves, strict=True)
        ]
        self._rect_areas = [float(4.0 * h[0] * h[1]) for h in shape.halves]
        self._boxes = [
            (float(c[0]), float(c[1]), float(h[0]), float(h[1]))
            for c, h in zip(shape.centers, shape.halves, strict=True)
        ]
        self._area = shape.area
        self._far_sq = (2.0 * shape.radius) ** 2
        # A block at rest keeps its pose bit for bit (its in-plane velocities are exactly zero),
        # which is most steps: remembering the last answer makes those free.
        self._last_pose: tuple[float, float, float] | None = None
        self._last = 0.0

    def __call__(self, x: float, y: float, angle: float) -> float:
        """Fraction of the goal's area covered by the block at pose ``(x, y, angle)``, in [0, 1]."""
        # Python floats: numpy scalars would make every operation below several times slower.
        pose = (float(x), float(y), float(angle))
        if pose == self._last_pose:
            return self._last
        self._last_pose = pose
        self._last = self._coverage(*pose)
        return self._last

    def _coverage(self, x: float, y: float, angle: float) -> float:
        gx, gy, ga = self.goal
        dx, dy = x - gx, y - gy
        if dx * dx + dy * dy >= self._far_sq:
            return 0.0  # the block's and the goal's circumscribed circles are apart
        # The block's pose in the goal frame.
        cg, sg = self._cos, self._sin
        lx, ly = cg * dx + sg * dy, cg * dy - sg * dx
        rel = angle - ga
        c, s = math.cos(rel), math.sin(rel)
        total = 0.0
        for corners, rect_area in zip(self._corners, self._rect_areas, strict=True):
            pts = [(lx + c * px - s * py, ly + s * px + c * py) for px, py in corners]
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
            for bx, by, hx, hy in self._boxes:
                if x_lo >= bx + hx or x_hi <= bx - hx or y_lo >= by + hy or y_hi <= by - hy:
                    continue  # a separating axis of the box
                if x_lo >= bx - hx and x_hi <= bx + hx and y_lo >= by - hy and y_hi <= by + hy:
                    total += rect_area  # the rectangle lies inside the box
                    continue
                poly = [(px - bx, py - by) for px, py in pts]
                if x_hi > bx + hx:
                    poly = _clip_half_plane(poly, 0, 1.0, hx)
                if poly and x_lo < bx - hx:
                    poly = _clip_half_plane(poly, 0, -1.0, hx)
                if poly and y_hi > by + hy:
                    poly = _clip_half_plane(poly, 1, 1.0, hy)
                if poly and y_lo < by - hy:
                    poly = _clip_half_plane(poly, 1, -1.0, hy)
                if poly:
                    total += abs(shoelace_area(poly))
        return min(total / self._area, 1.0)


def overlap_area(shape: TShape, pose: np.ndarray, goal: np.ndarray) -> float:
    """Reference implementation: area shared by the T at ``pose`` and at ``goal``, m^2.

    The plain sum over the four rectangle pairs of ``rect_overlap_area``, with no shortcuts; the
    tests check ``CoverageFn`` against it.
    """

    def rects(p):
        c, s = math.cos(p[2]), math.sin(p[2])
        return [
            (p[0] + c * cx - s * cy, p[1] + s * cx + c * cy, hx, hy, float(p[2]))
            for (cx, cy), (hx, hy) in zip(shape.centers.tolist(), shape.halves.tolist(), strict=True)
        ]

    return sum(rect_overlap_area(a, b) for a in rects(pose) for b in rects(goal))


def pose_error(shape: TShape, poses: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """RMS displacement of the footprint's points between ``poses`` and ``goal``, metres.

    For a rigid planar motion, the mean over the footprint of ``|p_pose - p_goal|^2`` has a closed
    form in the centroid displacement ``d`` and the angle difference ``a``:
    ``|d|^2 + 2 (1 - cos a) k^2`` with ``k^2`` the squared radius of gyration about the centroid.

    Args:
        shape: The T's footprint.
        poses: (..., 3) block poses ``(x, y, angle)`` whose frame origin is the T's centroid.
        goal: (3,) goal pose.

    Returns:
        (...,) the RMS point displacement.
    """
    d = poses[..., :2] - goal[:2]
    k2 = shape.gyration_sq - float(np.dot(shape.centroid, shape.centroid))
    return np.sqrt((d**2).sum(axis=-1) + 2.0 * (1.0 - np.cos(poses[..., 2] - goal[2])) * k2)


def distance_to_shape(shape: TShape, pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distance from points to the T at ``pose`` (0 inside).

    Args:
        shape: The T's footprint.
        pose: (3,) block pose.
        points: (B, 2) world points.

    Returns:
        (B,) distances.
    """
    c, s = np.cos(pose[2]), np.sin(pose[2])
    rel = np.asarray(points, dtype=np.float64) - pose[:2]
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], axis=-1)
    # Per rectangle: distance to an axis-aligned box via the clamped excess in each axis.
    excess = np.abs(local[:, None, :] - shape.centers[None]) - shape.halves[None]
    dist = np.linalg.norm(np.maximum(excess, 0.0), axis=-1)
    return dist.min(axis=1)


def wrap_angle(angle: float) -> float:
    """Wrap an angle to ``[-pi, pi)``."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def outline_faces(centers: np.ndarray, halves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of a union of axis-aligned rectangles that lie on its outline.

    Returns:
        (F, 2) start points, (F, 2) end points and (F, 2) outward normals, block frame.
    """
    starts, ends, normals = [], [], []
    for i, (c, h) in enumerate(zip(centers, halves, strict=True)):
        others = [(centers[j], halves[j]) for j in range(len(centers)) if j != i]
        for axis in (0, 1):
            for sign in (-1.0, 1.0):
                n = np.zeros(2)
                n[axis] = sign
                fixed = c[axis] + sign * h[axis]
                along = 1 - axis
                cuts = {c[along] - h[along], c[along] + h[along]}
                for oc, oh in others:
                    cuts.update((oc[along] - oh[along], oc[along] + oh[along]))
                lo, hi = c[along] - h[along], c[along] + h[along]
                cuts = sorted(v for v in cuts if lo <= v <= hi)
                for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                    mid = np.zeros(2)
                    mid[axis], mid[along] = fixed, 0.5 * (a + b)
                    # Pieces shared with another rectangle are inside the T, not on its outline.
                    if any(np.all(np.abs(mid - oc) <= oh + 1e-9) for oc, oh in others):
                        continue
                    p, q = mid.copy(), mid.copy()
                    p[along], q[along] = a, b
                    starts.append(p)
                    ends.append(q)
                    normals.append(n)
    return np.array(starts), np.array(ends), np.array(normals)


def rotation(angle: float) -> np.ndarray:
    """The 2 x 2 rotation by ``angle`` radians (block frame -> world)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def away_from_shape(shape: TShape, point: np.ndarray, block_xy: np.ndarray,
                    rot: np.ndarray) -> np.ndarray:
    """Unit world direction from the T's nearest point to ``point`` (from its centroid if inside).

    Args:
        shape: The T's footprint.
        point: (2,) world point.
        block_xy: (2,) the block's centroid.
        rot: The block's rotation (``rotation(angle)``).
    """
    local = rot.T @ (point - block_xy)
    nearest = np.clip(local[None], shape.centers - shape.halves, shape.centers + shape.halves)
    k = int(np.argmin(np.linalg.norm(local - nearest, axis=1)))
    d = local - nearest[k]
    norm = float(np.linalg.norm(d))
    if norm < 1e-9:
        d, norm = local, max(float(np.linalg.norm(local)), 1e-9)
    return rot @ (d / norm)

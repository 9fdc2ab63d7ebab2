"""Deterministic feedback expert for PushT: one point push chosen from the pose error, closed loop.

Each step it reads the block pose from the observation and wants the block to move along the pose
error: the twist ``(e_xy, c * e_angle)`` in the block frame, ``c`` the T's characteristic length
(the mean distance of its support points from the centroid). Pushing at an outline point ``r``
with a force ``f`` inside the friction cone moves the block, in the ellipsoidal limit-surface model
of quasi-static pushing, along the twist ``(f, (r x f) / c^2)``; every candidate contact (points
every few millimetres on the outline, clear of the T's other arm) is scored by the best cosine
between such a twist and the wanted one. The expert keeps its contact while no other one scores
``switch_margin`` better (hysteresis), so the choice rarely flips; a pusher that already touches
a good enough contact pushes from there, so the contact is mostly read off the observation.

Pushing: the contact slides with the pusher along its face (the contact is where the pusher is),
the force direction is the best one at that point, and the target is the pusher's place touching
the block plus the contact point's velocity under the resulting twist, scaled with the error.
Transit: straight to a pre-contact point off the face when that path keeps clear of the T,
otherwise out to a circle around it, along the circle and in along the face normal. Every action
is a function of the observation and the current contact only: no randomness, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.push_t_geometry import (
    away_from_shape,
    distance_to_shape,
    outline_faces,
    rotation,
    wrap_angle,
)
from envs.push_t_v0 import PushTEnv


@dataclass(frozen=True, kw_only=True)
class PushTFeedbackConfig:
    """Settings of the feedback expert."""

    spacing: float = 0.004
    """Spacing of the candidate contacts along the outline, metres."""
    corner_margin: float = 0.004
    """Candidates keep this far from the ends of their face, metres."""
    cone: float = 0.3
    """Half angle of the push directions tried about the inward normal, radians (the pusher-block
    friction cone is atan(0.5) = 0.46; staying inside it keeps the contact sticking)."""
    directions: int = 13
    """Push directions tried across the cone."""
    rotation_weight: float = 1.0
    """Weight of the angle error against the position error in the wanted twist."""
    switch_margin: float = 0.7
    """A contact replaces the current one only when its score is this much higher."""
    min_score: float = 0.2
    """A current contact scoring below this is dropped for the best one."""
    push_gain: float = 0.4
    """Push lead per metre of pose error (the target runs this far ahead of the contact)."""
    min_lead: float = 0.004
    """Smallest push lead, metres (the servo needs ~2.5 mm to overcome the block's friction)."""
    max_lead: float = 0.02
    """Largest push lead, metres."""
    transit_step: float = 0.03
    """Target step during transit, metres per control step."""
    approach: float = 0.005
    """Gap between pusher and face at the pre-contact point, metres."""
    clearance: float = 0.012
    """Gap to the block kept on the transit circle, metres."""
    engage: float = 0.009
    """The pusher counts as at its contact within this distance of touching it, metres."""

    def __post_init__(self) -> None:
        for name in ("spacing", "cone", "push_gain", "min_lead", "transit_step", "clearance", "engage"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} {getattr(self, name)} must be > 0")
        if self.directions < 1:
            raise ValueError(f"directions {self.directions} must be >= 1")
        if self.max_lead < self.min_lead:
            raise ValueError(f"max_lead {self.max_lead} must be >= min_lead {self.min_lead}")


class PushTFeedbackExpert:
    """Closed-loop point-push controller with hysteresis on the contact choice.

    Args:
        env: The unwrapped PushT env (only its layout is read; actions come from observations).
        config: Controller settings.
    """

    name = "feedback"

    def __init__(self, env: PushTEnv, config: PushTFeedbackConfig | None = None) -> None:
        self.config = cfg = config or PushTFeedbackConfig()
        self.layout = lay = env.layout
        self._lo, self._hi = lay.pusher_range[:, 0], lay.pusher_range[:, 1]
        self._rp = lay.pusher_radius
        self._safe_radius = lay.shape.radius + lay.pusher_radius + cfg.clearance
        starts, ends, normals = outline_faces(lay.shape.centers, lay.shape.halves)
        self._faces = (starts, ends, normals)
        # Support points: MuJoCo presses a box onto a plane at its four corners, weighted by area.
        corners, weights = [], []
        for c, h in zip(lay.shape.centers, lay.shape.halves, strict=True):
            for sx in (-1.0, 1.0):
                for sy in (-1.0, 1.0):
                    corners.append(c + h * (sx, sy))
                    weights.append(h[0] * h[1])
        w = np.array(weights) / np.sum(weights)
        self._c = float(w @ np.linalg.norm(np.array(corners) - lay.shape.centroid, axis=1))
        # Candidate contacts: (face, position along it in metres), kept where a pusher touching
        # the point is clear of the rest of the T.
        cand_face, cand_s = [], []
        for k, (s, e, n) in enumerate(zip(starts, ends, normals, strict=True)):
            length = float(np.linalg.norm(e - s))
            lo, hi = cfg.corner_margin, length - cfg.corner_margin
            for t in np.linspace(lo, hi, max(2, int(round((hi - lo) / cfg.spacing)) + 1)):
                touch = s + (e - s) / length * t + n * (self._rp + 0.003)
                if self._clear_local(touch[None])[0] >= self._rp + 0.0029:
                    cand_face.append(k)
                    cand_s.append(t)
        self._cand_face = np.array(cand_face)
        self._cand_s = np.array(cand_s)
        # Valid stretch of each face (where its candidates lie), for sliding contacts.
        self._face_range = {
            k: (self._cand_s[self._cand_face == k].min(), self._cand_s[self._cand_face == k].max())
            for k in set(cand_face)
        }
        self._alphas = np.linspace(-cfg.cone, cfg.cone, cfg.directions)
        # Every candidate's points, normals and unit twists are fixed by the T: computed once.
        points = [self._point(int(f), float(t)) for f, t in zip(self._cand_face, self._cand_s, strict=True)]
        self._cand_r = np.array([p for p, _ in points])
        self._cand_n = np.array([q for _, q in points])
        self._cand_twist = self._twists(self._cand_r, self._cand_n)[0]
        self.contact: tuple[int, float] | None = None
        """Current contact (face index, metres along the face), or ``None`` before the first."""
        self.switches = 0
        """Contact changes this episode."""
        self.last_engaged = False
        """Whether the last action pushed (else it was a transit step)."""

    @property
    def mode(self) -> str | None:
        """The expert is unimodal."""
        return None

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Start an episode (the expert is deterministic: ``rng`` is unused)."""
        self.contact = None
        self.switches = 0

    # -- geometry --------------------------------------------------------------------------------
    def _clear_local(self, points: np.ndarray) -> np.ndarray:
        return distance_to_shape(self.layout.shape, np.zeros(3), points)

    def _point(self, face: int, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Block-frame point ``s`` metres along ``face`` and the face's outward normal."""
        start, end, normal = (f[face] for f in self._faces)
        return start + (end - start) / np.linalg.norm(end - start) * s, normal

    def _twists(self, r: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit scaled twists ``(f, (r x f) / c)`` (..., A, 3) and contact velocities (..., A, 2).

        ``r`` and ``normal`` are (..., 2); the forces ``f`` sweep the cone about ``-normal``.
        """
        c = self._c
        ca, sa = np.cos(self._alphas), np.sin(self._alphas)
        nx, ny = -normal[..., None, 0], -normal[..., None, 1]
        fx, fy = ca * nx - sa * ny, sa * nx + ca * ny
        rx, ry = r[..., None, 0], r[..., None, 1]
        torque = rx * fy - ry * fx
        omega = torque / c**2
        twist = np.stack([fx, fy, torque / c], axis=-1)
        twist /= np.linalg.norm(twist, axis=-1, keepdims=True)
        # Velocity of the material point r under the twist (f, omega): f + omega x r.
        vel = np.stack([fx - omega * ry, fy + omega * rx], axis=-1)
        return twist, vel

    # -- control ---------------------------------------------------------------------------------
    def act(self, obs) -> np.ndarray:
        """Next pusher target from ``[pusher_x, pusher_y, block_x, block_y, block_angle]``."""
        cfg, goal = self.config, self.layout.goal
        obs = np.asarray(obs, dtype=np.float64)
        pusher, block = obs[:2], obs[2:5]
        rot = rotation(block[2])
        # The wanted twist, in the block frame and in point-displacement units.
        e_xy = rot.T @ (goal[:2] - block[:2])
        e_th = wrap_angle(goal[2] - block[2])
        want = np.array([e_xy[0], e_xy[1], cfg.rotation_weight * self._c * e_th])
        error = float(np.linalg.norm(want))
        want /= max(error, 1e-12)
        local = rot.T @ (pusher - block[:2])

        # Candidate scores; the current contact follows the pusher while it is at its face.
        scores = (self._cand_twist @ want).max(axis=-1)
        best = int(np.argmax(scores))
        engaged = False
        if self.contact is None or not self._touching(local, *self.contact):
            # A pusher already touching a good enough contact pushes from there: the contact is
            # then read off the observation, not remembered.
            touched = self._touched(local)
            if touched is not None:
                score = float((self._twists(*self._point(*touched))[0] @ want).max())
                if score >= max(scores[best] - cfg.switch_margin, cfg.min_score):
                    self.contact = touched
        if self.contact is not None:
            face, s = self.contact
            if self._touching(local, face, s):
                s = self._slide(local, face)
                engaged = True
            self.contact = (face, s)
            cur_r, cur_n = self._point(face, s)
            cur_score = float((self._twists(cur_r, cur_n)[0] @ want).max())
            if scores[best] > cur_score + cfg.switch_margin or cur_score < cfg.min_score:
                self.contact = None
        if self.contact is None:
            self.contact = (int(self._cand_face[best]), float(self._cand_s[best]))
            self.switches += 1
            engaged = self._touching(local, *self.contact)
        face, s = self.contact
        r, n = self._point(face, s)
        self.last_engaged = engaged
        if engaged:
            twist, vel = self._twists(r, n)
            k = int(np.argmax(twist @ want))
            v = vel[k] / np.linalg.norm(vel[k])
            lead = min(max(cfg.push_gain * error, cfg.min_lead), cfg.max_lead)
            target_local = r + n * self._rp + v * lead
            target = block[:2] + rot @ target_local
        else:
            target = self._transit(pusher, block, rot, r, n)
        return np.clip(target, self._lo, self._hi).astype(np.float32)

    def _touching(self, local: np.ndarray, face: int, s: float) -> bool:
        """Whether the pusher (block frame) is at the contact: near touching it, on its face."""
        r, n = self._point(face, s)
        d = local - r
        normal_gap = float(d @ n) - self._rp
        lo, hi = self._face_range[face]
        start, end, _ = (f[face] for f in self._faces)
        along = float((local - start) @ (end - start)) / float(np.linalg.norm(end - start))
        on_face = lo - 0.004 <= along <= hi + 0.004 and abs(along - s) < 0.012
        return -0.004 < normal_gap < self.config.engage and on_face

    def _touched(self, local: np.ndarray) -> tuple[int, float] | None:
        """The contact (face, position) the pusher (block frame) touches, if any."""
        found, gap_best = None, math.inf
        for face, (lo, hi) in self._face_range.items():
            start, end, normal = (f[face] for f in self._faces)
            along = float((local - start) @ (end - start)) / float(np.linalg.norm(end - start))
            gap = float((local - start) @ normal) - self._rp
            if lo <= along <= hi and -0.004 < gap < self.config.engage and abs(gap) < gap_best:
                found, gap_best = (face, along), abs(gap)
        return found

    def _slide(self, local: np.ndarray, face: int) -> float:
        """Position along ``face`` of the pusher, clamped to the face's valid stretch."""
        start, end, _ = (f[face] for f in self._faces)
        along = float((local - start) @ (end - start)) / float(np.linalg.norm(end - start))
        lo, hi = self._face_range[face]
        return min(max(along, lo), hi)

    def _transit(self, pusher, block, rot, r, n) -> np.ndarray:
        """Next transit target towards the pre-contact point of contact ``(r, n)`` (block frame)."""
        cfg, lay = self.config, self.layout
        pre = block[:2] + rot @ (r + n * (self._rp + cfg.approach))
        normal = rot @ n
        here = float(distance_to_shape(lay.shape, block, pusher[None])[0])
        clear = min(self._rp + 0.002, here - 0.001)
        seg = pusher + np.linspace(0.0, 1.0, 12)[1:, None] * (pre - pusher)
        if distance_to_shape(lay.shape, block, seg).min() >= clear:
            return self._step_towards(pusher, pre)
        centre, radius = block[:2], self._safe_radius
        rel = pusher - centre
        rho = float(np.linalg.norm(rel))
        if rho < radius - 0.003:
            # Out, away from the T's nearest point.
            return pusher + self._away(pusher, block, rot) * min(cfg.transit_step, radius - rho + 0.002)
        # Along the circle towards the point where the face normal through ``pre`` crosses it.
        b = float((pre - centre) @ normal)
        cq = float((pre - centre) @ (pre - centre)) - radius**2
        stage = pre + normal * (0.0 if cq >= 0 else -b + math.sqrt(b * b - cq))
        a0 = math.atan2(rel[1], rel[0])
        a1 = math.atan2(*(stage - centre)[::-1])
        sweep = wrap_angle(a1 - a0)
        turn = math.copysign(min(abs(sweep), cfg.transit_step / radius), sweep)
        if abs(sweep) < 1e-6:
            return self._step_towards(pusher, pre)
        return centre + radius * np.array([math.cos(a0 + turn), math.sin(a0 + turn)])

    def _step_towards(self, pusher: np.ndarray, point: np.ndarray) -> np.ndarray:
        d = point - pusher
        dist = float(np.linalg.norm(d))
        return point if dist <= self.config.transit_step else pusher + d * (self.config.transit_step / dist)

    def _away(self, point, block, rot) -> np.ndarray:
        return away_from_shape(self.layout.shape, point, block[:2], rot)


"""Decentralized ORCA expert for MultiRobotArena-v0, vectorized over the robots.

Every robot acts on its own observation row only (its position, velocity, goal offset and its K
nearest neighbours), like a robot with a local sensor. Each one:

1. takes a preferred velocity straight at its goal (slowing down near it);
2. builds ORCA half-planes (van den Berg et al., "Reciprocal n-body collision avoidance", 2011):
   one per visible neighbour, taking half the responsibility for avoiding it within a time horizon,
   plus one per wall;
3. picks the velocity closest to the preferred one inside those half-planes and a speed disc.
   In 2-D that optimum lies at the preferred velocity itself, its projection on one line or on the
   disc, a line-line or a line-disc intersection, so all candidates are enumerated and checked at
   once for all robots with numpy (no per-robot loop). Where the half-planes leave nothing, all of
   them are relaxed together by growing amounts until a velocity fits (ORCA's "densely packed"
   fallback, approximated);
4. tracks that velocity with a feed-forward + proportional force command.

ORCA is local: a robot can stall behind robots already parked on their goals (against a wall, or
at a gap narrower than two robots plus the margin). A robot that has stood still away from its
goal for ``stuck_steps`` steps therefore detours: for ``detour_steps`` steps it prefers moving
across its goal direction (90 degrees turned, alternating sides between detours) with no safety
margin, which takes it around the blockage (parked robots keep their margin, so they step aside
as it squeezes past), then heads for the goal again.
"""

from __future__ import annotations

import numpy as np

from envs.multi_robot_arena_v0 import ArenaLayout, MultiRobotArenaEnv

_RELAX = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
"""Amounts (m/s) by which infeasible half-planes are relaxed, tried in order."""
_EPS = 1e-9


def orca_lines(
    rel_pos: np.ndarray,
    rel_vel: np.ndarray,
    vel: np.ndarray,
    radius: float | np.ndarray,
    tau: float,
    dt: float,
) -> tuple[np.ndarray, np.ndarray]:
    """ORCA half-planes ``{v : n . v >= b}`` for robots against their neighbours.

    Args:
        rel_pos: (N, K, 2) neighbour position minus own position.
        rel_vel: (N, K, 2) neighbour velocity minus own velocity.
        vel: (N, 2) own velocity.
        radius: Combined radius (both robots plus a safety margin), metres: a float, or (N, 1)
            for one per robot.
        tau: Time horizon, seconds: only collisions within it are avoided.
        dt: Time to resolve an existing overlap, seconds.

    Returns:
        ``normals`` (N, K, 2), unit, and ``offsets`` (N, K).
    """
    p = rel_pos
    rv = -rel_vel  # ORCA's relative velocity: own minus neighbour
    dist_sq = np.einsum("nkd,nkd->nk", p, p)
    r_sq = radius * radius
    colliding = dist_sq <= r_sq
    # Cut-off circle (or, when overlapping, the circle of the overlap resolved within dt).
    inv = np.where(colliding, 1.0 / dt, 1.0 / tau)[..., None]
    w = rv - inv * p
    w_len_sq = np.einsum("nkd,nkd->nk", w, w)
    w_len = np.sqrt(np.maximum(w_len_sq, _EPS))
    unit_w = w / w_len[..., None]
    dot1 = np.einsum("nkd,nkd->nk", w, p)
    on_circle = colliding | ((dot1 < 0.0) & (dot1 * dot1 > r_sq * w_len_sq))
    u_circle = (radius * inv[..., 0] - w_len)[..., None] * unit_w
    n_circle = unit_w
    # Legs of the truncated cone: the side the relative velocity is on.
    leg = np.sqrt(np.maximum(dist_sq - r_sq, 0.0))
    left = (p[..., 0] * w[..., 1] - p[..., 1] * w[..., 0]) > 0.0
    px, py = p[..., 0], p[..., 1]
    safe_sq = np.maximum(dist_sq, _EPS)
    dir_left = np.stack((px * leg - py * radius, px * radius + py * leg), axis=-1) / safe_sq[..., None]
    dir_right = -np.stack((px * leg + py * radius, -px * radius + py * leg), axis=-1) / safe_sq[..., None]
    direction = np.where(left[..., None], dir_left, dir_right)
    u_leg = np.einsum("nkd,nkd->nk", rv, direction)[..., None] * direction - rv
    n_leg = np.stack((-direction[..., 1], direction[..., 0]), axis=-1)
    u = np.where(on_circle[..., None], u_circle, u_leg)
    normals = np.where(on_circle[..., None], n_circle, n_leg)
    points = vel[:, None, :] + 0.5 * u
    return normals, np.einsum("nkd,nkd->nk", normals, points)


def closest_feasible(
    v_pref: np.ndarray,
    normals: np.ndarray,
    offsets: np.ndarray,
    v_max: float,
    pairs: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity closest to ``v_pref`` with ``normals . v >= offsets`` and ``|v| <= v_max``.

    Args:
        v_pref: (N, 2) preferred velocities.
        normals: (N, M, 2) unit normals of the half-planes.
        offsets: (N, M) offsets of the half-planes.
        v_max: Radius of the speed disc.
        pairs: ``np.triu_indices(M, 1)``: every pair of lines, for their intersections.

    Returns:
        ``v`` (N, 2) and ``found`` (N,) bool; rows without a feasible candidate hold ``v_pref``
        clipped to the disc.
    """
    n, b = normals, offsets
    speed = np.linalg.norm(v_pref, axis=1, keepdims=True)
    on_disc = v_pref * np.minimum(1.0, v_max / np.maximum(speed, _EPS))
    proj = v_pref[:, None, :] + (b - np.einsum("nmd,nd->nm", n, v_pref))[..., None] * n
    pi, pj = pairs
    ni, nj, bi, bj = n[:, pi], n[:, pj], b[:, pi], b[:, pj]
    det = ni[..., 0] * nj[..., 1] - ni[..., 1] * nj[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        det = np.where(np.abs(det) < 1e-9, np.nan, det)
        cross = np.stack(
            ((bi * nj[..., 1] - bj * ni[..., 1]) / det, (ni[..., 0] * bj - nj[..., 0] * bi) / det),
            axis=-1,
        )
        s = np.sqrt(v_max * v_max - b * b)  # NaN where the line misses the disc
    foot = b[..., None] * n
    tangent = np.stack((-n[..., 1], n[..., 0]), axis=-1)
    on_circle = np.concatenate((foot + s[..., None] * tangent, foot - s[..., None] * tangent), axis=1)
    cand = np.concatenate((v_pref[:, None], on_disc[:, None], proj, cross, on_circle), axis=1)
    with np.errstate(invalid="ignore"):
        ok = (np.einsum("nqd,nmd->nqm", cand, n) >= b[:, None, :] - 1e-7).all(axis=2)
        ok &= np.einsum("nqd,nqd->nq", cand, cand) <= v_max * v_max * (1.0 + 1e-7)
    cost = np.where(ok, np.einsum("nqd,nqd->nq", cand - v_pref[:, None], cand - v_pref[:, None]), np.inf)
    best = np.argmin(cost, axis=1)
    found = ok.any(axis=1)
    v = np.where(found[:, None], cand[np.arange(len(cand)), best], on_disc)
    return v, found


class MultiRobotArenaExpert:
    """Decentralized ORCA (reciprocal collision avoidance) for every robot at once.

    Args:
        env: The unwrapped env (its ``layout`` gives the arena geometry, ``dt`` the control step).
        v_max: Top speed, m/s (a motor command of 1 settles at 1 m/s).
        tau: ORCA time horizon against other robots, seconds.
        tau_wall: Time horizon against the walls, seconds.
        margin: Safety margin added to the combined radius of two robots, metres.
        slow_radius: Distance to the goal below which the preferred speed falls linearly, metres.
        gain: Proportional gain of the velocity tracker.
        stuck_steps: Steps below ``stuck_speed`` away from the goal before a detour starts.
        detour_steps: Length of a detour, steps.
        stuck_speed: Speed below which a robot counts as standing still, m/s.
    """

    name = "orca"

    def __init__(
        self,
        env: MultiRobotArenaEnv,
        v_max: float = 0.6,
        tau: float = 1.5,
        tau_wall: float = 0.5,
        margin: float = 0.04,
        slow_radius: float = 0.3,
        gain: float = 3.0,
        stuck_steps: int = 20,
        detour_steps: int = 30,
        stuck_speed: float = 0.05,
    ) -> None:
        self.layout: ArenaLayout = env.layout
        self.dt = float(env.dt)
        self.v_max, self.tau, self.tau_wall = v_max, tau, tau_wall
        self.margin, self.slow_radius, self.gain = margin, slow_radius, gain
        self.stuck_steps, self.detour_steps, self.stuck_speed = stuck_steps, detour_steps, stuck_speed
        self._pairs = np.triu_indices(self.layout.n_visible + 4, 1)  # K robot lines + 4 walls
        # Wall half-planes: normals point into the arena (west, east, south, north).
        self._wall_normals = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        n = self.layout.n_robots
        self._turn = np.zeros(n)
        self._still = np.zeros(n, dtype=np.int64)  # steps stood still away from the goal
        self._detour = np.zeros(n, dtype=np.int64)  # detour steps left
        self._side = np.ones(n)  # +1: turn left of the goal direction, -1: right

    @property
    def mode(self) -> str | None:
        """ORCA is uni-modal: no mode."""
        return None

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Start an episode: clear the detour state and draw each robot's small random turn.

        A fixed turn of up to 3 degrees of each preferred velocity breaks the exact symmetries (two
        robots heading straight at each other) in which reciprocal avoidance can stall, as the ORCA
        reference implementation's perturbation does; the first detour side is random too.
        """
        n = self.layout.n_robots
        self._turn = rng.uniform(-0.05, 0.05, size=n)
        self._still[:] = 0
        self._detour[:] = 0
        self._side[:] = rng.choice((-1.0, 1.0), size=n)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Forces for all robots from the stacked observation ``(N * D,)`` or ``(N, D)``."""
        lay = self.layout
        o = np.asarray(obs, dtype=np.float64).reshape(lay.n_robots, lay.obs_dim)
        pos, vel, to_goal = o[:, 0:2], o[:, 2:4], o[:, 4:6]
        nbr = o[:, 6:6 + 4 * lay.n_visible].reshape(lay.n_robots, lay.n_visible, 4)
        v_pref = self.preferred_velocity(to_goal)
        v_pref = self._detour_when_stuck(v_pref, to_goal, vel)

        # A detouring robot drops its safety margin, so it may squeeze past parked robots (which
        # keep theirs, and so step aside as it comes close).
        margin = np.where(self._detour > 0, 0.0, self.margin)[:, None]
        normals, offsets = orca_lines(nbr[..., 0:2], nbr[..., 2:4], vel,
                                      2.0 * lay.robot_radius + margin, self.tau, self.dt)
        # Walls: keep clear of each wall within tau_wall: n . v >= -(free distance) / tau_wall.
        limit = lay.half_size - lay.robot_radius - 0.5 * margin
        free = np.concatenate((limit + pos, limit - pos), axis=1)[:, [0, 2, 1, 3]]
        wall_n = np.broadcast_to(self._wall_normals, (lay.n_robots, 4, 2))
        normals = np.concatenate((normals, wall_n), axis=1)
        offsets = np.concatenate((offsets, -free / self.tau_wall), axis=1)

        v, found = closest_feasible(v_pref, normals, offsets, self.v_max, self._pairs)
        for relax in _RELAX:  # only the (rare) crowded rows that had no feasible velocity
            if found.all():
                break
            rows = ~found
            v_r, f_r = closest_feasible(v_pref[rows], normals[rows], offsets[rows] - relax,
                                        self.v_max, self._pairs)
            v[rows], found[rows] = v_r, f_r
        action = v + self.gain * (v - vel)
        return np.clip(action, -1.0, 1.0).astype(np.float32).reshape(-1)

    def _detour_when_stuck(self, v_pref: np.ndarray, to_goal: np.ndarray, vel: np.ndarray) -> np.ndarray:
        away = np.linalg.norm(to_goal, axis=1) > 0.8 * self.layout.goal_radius
        still = away & (np.linalg.norm(vel, axis=1) < self.stuck_speed) & (self._detour == 0)
        self._still = np.where(still, self._still + 1, 0)
        start = self._still >= self.stuck_steps
        self._side = np.where(start, -self._side, self._side)  # alternate sides between detours
        self._detour = np.where(start, self.detour_steps, np.maximum(self._detour - 1, 0))
        self._still[start] = 0
        detouring = self._detour > 0
        if not detouring.any():
            return v_pref
        heading = to_goal / np.maximum(np.linalg.norm(to_goal, axis=1), _EPS)[:, None]
        across = self._side[:, None] * np.stack((-heading[:, 1], heading[:, 0]), axis=1)
        return np.where(detouring[:, None], 0.7 * self.v_max * across, v_pref)

    def preferred_velocity(self, to_goal: np.ndarray) -> np.ndarray:
        """Straight at the goal at ``v_max``, slowing linearly inside ``slow_radius``: (N, 2)."""
        dist = np.linalg.norm(to_goal, axis=1)
        speed = self.v_max * np.minimum(1.0, dist / self.slow_radius)
        c, s = np.cos(self._turn), np.sin(self._turn)
        heading = to_goal / np.maximum(dist, _EPS)[:, None]
        turned = np.stack((c * heading[:, 0] - s * heading[:, 1], s * heading[:, 0] + c * heading[:, 1]), 1)
        return turned * speed[:, None]

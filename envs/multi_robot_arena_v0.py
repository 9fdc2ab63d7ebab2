"""MultiRobotArena-v0: N disc robots in one walled arena, each driving to its own goal.

The scene template ``sim_assets/arena.xml`` holds the floor, the walls, a light and the camera; the
``n_robots`` robots (a sphere on two slide joints with two force motors) and their goal markers are
added with ``mujoco.MjSpec`` (:func:`build_arena_model`) and compiled into the model this env
steps. The base class loads a scene by asset name only, so :class:`MultiRobotArenaEnv` compiles
its model first and its ``model`` setter substitutes it for the template the base loads; the base
then derives everything else (data, action space, cached views) from the compiled model.

The Gymnasium env is over the stacked robots: flat observation ``(N * D,)`` and flat action
``(N * 2,)``, robot ``i`` owning ``obs[i * D:(i + 1) * D]`` and ``action[2 * i:2 * i + 2]``. Flat
(rather than ``(N, D)``) keeps every consumer of 1-D Box spaces working: SB3 policies, the episode
store and the contract suite. ``envs/multi_robot_arena_pz.py`` offers the same simulation as a
PettingZoo ``ParallelEnv`` with one agent per robot.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from envs.mjcf_loader import load_mjcf_spec
from envs.mujoco_task import MujocoTaskEnv
from sim_assets import asset_path

MIN_ROBOTS, MAX_ROBOTS = 2, 64
_F32, _BOOL = np.dtype(np.float32), np.dtype(np.bool_)
ROBOT_RADIUS = 0.05
"""Radius of every robot sphere, metres."""
FRAME_SKIP = 5
"""Physics steps (0.01 s each) per control step: 20 Hz control."""
MAX_EPISODE_STEPS = 400
"""Time limit of the registered id (20 s), ample for 64 robots crossing the arena."""


@dataclass(frozen=True, kw_only=True)
class ArenaLayout:
    """Static facts of the arena, read from the compiled model, shared by experts and plots."""

    n_robots: int
    """Number of robots N."""
    n_neighbors: int
    """Neighbour slots K in each robot's observation (zero-padded when N - 1 < K)."""
    half_size: float
    """Half-width of the free square inside the walls, metres (walls' inner faces at +-half_size)."""
    robot_radius: float
    """Radius of each robot, metres."""
    goal_radius: float
    """A robot is at its goal when its centre is within this distance of it, metres."""

    @property
    def obs_dim(self) -> int:
        """D, the per-robot observation size: own xy, velocity, goal offset, then K x 4 neighbours."""
        return 6 + 4 * self.n_neighbors

    @property
    def n_visible(self) -> int:
        """Neighbour slots that hold a real robot: ``min(K, N - 1)``; the rest are zeros."""
        return min(self.n_neighbors, self.n_robots - 1)


def _robot_rgba(i: int) -> list[float]:
    # Evenly spread hues so neighbouring indices (and their goal markers) are easy to tell apart.
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.85)
    return [r, g, b, 1.0]


def build_arena_model(n_robots: int, goal_radius: float) -> mujoco.MjModel:
    """Compile the arena template with ``n_robots`` robots and their goal markers.

    Robot ``i`` is body ``robot_i`` at the origin with slide joints ``robot_i_x``/``robot_i_y`` (so
    ``qpos[2i:2i+2]`` is its xy), sphere geom ``robot_i`` and motors ``robot_i_x``/``robot_i_y``
    (gear 2 N, ctrlrange [-1, 1]); with damping 2 and mass 0.5 a constant command ``u`` settles at
    velocity ``u`` m/s. Goal ``i`` is the visual-only site ``goal_i``, moved at every reset.
    """
    spec = load_mjcf_spec(asset_path("arena.xml"))
    slide, sphere = mujoco.mjtJoint.mjJNT_SLIDE, mujoco.mjtGeom.mjGEOM_SPHERE
    for i in range(n_robots):
        rgba = _robot_rgba(i)
        body = spec.worldbody.add_body(name=f"robot_{i}", pos=[0.0, 0.0, ROBOT_RADIUS])
        for axis_name, axis in (("x", [1.0, 0.0, 0.0]), ("y", [0.0, 1.0, 0.0])):
            body.add_joint(name=f"robot_{i}_{axis_name}", type=slide, axis=axis, damping=2.0)
        body.add_geom(name=f"robot_{i}", type=sphere, size=[ROBOT_RADIUS, 0.0, 0.0], mass=0.5,
                      rgba=rgba, contype=1, conaffinity=1, condim=1)
        spec.worldbody.add_site(name=f"goal_{i}", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                                pos=[0.0, 0.0, 0.001], size=[goal_radius, 0.001, 0.0],
                                rgba=[*rgba[:3], 0.35])
    for i in range(n_robots):
        for axis_name in ("x", "y"):
            spec.add_actuator(name=f"robot_{i}_{axis_name}", target=f"robot_{i}_{axis_name}",
                              trntype=mujoco.mjtTrn.mjTRN_JOINT, gear=[2.0, 0, 0, 0, 0, 0],
                              ctrlrange=[-1.0, 1.0], ctrllimited=True)
    return spec.compile()


class MultiRobotArenaEnv(MujocoTaskEnv):
    """N robots in one square walled arena; every robot must reach its own goal.

    Observation ``(N * D,)`` float32, ``D = 6 + 4 K``; robot ``i``'s row is
    ``[x, y, vx, vy, gx - x, gy - y]`` followed by its K nearest other robots, nearest first, each
    as ``[dx, dy, dvx, dvy]`` (their position and velocity minus its own), zero-padded when
    ``N - 1 < K``. Action ``(N * 2,)`` in ``[-1, 1]``: ``[fx_0, fy_0, fx_1, ...]`` (motor gear 2 N).

    Success: every robot within ``goal_radius`` of its goal at once; the episode then terminates.
    Reward (a team reward, the mean over robots of per-robot terms): ``progress`` (distance to
    goal gained this step), ``collision`` (-0.1 per contact the robot is in, robot or wall),
    ``control`` (-0.01 |a_i|^2), plus ``success`` (+10 when all robots are at their goals).
    ``robot_rewards`` holds the per-robot sums of the same terms (``success`` included), so the
    team reward is their mean.

    Info: ``n_at_goal``, ``at_goal`` (N,) bool, ``robot_collisions`` and ``wall_collisions`` (the
    robot-robot and robot-wall contacts at the end of this control step), ``positions`` (N, 2).
    There is no single ``position``: no robot is the one to plot.

    Args:
        n_robots: Number of robots N, 2..64.
        n_neighbors: Neighbour slots K per robot observation, 1..63.
        goal_radius: Success radius around each goal, metres, in (0, 0.12] (goals are 0.25 m apart).
        min_goal_distance: Least distance from each robot's start to its goal, metres, in [0, 1.5].
        render_mode: ``None`` or ``"rgb_array"``.
        width: Rendered frame width.
        height: Rendered frame height.
    """

    min_separation = 0.25
    """Least distance between any two starts, and between any two goals, metres."""

    def __init__(
        self,
        n_robots: int = 8,
        n_neighbors: int = 4,
        goal_radius: float = 0.1,
        min_goal_distance: float = 0.5,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
    ) -> None:
        if isinstance(n_robots, bool) or int(n_robots) != n_robots or not (
            MIN_ROBOTS <= n_robots <= MAX_ROBOTS
        ):
            raise ValueError(
                f"n_robots {n_robots!r} is out of range; expected an integer in [{MIN_ROBOTS}, {MAX_ROBOTS}]"
            )
        if isinstance(n_neighbors, bool) or int(n_neighbors) != n_neighbors or not (
            1 <= n_neighbors <= MAX_ROBOTS - 1
        ):
            raise ValueError(
                f"n_neighbors {n_neighbors!r} is out of range; expected an integer in [1, {MAX_ROBOTS - 1}]"
            )
        if not 0.0 < goal_radius <= 0.12:
            raise ValueError(f"goal_radius {goal_radius!r} is out of range; expected 0 < r <= 0.12")
        if not 0.0 <= min_goal_distance <= 1.5:
            raise ValueError(
                f"min_goal_distance {min_goal_distance!r} is out of range; expected 0 <= d <= 1.5"
            )
        EzPickle.__init__(self, n_robots, n_neighbors, goal_radius, min_goal_distance, render_mode,
                          width, height)
        n, k = int(n_robots), int(n_neighbors)
        dim = 6 + 4 * k
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(n * dim,), dtype=np.float32)
        # The base loads a scene by asset name only; the ``model`` setter below swaps the template
        # it loads for this compiled N-robot model, so the base derives everything (data, action
        # space, cached views) from the right model.
        self._compiled = build_arena_model(n, goal_radius)
        super().__init__("arena.xml", FRAME_SKIP, obs_space, render_mode, width, height)

        m = self.model
        east = m.geom("wall_east")
        self.layout = ArenaLayout(
            n_robots=n, n_neighbors=k, half_size=float(east.pos[0] - east.size[0]),
            robot_radius=ROBOT_RADIUS, goal_radius=float(goal_radius),
        )
        self.min_goal_distance = float(min_goal_distance)
        # Static lookup, built once: geom id -> robot index (-1 for the walls and the floor).
        self._geom_robot = np.full(m.ngeom, -1, dtype=np.int64)
        for i in range(n):
            self._geom_robot[m.geom(f"robot_{i}").id] = i
        self._geom_is_robot = self._geom_robot >= 0
        self._goal_sites = np.array([m.site(f"goal_{i}").id for i in range(n)])
        self._goals = np.zeros((n, 2))
        # Views of MjData's arrays (valid for the life of self.data, which is never replaced).
        self._pos = self.data.qpos.reshape(n, 2)
        self._dist = np.zeros(n)
        self._prev_dist = np.zeros(n)
        self._sum_dist = self._sum_prev = 0.0
        self._build_step_buffers()
        # Robots must keep apart: two radii centre to centre (the walls bound the workspace).
        half = self.layout.half_size - ROBOT_RADIUS
        self.constraint_spec = self.constraint_spec.replace(
            inter_robot_distance=2 * ROBOT_RADIUS, workspace_low=[-half, -half],
            workspace_high=[half, half])
        self._reset_step_stats()

    @property
    def model(self) -> mujoco.MjModel:
        """The compiled N-robot model."""
        return self._model

    @model.setter
    def model(self, value: mujoco.MjModel) -> None:
        # The first assignment is MujocoTaskEnv.__init__'s, of the template it loaded from
        # "arena.xml": keep the compiled multi-robot model instead (same options, so dt and the
        # render fps are unchanged). Later assignments behave as usual.
        self._model = value if "_model" in self.__dict__ else self._compiled

    # -- sampling ----------------------------------------------------------------------------
    def _sample_points(self, margin: float, away_from: np.ndarray | None) -> np.ndarray:
        """Sample N points ``min_separation`` apart, ``margin`` inside the walls.

        With ``away_from`` (N, 2), point ``i`` is also at least ``min_goal_distance`` from
        ``away_from[i]``. Random sequential adsorption: uniform candidates, each accepted unless it
        is too close to one accepted before. The densest case (64 points) covers about 36% of
        the usable square with exclusion discs, well below RSA's jamming limit (~55%), so a few
        rounds of 4 N candidates always suffice.
        """
        n, lim = self.layout.n_robots, self.layout.half_size - margin
        sep_sq, away_sq = self.min_separation**2, self.min_goal_distance**2
        anchors = away_from.tolist() if away_from is not None else None
        pts = np.empty((n, 2))
        count = 0
        for _ in range(50):
            cand = self.np_random.uniform(-lim, lim, size=(4 * n, 2))
            z = cand[:, 0] + 1j * cand[:, 1]
            blocked = np.zeros(len(cand), dtype=bool)
            if count:
                to_pts = z[:, None] - (pts[:count, 0] + 1j * pts[:count, 1])[None, :]
                blocked |= (to_pts.real**2 + to_pts.imag**2 < sep_sq).any(axis=1)
            pair = z[:, None] - z[None, :]
            close = pair.real**2 + pair.imag**2 < sep_sq
            for c, (x, y) in enumerate(cand.tolist()):
                if blocked[c]:
                    continue
                if anchors is not None:
                    ax, ay = anchors[count]
                    if (x - ax) ** 2 + (y - ay) ** 2 < away_sq:
                        continue
                pts[count] = x, y
                count += 1
                if count == n:
                    return pts
                blocked |= close[c]
        raise RuntimeError(f"could only place {count} of {n} robots")  # pragma: no cover

    # -- task hooks ----------------------------------------------------------------------------
    # The per-step cost is set by the number of numpy calls more than by N (<= 64): after a
    # 64-robot mj_step every call starts cold. The observation (pairwise distances, the K nearest,
    # relative features) is one compiled pass (envs/arena_kernel.py); the few whole-array calls
    # left run on cached MjData views, and what only the PettingZoo view needs (per-robot rewards
    # and contacts) is computed on demand in ``robot_rewards``.

    def _build_step_buffers(self) -> None:
        """Cache what the step path reads: MjData views and the compiled observation kernel."""
        # Imported here, not at module level: `import envs` registers every task, and only the
        # arena needs numba (its import and the compiled-code load cost ~0.5 s).
        from envs.arena_kernel import arena_step_terms

        self._kernel = arena_step_terms
        self._qpos_flat, self._qvel_flat = self.data.qpos, self.data.qvel
        self._n_neighbors, self._radius = self.layout.n_neighbors, self.layout.goal_radius
        self._no_contacts = np.zeros((0, 2), dtype=np.int32)
        n = self._n = self.layout.n_robots
        self._obs_size, self._xy = n * self.layout.obs_dim, (n, 2)
        self._scratch = np.zeros((5, n), dtype=np.float32)
        self._keys = np.zeros(n, dtype=np.int64)
        self._new = np.empty  # one attribute lookup per array instead of two

    def _reset_task(self, options: dict) -> None:
        lay = self.layout
        starts = self._sample_points(lay.robot_radius + 0.05, None)
        self._goals[:] = self._sample_points(lay.robot_radius + lay.goal_radius, starts)
        self.data.qpos[:] = starts.ravel()
        self.data.qvel[:] = 0.0
        self.model.site_pos[self._goal_sites, :2] = self._goals
        # _observation (called next by the base) moves these to the "previous" slot.
        self._dist[:] = np.linalg.norm(self._goals - starts, axis=1)
        self._sum_dist = float(self._dist.sum())
        self._reset_step_stats()

    def _reset_step_stats(self) -> None:
        # What the reset's info reports: no contacts (starts are apart and off the walls).
        self._at_goal = np.less_equal(self._dist, self.layout.goal_radius)
        self._n_at_goal = int(np.count_nonzero(self._at_goal))
        self._success_bonus = 0.0
        self._robot_collisions = self._wall_collisions = 0

    def _observation(self) -> np.ndarray:
        # One compiled pass builds the observation and what the reward needs (kept for _evaluate).
        # Contacts at the end of the control step (the base steps frame_skip physics steps in one
        # call, so intermediate contacts are not seen; 0.05 s is too short to pass through a robot).
        # Only robots and walls collide (the floor has contype 0) and every contact has a robot
        # in it, so robot slots = contacts + robot-robot contacts.
        ncon = self.data.ncon
        new = self._new
        obs, positions, at_goal = new(self._obs_size, _F32), new(self._xy), new(self._n, _BOOL)
        total, n_at_goal, ctrl_sq, slots = self._kernel(
            self._qpos_flat, self._qvel_flat, self._ctrl, self._goals,
            self.data.contact.geom if ncon else self._no_contacts, self._geom_is_robot,
            self._n_neighbors, self._radius, self._prev_dist, obs, positions, at_goal,
            self._scratch, self._keys)
        # This step's goal distances went into the buffer that held the step before last: both
        # the previous and the current distances stay available (progress, robot_rewards). The
        # base calls this exactly once per step and once per reset.
        self._prev_dist, self._dist = self._dist, self._prev_dist
        self._sum_prev, self._sum_dist = self._sum_dist, total
        self._step_stats = (ncon, slots, ctrl_sq, positions, at_goal, n_at_goal)
        return obs

    def _evaluate(self, action: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        # ``action`` is data.ctrl, whose squared norm _observation has taken with the rest.
        n = self.layout.n_robots
        ncon, slots, ctrl_sq, positions, at_goal, n_at_goal = self._step_stats
        self._robot_collisions = robot_collisions = slots - ncon
        self._wall_collisions = wall_collisions = ncon - robot_collisions
        self._at_goal, self._n_at_goal = at_goal, n_at_goal
        success = n_at_goal == n
        self._success_bonus = success_term = 10.0 if success else 0.0
        # Reward terms (progress, collision, control, success, summed in this order): means over
        # robots of the per-robot terms (see robot_rewards for the terms themselves).
        progress = (self._sum_prev - self._sum_dist) / n
        collision = -0.1 * slots / n
        control = -0.01 * ctrl_sq / n
        info = {
            "reward_progress": progress,
            "reward_collision": collision,
            "reward_control": control,
            "reward_success": success_term,
            "is_success": success,
            "n_at_goal": n_at_goal,
            "at_goal": at_goal,
            "robot_collisions": robot_collisions,
            "wall_collisions": wall_collisions,
            "positions": positions,
        }
        return progress + collision + control + success_term, success, info

    def _task_info(self) -> dict[str, Any]:
        return {
            "n_at_goal": self._n_at_goal,
            "at_goal": self._at_goal.copy(),
            "robot_collisions": self._robot_collisions,
            "wall_collisions": self._wall_collisions,
            "positions": self._pos.copy(),
        }

    @property
    def robot_rewards(self) -> np.ndarray:
        """Per-robot reward of the last step, (N,); the team reward is their mean.

        Robot ``i`` gets its distance gained, -0.1 per contact it is in, -0.01 |a_i|^2, and the
        team's success bonus. Computed on demand from the state the last step left, so the
        Gymnasium path does not pay for it.
        """
        n = self.layout.n_robots
        rewards = self._prev_dist - self._dist
        if self.data.ncon:
            robot = self._geom_robot[self.data.contact.geom]
            rewards -= 0.1 * np.bincount(robot[robot >= 0], minlength=n)
        ctrl = self.data.ctrl.reshape(n, 2)
        rewards -= 0.01 * np.einsum("ij,ij->i", ctrl, ctrl)
        return rewards + self._success_bonus

    @property
    def goals(self) -> np.ndarray:
        """Goals of the current episode, (N, 2) metres (a copy)."""
        return self._goals.copy()

"""ArmReach-v0: a torque-controlled planar 3-link arm reaches a target among fixed obstacles.

The constrained-arm task: joint ranges, torque limits (motor gear) and joint speed limits (a custom
numeric in the MJCF) are exposed as plain data in ``env.unwrapped.constraint_spec``, and every step
reports contacts with the obstacles and limit violations in ``info``. Targets are drawn uniformly in
the reachable, obstacle-free part of the workspace: a target is kept only if some arm configuration
inside the joint ranges reaches it with all links clear of the obstacles.
"""

from __future__ import annotations

import math
from math import cos, sin
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from envs.arm_kinematics import (
    ArmReachLayout,
    arm_clearance,
    feasible_configurations,
    forward_kinematics,
)
from envs.constraints import ConstraintSpec, compile_with_obstacles, constraint_spec_from_model
from envs.layout_shift import check_layout_kind
from envs.mujoco_task import MujocoTaskEnv
from envs.robot_models import planar_arm_model
from sim_assets import asset_path

# Layout shifts (``shift_layout``). The training data always has the obstacles at their MJCF poses
# and targets in the annulus [target_min_radius, target_max_radius] around the base.
_OBSTACLE_TURN = (0.4, 1.2)
"""Each obstacle is turned rigidly about the base's z axis by this many rad (either way): it stays in
the arm's reach and moves >= 0.24 m off its nominal pose."""
_START_CLEARANCE = 0.1
"""Moved obstacles keep this far from the arm in every start pose, metres."""
_GOAL_BANDS = ((0.12, 0.25), (0.94, 0.98))
"""Shifted targets: distance from the base inside the inner or the outer band, metres (both
outside the nominal annulus 0.3-0.92 and still reachable)."""


class ArmReachEnv(MujocoTaskEnv):
    """Planar 3-link arm with torque motors; bring the end effector to the target.

    Observation (13, float32): ``[cos q (3), sin q (3), qdot (3), end-effector xy (2), target xy (2)]``.
    Action (3): normalized joint torques in ``[-1, 1]`` (gear 8, 5, 2 N m). Control runs at 40 Hz
    (5 physics steps of 5 ms). Success: the end effector is within ``goal_radius`` of the target;
    the episode then terminates. ``info`` reports ``position`` (end-effector xy), ``target``,
    ``collision`` (any arm-obstacle contact found by the last physics step of the control step),
    ``joint_limit_violation`` and ``velocity_limit_violation`` (how many joints are past their
    range / speed limit after the step). Reward terms: ``distance`` (minus
    the end-effector distance to the target), ``success`` (+10), ``control`` (-0.01 |a|^2) and
    ``collision`` (-1 while touching an obstacle).

    ``reset(options={"target": (x, y)})`` fixes the target instead of drawing it.

    Args:
        goal_radius: Success radius around the target, metres.
        start_noise: Half-width of the uniform noise added to the home joint angles, rad.
        render_mode: ``None`` or ``"rgb_array"``.
        width: Rendered frame width.
        height: Rendered frame height.
        extra_obstacles: Obstacles added to the scene (``envs.constraints.obstacle_from_dict``
            documents, e.g. ``{"kind": "sphere", "pos": [0.3, 0.4, 0], "size": [0.06]}``); they
            collide with the links, appear in ``constraint_spec`` and are avoided by target sampling.
    """

    def __init__(
        self,
        goal_radius: float = 0.05,
        start_noise: float = 0.1,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
        extra_obstacles: tuple[dict, ...] = (),
    ) -> None:
        if not 0.0 < goal_radius <= 0.2:
            raise ValueError(f"goal_radius {goal_radius} is out of range; expected 0 < r <= 0.2")
        # Up to 0.15 rad the start pose keeps over 0.25 m from every obstacle.
        if not 0.0 <= start_noise <= 0.15:
            raise ValueError(f"start_noise {start_noise} is out of range; expected 0 <= s <= 0.15")
        EzPickle.__init__(self, goal_radius, start_noise, render_mode, width, height, extra_obstacles)
        self._extra_obstacles = [dict(o) for o in extra_obstacles]
        high = np.array([1.0] * 6 + [np.inf] * 7, dtype=np.float32)
        obs_space = gym.spaces.Box(-high, high, dtype=np.float32)
        super().__init__("arm_reach.xml", 5, obs_space, render_mode, width, height)
        self.goal_radius = float(goal_radius)
        self.start_noise = float(start_noise)
        m = self.model
        self._robot = planar_arm_model(m, self.frame_skip, ("link1", "link2", "link3"), "end_effector",
                                       obs_cos_index=(0, 1, 2), obs_sin_index=(3, 4, 5),
                                       obs_qvel_index=(6, 7, 8))
        self.constraint_spec: ConstraintSpec = constraint_spec_from_model(m, min_robot_distance=0.0,
                                                                          robot=self._robot)
        if list(self.constraint_spec.joint_qpos_index) != list(range(m.nq)):
            raise ValueError("arm_reach.xml must have exactly the three arm joints as its qpos")
        links = [m.geom(f"link{i}") for i in (1, 2, 3)]
        self.layout = ArmReachLayout(
            base=np.array(m.body("link1").pos[:2]),
            link_lengths=np.array([m.body("link2").pos[0], m.body("link3").pos[0],
                                   m.site("end_effector").pos[0]]),
            link_radius=np.array([g.size[0] for g in links]),
            height=float(m.body("link1").pos[2]),
            home=np.array([0.0, -0.6, -0.6]),
            target_min_radius=0.3,
            target_max_radius=0.92,
            target_clearance=0.08,
            config_clearance=0.04,
            min_start_distance=0.15,
        )
        self._ee_id = m.site("end_effector").id
        self._ee_pos = self.data.site_xpos[self._ee_id]  # a live view of MjData's buffer
        self._target = np.zeros(2)
        self._dist = 0.0
        self._target_xy = (0.0, 0.0)
        spec = self.constraint_spec
        self._joint_limits = (*spec.joint_low.tolist(), *spec.joint_high.tolist())
        self._speed_limits = tuple(spec.joint_velocity_limit.tolist())
        self._joint_violations = self._speed_violations = 0
        # Obstacles are the geoms of the obstacle collision class (extra ones included).
        self._obstacle_geoms = [g for g in range(m.ngeom)
                                if m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 1]
        self._nominal_obstacles = (m.geom_pos[self._obstacle_geoms].copy(),
                                   m.geom_quat[self._obstacle_geoms].copy())
        self._shifted_target: np.ndarray | None = None

    def shift_layout(self, rng: np.random.Generator, kind: str) -> dict[str, Any]:
        """Move the obstacles or the target outside the training support for the episodes that follow.

        ``obstacle`` turns every obstacle rigidly about the base by 0.4-1.2 rad (either way), keeping
        it clear of every start pose; targets are then drawn as usual, avoiding the moved obstacles.
        ``goal`` fixes the target at a reachable, obstacle-free point closer than 0.25 m or farther
        than 0.94 m from the base (nominal targets lie 0.3-0.92 m away). ``none`` restores the
        nominal scene. Each call starts from the nominal scene.

        Args:
            rng: Generator of the draws (the caller's, so the task's own draws are unchanged).
            kind: ``none``, ``obstacle`` or ``goal``.

        Returns:
            The layout now in force: ``obstacles`` ((N, 2) list of centres) and ``target`` ((2,)
            list, or None when drawn at reset).
        """
        check_layout_kind("ArmReach-v0", kind)
        m, ids = self.model, self._obstacle_geoms
        m.geom_pos[ids], m.geom_quat[ids] = self._nominal_obstacles
        self._shifted_target = None
        if kind == "obstacle":
            self._turn_obstacles(rng)
        self.constraint_spec = constraint_spec_from_model(m, min_robot_distance=0.0, robot=self._robot)
        if kind == "goal":
            self._shifted_target = self._draw_shifted_target(rng)
        return {"obstacles": m.geom_pos[ids, :2].tolist(),
                "target": None if self._shifted_target is None else self._shifted_target.tolist()}

    def _turn_obstacles(self, rng: np.random.Generator) -> None:
        m, lay = self.model, self.layout
        corners = lay.home + self.start_noise * np.array(
            [[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64)
        for g, pos, quat in zip(self._obstacle_geoms, *self._nominal_obstacles, strict=True):
            for _ in range(1000):
                turn = rng.choice((-1.0, 1.0)) * rng.uniform(*_OBSTACLE_TURN)
                c, s = math.cos(turn), math.sin(turn)
                rel = pos[:2] - lay.base
                m.geom_pos[g, :2] = lay.base + (c * rel[0] - s * rel[1], s * rel[0] + c * rel[1])
                mujoco.mju_mulQuat(m.geom_quat[g], np.array([math.cos(turn / 2), 0.0, 0.0,
                                                              math.sin(turn / 2)]), quat)
                spec = constraint_spec_from_model(m, min_robot_distance=0.0, robot=self._robot)
                if arm_clearance(corners, lay, spec).min() >= _START_CLEARANCE:
                    break
            else:
                raise RuntimeError(f"no turn of obstacle geom {g} keeps it clear of the start poses")

    def _draw_shifted_target(self, rng: np.random.Generator) -> np.ndarray:
        lay = self.layout
        start_ee = forward_kinematics(lay.home, lay)[3]
        for _ in range(10_000):
            radius = rng.uniform(*_GOAL_BANDS[rng.integers(len(_GOAL_BANDS))])
            angle = rng.uniform(-math.pi, math.pi)
            xy = lay.base + radius * np.array([math.cos(angle), math.sin(angle)])
            # Start poses lie within ~0.1 m of the home end effector.
            if math.hypot(*(xy - start_ee)) >= lay.min_start_distance + 0.1 and self._target_ok(xy):
                return xy
        raise RuntimeError("no reachable obstacle-free target outside the nominal annulus found")

    @property
    def target(self) -> np.ndarray:
        """(2,) the current target, metres (a copy)."""
        return self._target.copy()

    # -- task hooks ------------------------------------------------------------------------
    def _load_model(self, xml_name: str):
        # Extra obstacles get the obstacle collision class: they touch links, never each other.
        return compile_with_obstacles(str(asset_path(xml_name)), self._extra_obstacles, contype=0,
                                      conaffinity=1, rgba=[0.75, 0.3, 0.25, 1.0])

    def _reset_task(self, options: dict) -> None:
        lay, rng = self.layout, self.np_random
        self.data.qpos[:] = lay.home + rng.uniform(-self.start_noise, self.start_noise, size=3)
        self.data.qvel[:] = 0.0
        if "target" in options:
            target = np.asarray(options["target"], dtype=np.float64)
            if target.shape != (2,) or not np.isfinite(target).all():
                raise ValueError(f"options['target'] {options['target']!r} must be 2 finite numbers")
        elif self._shifted_target is not None:
            target = self._shifted_target
        else:
            target = self._sample_target(forward_kinematics(self.data.qpos, lay)[3])
        self._target[:] = target
        self._target_xy = (float(target[0]), float(target[1]))
        self.data.mocap_pos[0, :2] = target

    def _sample_target(self, start_ee: np.ndarray) -> np.ndarray:
        lay, rng = self.layout, self.np_random
        r_max = lay.target_max_radius
        for _ in range(10_000):
            xy = lay.base + rng.uniform(-r_max, r_max, size=2)
            r = math.hypot(*(xy - lay.base))
            if not lay.target_min_radius <= r <= r_max:
                continue
            if math.hypot(*(xy - start_ee)) >= lay.min_start_distance and self._target_ok(xy):
                return xy
        raise RuntimeError("no reachable obstacle-free target found; the scene leaves no free workspace")

    def _target_ok(self, xy: np.ndarray) -> bool:
        """In the workspace, clear of the obstacles and reachable with clearance."""
        lay, spec = self.layout, self.constraint_spec
        if np.any(xy < spec.workspace_low) or np.any(xy > spec.workspace_high):
            return False
        if spec.obstacle_distance(np.array([xy[0], xy[1], lay.height])) < lay.target_clearance:
            return False
        return len(feasible_configurations(xy, lay, spec, lay.config_clearance)) > 0

    # The state vectors have three entries: at that size numpy's per-call overhead dwarfs the
    # arithmetic, so the per-step hooks work on Python floats (``tolist``), unrolled over the three
    # joints, and build the observation in one call. The limit checks are done here, once per
    # step, for info; ``ConstraintSpec.count_violations`` is the batched twin.
    def _observation(self) -> np.ndarray:
        a, b, c = self._qpos.tolist()
        va, vb, vc = self._qvel.tolist()
        ex, ey, _ = self._ee_pos.tolist()
        tx, ty = self._target_xy
        self._dist = math.hypot(ex - tx, ey - ty)
        lo_a, lo_b, lo_c, hi_a, hi_b, hi_c = self._joint_limits
        self._joint_violations = (
            (a < lo_a or a > hi_a) + (b < lo_b or b > hi_b) + (c < lo_c or c > hi_c)
        )
        lim_a, lim_b, lim_c = self._speed_limits
        self._speed_violations = (abs(va) > lim_a) + (abs(vb) > lim_b) + (abs(vc) > lim_c)
        return np.array((cos(a), cos(b), cos(c), sin(a), sin(b), sin(c), va, vb, vc, ex, ey, tx, ty),
                        dtype=np.float32)

    def _evaluate(self, action: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        # Reward terms: distance, success, control, collision (in this order, summed in it).
        a0, a1, a2 = action.tolist()
        dist = self._dist
        success = dist <= self.goal_radius
        # Only links and obstacles can touch (contype/conaffinity in the MJCF), so any contact
        # is an arm-obstacle contact.
        collision = self.data.ncon > 0
        distance_term = -dist
        success_term = 10.0 if success else 0.0
        control_term = -0.01 * (a0 * a0 + a1 * a1 + a2 * a2)
        collision_term = -1.0 if collision else 0.0
        info = {
            "reward_distance": distance_term,
            "reward_success": success_term,
            "reward_control": control_term,
            "reward_collision": collision_term,
            "is_success": success,
            "position": self._ee_pos[:2].copy(),
            "target": self._target.copy(),
            "collision": collision,
            "joint_limit_violation": self._joint_violations,
            "velocity_limit_violation": self._speed_violations,
        }
        return distance_term + success_term + control_term + collision_term, success, info

    def _task_info(self) -> dict[str, Any]:
        return {
            "position": self._ee_pos[:2].copy(),
            "target": self._target.copy(),
            "collision": self.data.ncon > 0,
            "joint_limit_violation": self._joint_violations,
            "velocity_limit_violation": self._speed_violations,
        }

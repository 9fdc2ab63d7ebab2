"""Constraint specs: a robot's limits and its static obstacles as plain numpy data.

A ``ConstraintSpec`` crosses the envs/policies border (constraint enforcement inside diffusion
sampling, safety filters), so it holds only numpy arrays, floats, strings and tuples, never a MuJoCo
object. ``constraint_spec_from_model`` reads everything it can from an ``MjModel``; the checks here
are numpy only and cheap enough to run every env step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import mujoco
import numpy as np

OBSTACLE_KINDS = ("sphere", "capsule", "box")

_GEOM_KINDS = {
    int(mujoco.mjtGeom.mjGEOM_SPHERE): "sphere",
    int(mujoco.mjtGeom.mjGEOM_CAPSULE): "capsule",
    int(mujoco.mjtGeom.mjGEOM_BOX): "box",
}
_LIMITED_JOINTS = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


def _frozen(value, name: str, shape: tuple[int | None, ...] | None = None, dtype=np.float64) -> np.ndarray:
    """A read-only copy of ``value``, so a shared frozen spec cannot be changed through an array."""
    arr = np.array(value, dtype=dtype, copy=True)
    if shape is not None and (
        arr.ndim != len(shape)
        or any(s is not None and s != n for s, n in zip(shape, arr.shape, strict=True))
    ):
        raise ValueError(f"{name} has shape {arr.shape}; expected {tuple(shape)} (None = any length)")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, kw_only=True, eq=False)
class Obstacle:
    """A static obstacle, with the MuJoCo geom conventions for ``size``.

    Arrays are read-only; copy them before handing them to ``torch.from_numpy``.
    """

    name: str
    """Geom name in the MJCF (informative only)."""
    kind: str
    """``"sphere"``, ``"capsule"`` or ``"box"``."""
    position: np.ndarray
    """(3,) centre in the world frame, metres."""
    size: np.ndarray
    """(3,) MuJoCo geom size: sphere ``[r, 0, 0]``; capsule ``[r, half_length, 0]`` (axis = local z);
    box ``[hx, hy, hz]`` half extents, metres."""
    rotation: np.ndarray
    """(3, 3) rotation matrix, local frame to world (columns are the local axes in the world)."""

    def __post_init__(self) -> None:
        if self.kind not in OBSTACLE_KINDS:
            raise ValueError(
                f"obstacle kind {self.kind!r} is not supported; expected one of {OBSTACLE_KINDS}"
            )
        object.__setattr__(self, "position", _frozen(self.position, "position", (3,)))
        object.__setattr__(self, "size", _frozen(self.size, "size", (3,)))
        object.__setattr__(self, "rotation", _frozen(self.rotation, "rotation", (3, 3)))
        if np.any(self.size < 0):
            raise ValueError(f"obstacle {self.name!r} size {self.size.tolist()} must be >= 0")

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance from points to the obstacle surface (negative inside).

        Args:
            points: (..., 3) world positions, metres.

        Returns:
            (...,) signed distances, metres.
        """
        local = (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation
        if self.kind == "sphere":
            return np.linalg.norm(local, axis=-1) - self.size[0]
        if self.kind == "capsule":
            axial = np.clip(local[..., 2], -self.size[1], self.size[1])
            radial = local.copy()
            radial[..., 2] -= axial
            return np.linalg.norm(radial, axis=-1) - self.size[0]
        q = np.abs(local) - self.size
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
        return outside + np.minimum(q.max(axis=-1), 0.0)


class ViolationCounts(NamedTuple):
    """How many joint coordinates break each limit (ints for one state, arrays for a batch)."""

    joint_position: int | np.ndarray
    """Joints outside ``[joint_low, joint_high]``."""
    joint_velocity: int | np.ndarray
    """Joints whose speed exceeds ``joint_velocity_limit``."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ConstraintSpec:
    """A robot's limits and its static obstacles, as plain numpy data (no MuJoCo objects).

    ``A`` is the number of actuators and ``J`` the number of limited joint coordinates (hinge and
    slide joints, in model order). Arrays are read-only; copy them before ``torch.from_numpy``.
    """

    actuator_names: tuple[str, ...]
    """(A,) actuator names, in ``data.ctrl`` order."""
    ctrl_low: np.ndarray
    """(A,) lower bound of each control (the action space's low)."""
    ctrl_high: np.ndarray
    """(A,) upper bound of each control (the action space's high)."""
    torque_limit: np.ndarray
    """(A, 2) ``[low, high]`` generalized force each actuator can apply, ``gear * ctrlrange``
    (intersected with ``forcerange`` where set), N m for hinges or N for slides."""
    joint_names: tuple[str, ...]
    """(J,) joint names."""
    joint_qpos_index: np.ndarray
    """(J,) int index of each joint in ``data.qpos``."""
    joint_dof_index: np.ndarray
    """(J,) int index of each joint in ``data.qvel``."""
    joint_low: np.ndarray
    """(J,) lower joint position limit, rad or m (``-inf`` where unlimited)."""
    joint_high: np.ndarray
    """(J,) upper joint position limit, rad or m (``+inf`` where unlimited)."""
    joint_velocity_limit: np.ndarray
    """(J,) maximum joint speed, rad/s or m/s (``+inf`` where unlimited)."""
    action_rate_limit: np.ndarray | None = None
    """(A,) maximum change of each control between consecutive control steps, or ``None``."""
    workspace_low: np.ndarray
    """(2,) lower corner of the x-y box the end effector should stay in, metres."""
    workspace_high: np.ndarray
    """(2,) upper corner of that box, metres."""
    obstacles: tuple[Obstacle, ...] = ()
    """Static obstacles in the world frame."""
    min_robot_distance: float | None = None
    """Smallest allowed distance between the robot's surface and any obstacle, metres, or ``None``."""

    def __post_init__(self) -> None:
        n_act, n_jnt = len(self.actuator_names), len(self.joint_names)
        object.__setattr__(self, "actuator_names", tuple(self.actuator_names))
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        for name, shape, dtype in (
            ("ctrl_low", (n_act,), np.float64),
            ("ctrl_high", (n_act,), np.float64),
            ("torque_limit", (n_act, 2), np.float64),
            ("joint_qpos_index", (n_jnt,), np.int64),
            ("joint_dof_index", (n_jnt,), np.int64),
            ("joint_low", (n_jnt,), np.float64),
            ("joint_high", (n_jnt,), np.float64),
            ("joint_velocity_limit", (n_jnt,), np.float64),
            ("workspace_low", (2,), np.float64),
            ("workspace_high", (2,), np.float64),
        ):
            object.__setattr__(self, name, _frozen(getattr(self, name), name, shape, dtype))
        if self.action_rate_limit is not None:
            rate = _frozen(self.action_rate_limit, "action_rate_limit", (n_act,))
            if np.any(rate <= 0):
                raise ValueError(f"action_rate_limit {rate.tolist()} must be > 0")
            object.__setattr__(self, "action_rate_limit", rate)
        for low, high in (("ctrl_low", "ctrl_high"), ("joint_low", "joint_high"),
                          ("workspace_low", "workspace_high")):
            lo, hi = getattr(self, low), getattr(self, high)
            if np.any(lo > hi):
                raise ValueError(f"{low} {lo.tolist()} exceeds {high} {hi.tolist()}; expected low <= high")
        if np.any(self.torque_limit[:, 0] > self.torque_limit[:, 1]):
            raise ValueError(f"torque_limit {self.torque_limit.tolist()} must have low <= high per row")
        if np.any(self.joint_velocity_limit <= 0):
            raise ValueError(f"joint_velocity_limit {self.joint_velocity_limit.tolist()} must be > 0")
        object.__setattr__(self, "obstacles", tuple(self.obstacles))
        if not all(isinstance(o, Obstacle) for o in self.obstacles):
            raise ValueError(f"obstacles {self.obstacles!r} must all be Obstacle instances")
        if self.min_robot_distance is not None:
            object.__setattr__(self, "min_robot_distance", float(self.min_robot_distance))

    def count_violations(
        self, joint_position: np.ndarray, joint_velocity: np.ndarray, tol: float = 0.0
    ) -> ViolationCounts:
        """Count the joints outside their position range and above their speed limit.

        Args:
            joint_position: (..., J) joint positions, in ``joint_names`` order.
            joint_velocity: (..., J) joint velocities, in ``joint_names`` order.
            tol: Slack allowed beyond each limit before it counts.

        Returns:
            Counts over the last axis: Python ints for one state, (...,) int arrays for a batch.
        """
        q = np.asarray(joint_position)
        qd = np.asarray(joint_velocity)
        pos = np.count_nonzero((q < self.joint_low - tol) | (q > self.joint_high + tol), axis=-1)
        vel = np.count_nonzero(np.abs(qd) > self.joint_velocity_limit + tol, axis=-1)
        if q.ndim == 1 and qd.ndim == 1:
            return ViolationCounts(int(pos), int(vel))
        return ViolationCounts(pos, vel)

    def obstacle_distance(self, points: np.ndarray) -> np.ndarray:
        """Smallest signed distance from points to any obstacle (``+inf`` without obstacles).

        Args:
            points: (..., 3) world positions, metres.

        Returns:
            (...,) signed distances, metres (negative inside an obstacle).
        """
        pts = np.asarray(points, dtype=np.float64)
        out = np.full(pts.shape[:-1], np.inf)
        for obstacle in self.obstacles:
            np.minimum(out, obstacle.signed_distance(pts), out=out)
        return out


def _custom_numeric(model: mujoco.MjModel, name: str) -> np.ndarray | None:
    for i in range(model.nnumeric):
        if model.numeric(i).name == name:
            return np.array(model.numeric(i).data, dtype=np.float64)
    return None


def constraint_spec_from_model(
    model: mujoco.MjModel,
    *,
    obstacle_prefix: str = "obstacle",
    velocity_limit_name: str = "joint_velocity_limit",
    workspace_name: str = "workspace_bounds",
    workspace_low: np.ndarray | None = None,
    workspace_high: np.ndarray | None = None,
    action_rate_limit: np.ndarray | None = None,
    min_robot_distance: float | None = None,
) -> ConstraintSpec:
    """Read a ``ConstraintSpec`` from a MuJoCo model.

    Reads the actuators' ``ctrlrange`` and ``gear`` (torque limits; actuators are taken to be motors,
    gain 1), the ranges of hinge and slide joints, the joint speed limits from the custom numeric
    ``velocity_limit_name`` (one value per hinge/slide joint), the workspace box from the custom
    numeric ``workspace_name`` (``x_low y_low x_high y_high``) unless given, and every sphere,
    capsule or box geom whose name starts with ``obstacle_prefix`` (posed at ``qpos0``).

    Args:
        model: The compiled model.
        obstacle_prefix: Name prefix of obstacle geoms.
        velocity_limit_name: Custom numeric holding joint speed limits; ``+inf`` when absent.
        workspace_name: Custom numeric holding the workspace box; ``+-inf`` when absent.
        workspace_low: (2,) overrides the workspace's lower corner.
        workspace_high: (2,) overrides the workspace's upper corner.
        action_rate_limit: (A,) optional limit on control change per step.
        min_robot_distance: Optional clearance the robot must keep from obstacles, metres.

    Returns:
        The spec, plain numpy data.

    Raises:
        ValueError: When the velocity-limit or workspace numeric has the wrong length, or an
            obstacle geom has an unsupported type.
    """
    ctrl = np.array(model.actuator_ctrlrange, dtype=np.float64)
    limited = np.array(model.actuator_ctrllimited, dtype=bool)
    ctrl[~limited] = (-np.inf, np.inf)
    torque = np.sort(model.actuator_gear[:, :1] * ctrl, axis=1)
    force_limited = np.array(model.actuator_forcelimited, dtype=bool)
    if force_limited.any():
        # forcerange clamps the actuator force before the gear maps it to the joint.
        force = np.sort(model.actuator_gear[:, :1] * model.actuator_forcerange, axis=1)
        torque[force_limited, 0] = np.maximum(torque[force_limited, 0], force[force_limited, 0])
        torque[force_limited, 1] = np.minimum(torque[force_limited, 1], force[force_limited, 1])

    joints = [j for j in range(model.njnt) if int(model.jnt_type[j]) in _LIMITED_JOINTS]
    joint_range = np.array([model.jnt_range[j] if model.jnt_limited[j] else (-np.inf, np.inf)
                            for j in joints], dtype=np.float64).reshape(-1, 2)

    velocity = _custom_numeric(model, velocity_limit_name)
    if velocity is None:
        velocity = np.full(len(joints), np.inf)
    elif velocity.shape != (len(joints),):
        raise ValueError(
            f"custom numeric {velocity_limit_name!r} has {velocity.size} values; expected one per "
            f"hinge/slide joint ({len(joints)})"
        )

    bounds = _custom_numeric(model, workspace_name)
    if bounds is None:
        bounds = np.array([-np.inf, -np.inf, np.inf, np.inf])
    elif bounds.shape != (4,):
        raise ValueError(f"custom numeric {workspace_name!r} has {bounds.size} values; expected 4")

    # Geom world poses need kinematics; a private MjData keeps the caller's state untouched.
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    obstacles = []
    for g in range(model.ngeom):
        name = model.geom(g).name
        if not name.startswith(obstacle_prefix):
            continue
        kind = _GEOM_KINDS.get(int(model.geom_type[g]))
        if kind is None:
            raise ValueError(
                f"obstacle geom {name!r} has type {int(model.geom_type[g])}; expected sphere, capsule or box"
            )
        obstacles.append(Obstacle(
            name=name, kind=kind, position=data.geom_xpos[g], size=model.geom_size[g],
            rotation=data.geom_xmat[g].reshape(3, 3),
        ))

    return ConstraintSpec(
        actuator_names=tuple(model.actuator(a).name for a in range(model.nu)),
        ctrl_low=ctrl[:, 0],
        ctrl_high=ctrl[:, 1],
        torque_limit=torque,
        joint_names=tuple(model.joint(j).name for j in joints),
        joint_qpos_index=[model.jnt_qposadr[j] for j in joints],
        joint_dof_index=[model.jnt_dofadr[j] for j in joints],
        joint_low=joint_range[:, 0],
        joint_high=joint_range[:, 1],
        joint_velocity_limit=velocity,
        action_rate_limit=action_rate_limit,
        workspace_low=bounds[:2] if workspace_low is None else workspace_low,
        workspace_high=bounds[2:] if workspace_high is None else workspace_high,
        obstacles=tuple(obstacles),
        min_robot_distance=min_robot_distance,
    )

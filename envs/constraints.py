"""Constraint specs: a robot's limits and its static obstacles as plain numpy data.

A ``ConstraintSpec`` crosses the envs/policies border (constraint enforcement inside diffusion
sampling, safety filters), so it holds only numpy arrays, floats, strings and tuples, never a MuJoCo
object. ``constraint_spec_from_model`` reads everything it can from an ``MjModel``; the checks here
are numpy only and cheap enough to run every env step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import mujoco
import numpy as np

from envs.mjcf_loader import load_mjcf_spec
from envs.robot_models import RobotModel, frozen_array

OBSTACLE_KINDS = ("sphere", "capsule", "box")

_GEOM_KINDS = {
    int(mujoco.mjtGeom.mjGEOM_SPHERE): "sphere",
    int(mujoco.mjtGeom.mjGEOM_CAPSULE): "capsule",
    int(mujoco.mjtGeom.mjGEOM_BOX): "box",
}
_LIMITED_JOINTS = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


_frozen = frozen_array


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and arrays as nested dicts, lists and Python scalars."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


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
    inter_robot_distance: float | None = None
    """Smallest allowed centre-to-centre distance between two robots of a multi-robot scene
    (MultiRobotArena), metres, or ``None``."""
    robot: RobotModel | None = None
    """The robot's forward model (kinematics and dynamics as plain data), or ``None``."""

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
        for name in ("min_robot_distance", "inter_robot_distance"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if self.robot is not None and not isinstance(self.robot, RobotModel):
            raise ValueError(f"robot {self.robot!r} must be a RobotModel or None")

    def replace(self, **changes: Any) -> ConstraintSpec:
        """A copy with some fields changed (validated again), e.g. tighter limits for an evaluation."""
        return dataclasses.replace(self, **changes)

    def with_obstacles(self, *obstacles: Obstacle) -> ConstraintSpec:
        """A copy with ``obstacles`` added to the spec's own."""
        return self.replace(obstacles=self.obstacles + tuple(obstacles))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready builtins (lists, floats, strings, ``None``; ``inf`` stays a float).

        This is the form that crosses into ``policies`` (``policy.set_constraints``), which must not
        import this module (it imports MuJoCo).
        """
        return _plain(self)

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
    robot: RobotModel | None = None,
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
        action_rate_limit: (A,) limit on control change per step; default: the custom numeric
            ``action_rate_limit`` when the MJCF has one, else none.
        min_robot_distance: Optional clearance the robot must keep from obstacles, metres.
        robot: The robot's forward model (``envs.robot_models``), if the task provides one.

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

    if action_rate_limit is None:
        action_rate_limit = _custom_numeric(model, "action_rate_limit")

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
        robot=robot,
    )


def obstacle_from_dict(doc: dict[str, Any], name: str) -> tuple[str, np.ndarray, np.ndarray, float]:
    """Validate one obstacle given as plain data (e.g. task kwargs on the command line).

    Args:
        doc: ``{"kind": "sphere"|"capsule"|"box", "pos": [x, y, z], "size": [...], "yaw": rad}``;
            ``size`` follows MuJoCo (sphere ``[r]``, capsule ``[r, half_length]`` with its axis in
            the x-y plane along ``yaw``, box ``[hx, hy, hz]``); ``yaw`` is optional (0).
        name: The geom name to give it.

    Returns:
        ``(kind, pos (3,), size (3,), yaw)``.

    Raises:
        ValueError: On an unknown kind, a missing key or a wrong-sized position or size.
    """
    kind = doc.get("kind")
    if kind not in OBSTACLE_KINDS:
        raise ValueError(
            f"obstacle {name!r} kind {kind!r} is not supported; expected one of {OBSTACLE_KINDS}"
        )
    pos = np.asarray(doc.get("pos", ()), dtype=np.float64)
    size = np.asarray(doc.get("size", ()), dtype=np.float64)
    n_size = {"sphere": 1, "capsule": 2, "box": 3}[kind]
    if pos.shape != (3,) or size.shape != (n_size,) or np.any(size <= 0):
        raise ValueError(f"obstacle {name!r} has pos {pos.tolist()} and size {size.tolist()}; expected "
                         f"3 numbers and {n_size} positive number(s) for a {kind}")
    return kind, pos, np.pad(size, (0, 3 - n_size)), float(doc.get("yaw", 0.0))


def compile_with_obstacles(
    xml_path: str, obstacles: list[dict[str, Any]], **geom_attrs: Any
) -> mujoco.MjModel:
    """Compile an MJCF scene with extra static obstacles added to its world body.

    The new geoms are named ``obstacle_extra_<i>``, so ``constraint_spec_from_model`` reads them like
    the scene's own obstacles; a capsule lies in the x-y plane (its axis turned by ``yaw`` from +x).

    Args:
        xml_path: The scene's MJCF file.
        obstacles: Obstacles as ``obstacle_from_dict`` documents.
        **geom_attrs: Attributes set on every new geom (e.g. ``contype``, ``conaffinity``, ``rgba``).

    Returns:
        The compiled model.
    """
    spec = load_mjcf_spec(xml_path)
    types = {"sphere": mujoco.mjtGeom.mjGEOM_SPHERE, "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
             "box": mujoco.mjtGeom.mjGEOM_BOX}
    for i, doc in enumerate(obstacles):
        name = f"obstacle_extra_{i}"
        kind, pos, size, yaw = obstacle_from_dict(doc, name)
        # A capsule's axis is its local z: tip it into the plane (pitch 90 deg), then turn it by yaw.
        pitch = np.pi / 2 if kind == "capsule" else 0.0
        quat = np.zeros(4)
        mujoco.mju_euler2Quat(quat, [0.0, pitch, yaw], "XYZ")  # extrinsic: pitch first, then yaw
        geom = spec.worldbody.add_geom(name=name, type=types[kind], pos=pos, size=size, quat=quat)
        for key, value in geom_attrs.items():
            setattr(geom, key, value)
    return spec.compile()

"""Robot forward models as plain data, read from an ``MjModel``.

A ``RobotModel`` is what a differentiable twin of the robot outside MuJoCo needs (kinematics, mass
and damping, the control period, where the joint state sits in the observation):
``policies.constraints`` rebuilds planar-arm and point-mass dynamics from it in torch, which may not
import MuJoCo. The readers here check the assumptions those twins make and say which one failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


def frozen_array(
    value, name: str, shape: tuple[int | None, ...] | None = None, dtype=np.float64
) -> np.ndarray:
    """A read-only copy of ``value``, so a shared frozen spec cannot be changed through an array.

    Args:
        value: Array-like input.
        name: Field name for the error message.
        shape: Expected shape (``None`` entries match any length), or ``None`` for any.
        dtype: Element type of the copy.

    Returns:
        The read-only copy.

    Raises:
        ValueError: When the shape differs, naming the field.
    """
    arr = np.array(value, dtype=dtype, copy=True)
    if shape is not None and (
        arr.ndim != len(shape)
        or any(s is not None and s != n for s, n in zip(shape, arr.shape, strict=True))
    ):
        raise ValueError(f"{name} has shape {arr.shape}; expected {tuple(shape)} (None = any length)")
    arr.setflags(write=False)
    return arr


ROBOT_KINDS = ("planar_arm", "point_mass")


@dataclass(frozen=True, kw_only=True, eq=False)
class RobotModel:
    """A robot's forward model as plain data, enough for a differentiable twin outside MuJoCo.

    Two kinds cover the tasks here. ``planar_arm``: a serial chain of ``L`` links with hinges about
    world z, moving in the plane ``z = base[2]`` (ArmReach). ``point_mass``: a body on ``J`` slide
    joints along world x and y (PointObstacle, Maze, one arena robot). Actuator ``i`` drives joint
    ``i`` through ``gear[i]``. The dynamics are MuJoCo's ``implicitfast`` step:
    ``(M + h D) qacc = gear * ctrl - D qvel - bias``, ``qvel += h qacc``, ``qpos += h qvel``, run
    ``substeps`` times per control step. How the joint state sits in the observation is in the
    ``obs_*`` index arrays (``-1`` where absent).
    """

    kind: str
    """``"planar_arm"`` or ``"point_mass"``."""
    timestep: float
    """h: physics step, seconds."""
    substeps: int
    """Physics steps per control step (the env's frame skip)."""
    gear: np.ndarray
    """(J,) actuator gear: joint force = gear * control."""
    damping: np.ndarray
    """(J,) joint damping, N m s/rad or N s/m."""
    armature: np.ndarray
    """(J,) rotor inertia added to the mass matrix diagonal."""
    mass: np.ndarray
    """(L,) link masses (arm) or (1,) the body mass (point mass), kg."""
    com: np.ndarray
    """(L,) distance of each link's centre of mass from its joint along the link, metres (arm)."""
    inertia: np.ndarray
    """(L,) each link's moment of inertia about z through its centre of mass, kg m^2 (arm)."""
    link_lengths: np.ndarray
    """(L,) joint-to-joint lengths, the last one to the end effector, metres (arm)."""
    radius: np.ndarray
    """(L,) collision radius of each link (arm), or (1,) of the body (point mass), metres."""
    base: np.ndarray
    """(3,) world position of the first joint (arm) or of the body at ``qpos = 0`` (point mass)."""
    obs_qpos_index: np.ndarray
    """(J,) observation index holding each joint position, or -1."""
    obs_cos_index: np.ndarray
    """(J,) observation index holding cos(joint angle), or -1."""
    obs_sin_index: np.ndarray
    """(J,) observation index holding sin(joint angle), or -1."""
    obs_qvel_index: np.ndarray
    """(J,) observation index holding each joint velocity."""

    def __post_init__(self) -> None:
        if self.kind not in ROBOT_KINDS:
            raise ValueError(f"robot kind {self.kind!r} is not supported; expected one of {ROBOT_KINDS}")
        n_links = len(np.atleast_1d(self.mass))
        n_jnt = len(np.atleast_1d(self.gear))
        for name, shape, dtype in (
            ("gear", (n_jnt,), np.float64), ("damping", (n_jnt,), np.float64),
            ("armature", (n_jnt,), np.float64), ("mass", (n_links,), np.float64),
            ("com", (None,), np.float64), ("inertia", (None,), np.float64),
            ("link_lengths", (None,), np.float64), ("radius", (n_links,), np.float64),
            ("base", (3,), np.float64), ("obs_qpos_index", (n_jnt,), np.int64),
            ("obs_cos_index", (n_jnt,), np.int64), ("obs_sin_index", (n_jnt,), np.int64),
            ("obs_qvel_index", (n_jnt,), np.int64),
        ):
            value = np.atleast_1d(getattr(self, name))
            object.__setattr__(self, name, frozen_array(value, name, shape, dtype))
        if self.kind == "planar_arm" and not (
            len(self.com) == len(self.inertia) == len(self.link_lengths) == n_links == n_jnt
        ):
            raise ValueError(
                f"planar_arm needs one com, inertia, link length and radius per joint ({n_jnt}); got "
                f"{len(self.com)}, {len(self.inertia)}, {len(self.link_lengths)}, {n_links}"
            )
        if self.timestep <= 0 or int(self.substeps) < 1:
            raise ValueError(f"timestep {self.timestep} and substeps {self.substeps} must be > 0")
        object.__setattr__(self, "timestep", float(self.timestep))
        object.__setattr__(self, "substeps", int(self.substeps))
        encoded = (self.obs_qpos_index >= 0) | ((self.obs_cos_index >= 0) & (self.obs_sin_index >= 0))
        if not encoded.all():
            raise ValueError(
                f"every joint position must be observed (obs_qpos_index {self.obs_qpos_index.tolist()} "
                f"or obs_cos_index/obs_sin_index); joints {np.flatnonzero(~encoded).tolist()} are not"
            )

    @property
    def dt(self) -> float:
        """Seconds per control step."""
        return self.timestep * self.substeps


def velocity_feedforward(model: mujoco.MjModel, dof: int = 0, actuator: int = 0) -> float:
    """The constant action per m/s that holds a speed of ``dof`` against its joint damping.

    A force actuator of gear g pushing against damping d holds speed v with action ``d / g * v``;
    trackers and experts of point-mass tasks use it as their velocity feed-forward (Maze-v0: 2 N s/m
    over 2 N = 1; with ``damping=0.125``: 0.0625; an undamped joint: 0).
    """
    return float(model.dof_damping[dof] / model.actuator_gear[actuator, 0])


def _joint_actuators(model: mujoco.MjModel, joints: list[int]) -> np.ndarray:
    """Gear of the actuator driving each joint; actuator i must drive joint i."""
    gear = np.zeros(len(joints))
    if model.nu != len(joints):
        raise ValueError(f"model has {model.nu} actuators; expected one per joint ({len(joints)})")
    for i, j in enumerate(joints):
        if int(model.actuator_trnid[i, 0]) != j:
            raise ValueError(
                f"actuator {i} drives joint {int(model.actuator_trnid[i, 0])}; expected joint {j} "
                "(actuator i drives joint i)"
            )
        gear[i] = model.actuator_gear[i, 0]
    return gear


def planar_arm_model(
    model: mujoco.MjModel,
    frame_skip: int,
    bodies: tuple[str, ...],
    end_effector: str,
    obs_cos_index: tuple[int, ...],
    obs_sin_index: tuple[int, ...],
    obs_qvel_index: tuple[int, ...],
) -> RobotModel:
    """Read a planar serial arm: each body one hinge about z, each link along its body's x axis.

    Args:
        model: The compiled model.
        frame_skip: Physics steps per control step.
        bodies: Link body names from the base outwards.
        end_effector: Site name at the tip of the last link.
        obs_cos_index: Observation index of cos(q_i) per joint.
        obs_sin_index: Observation index of sin(q_i) per joint.
        obs_qvel_index: Observation index of qd_i per joint.

    Returns:
        The ``planar_arm`` model.

    Raises:
        ValueError: When a body has no single z hinge, a link or centre of mass is off its x axis,
            or the actuators do not map one to one onto the joints.
    """
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    ids = [model.body(b).id for b in bodies]
    joints, lengths, com, inertia, radius, mass = [], [], [], [], [], []
    for k, b in enumerate(ids):
        jnt = [j for j in range(model.njnt) if int(model.jnt_bodyid[j]) == b]
        if len(jnt) != 1 or int(model.jnt_type[jnt[0]]) != int(mujoco.mjtJoint.mjJNT_HINGE) or not (
            np.allclose(model.jnt_axis[jnt[0]], [0.0, 0.0, 1.0])
        ):
            raise ValueError(f"body {bodies[k]!r} must have exactly one hinge joint about z")
        joints.append(jnt[0])
        tip = model.body_pos[ids[k + 1]] if k + 1 < len(ids) else model.site(end_effector).pos
        for what, vec in (("link", tip), ("centre of mass", model.body_ipos[b])):
            if not np.allclose(vec[1:], 0.0):
                raise ValueError(f"body {bodies[k]!r}: {what} {vec.tolist()} is off the body's x axis")
        lengths.append(tip[0])
        com.append(model.body_ipos[b, 0])
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.body_iquat[b])
        rot = rot.reshape(3, 3)
        inertia.append((rot @ np.diag(model.body_inertia[b]) @ rot.T)[2, 2])
        radius.append(model.geom_size[model.body_geomadr[b], 0])
        mass.append(model.body_mass[b])
    dofs = [model.jnt_dofadr[j] for j in joints]
    return RobotModel(
        kind="planar_arm", timestep=model.opt.timestep, substeps=frame_skip,
        gear=_joint_actuators(model, joints), damping=model.dof_damping[dofs],
        armature=model.dof_armature[dofs], mass=mass, com=com, inertia=inertia, link_lengths=lengths,
        radius=radius, base=data.xpos[ids[0]], obs_qpos_index=[-1] * len(ids),
        obs_cos_index=obs_cos_index, obs_sin_index=obs_sin_index, obs_qvel_index=obs_qvel_index,
    )


def point_mass_model(
    model: mujoco.MjModel,
    frame_skip: int,
    body: str = "robot",
    obs_qpos_index: tuple[int, ...] = (0, 1),
    obs_qvel_index: tuple[int, ...] = (2, 3),
) -> RobotModel:
    """Read a body on slide joints along world x and y, driven by one motor per joint.

    Args:
        model: The compiled model.
        frame_skip: Physics steps per control step.
        body: The robot's body name (its first geom is the collision sphere).
        obs_qpos_index: Observation index of each slide position.
        obs_qvel_index: Observation index of each slide velocity.

    Returns:
        The ``point_mass`` model.

    Raises:
        ValueError: When the body's joints are not slides along x then y.
    """
    b = model.body(body).id
    joints = [j for j in range(model.njnt) if int(model.jnt_bodyid[j]) == b]
    axes = [model.jnt_axis[j].tolist() for j in joints]
    slide = all(int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_SLIDE) for j in joints)
    if not slide or axes != [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]:
        raise ValueError(f"body {body!r} has joint axes {axes}; expected slides along x then y")
    dofs = [model.jnt_dofadr[j] for j in joints]
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    return RobotModel(
        kind="point_mass", timestep=model.opt.timestep, substeps=frame_skip,
        gear=_joint_actuators(model, joints), damping=model.dof_damping[dofs],
        armature=model.dof_armature[dofs], mass=[model.body_mass[b]], com=[], inertia=[],
        link_lengths=[], radius=[model.geom_size[model.body_geomadr[b], 0]],
        # mj_kinematics ran at qpos0, where the slides are at 0: xpos is the body at q = 0.
        base=data.xpos[b],
        obs_qpos_index=obs_qpos_index, obs_cos_index=[-1, -1], obs_sin_index=[-1, -1],
        obs_qvel_index=obs_qvel_index,
    )

"""A differentiable torch twin of the robot, rebuilt from the plain-data ``RobotModel`` of a spec.

Two kinds cover the tasks: ``planar_arm`` (hinges about z, links in a plane: ArmReach) and
``point_mass`` (a body on x/y slides driven by forces: PointObstacle, Maze). The dynamics follow
MuJoCo's ``implicitfast`` step, ``v' = v + h (M + h D)^-1 (gear * u - D v - bias)``, ``q' = q + h v'``,
with no gravity along the joints (hinges about z, slides in the horizontal plane).

For constraint enforcement a chunk is predicted with the inertia and bias frozen at the chunk's
first state (``linear_rollout``): joint positions and velocities are then affine in the actions,
so joint limits become half-spaces of the action chunk. The exact step (``step``) is there for tests
and for measuring that approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ROBOT_KINDS = ("planar_arm", "point_mass")
# Spacing of the points sampled along each arm link for clearance checks, metres.
POINT_SPACING = 0.05


def _tensor(doc: dict[str, Any], key: str, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(doc[key], dtype=dtype)


@dataclass(frozen=True)
class LinearRollout:
    """Positions and velocities of a chunk as affine maps of its actions, for a batch.

    With ``a`` the flattened raw action chunk ``[B, H * A]``: ``q = q_free + q_map @ a`` and
    ``v = v_free + v_map @ a``, both ``[B, H * J]`` flattened time-major (step k is the state after
    the k-th action).
    """

    q_free: torch.Tensor
    """[B, H * J] positions under zero actions."""
    q_map: torch.Tensor
    """[B, H * J, H * A] d positions / d actions."""
    v_free: torch.Tensor
    """[B, H * J] velocities under zero actions."""
    v_map: torch.Tensor
    """[B, H * J, H * A] d velocities / d actions."""


class TorchRobot:
    """Kinematics and dynamics of a ``RobotModel`` (given as the dict of ``RobotModel.to_dict``).

    Args:
        doc: The robot model as plain data.
        dtype: Floating type of the computations (float64 matches MuJoCo to ~1e-12).
    """

    def __init__(self, doc: dict[str, Any], dtype: torch.dtype = torch.float64) -> None:
        kind = doc.get("kind")
        if kind not in ROBOT_KINDS:
            raise ValueError(f"robot kind {kind!r} is not supported; expected one of {ROBOT_KINDS}")
        self.kind = kind
        self.dtype = dtype
        self.h = float(doc["timestep"])
        self.substeps = int(doc["substeps"])
        self.gear = _tensor(doc, "gear", dtype)
        self.damping = _tensor(doc, "damping", dtype)
        self.armature = _tensor(doc, "armature", dtype)
        self.mass = _tensor(doc, "mass", dtype)
        self.base = _tensor(doc, "base", dtype)
        self.radius = _tensor(doc, "radius", dtype)
        self.n_joints = int(self.gear.numel())
        self.obs_qpos = [int(i) for i in doc["obs_qpos_index"]]
        self.obs_cos = [int(i) for i in doc["obs_cos_index"]]
        self.obs_sin = [int(i) for i in doc["obs_sin_index"]]
        self.obs_qvel = [int(i) for i in doc["obs_qvel_index"]]
        if kind == "planar_arm":
            self.lengths = _tensor(doc, "link_lengths", dtype)
            self.com = _tensor(doc, "com", dtype)
            L = self.n_joints
            # lower[k, j] = 1 when joint j moves link k (j <= k).
            self.lower = torch.tril(torch.ones(L, L, dtype=dtype))
            inertia = _tensor(doc, "inertia", dtype)
            self.rot_inertia = self.lower.T @ torch.diag(inertia) @ self.lower
            fracs, links, radii = [], [], []
            for k in range(L):
                n = max(1, int(torch.ceil(self.lengths[k] / POINT_SPACING)))
                f = torch.linspace(0.0, 1.0, n + 1, dtype=dtype)
                fracs.append(f)
                links.append(torch.full((n + 1,), k))
                radii.append(torch.full((n + 1,), float(self.radius[k]), dtype=dtype))
            self._point_frac = torch.cat(fracs)
            self._point_link = torch.cat(links)
            self.point_radius = torch.cat(radii)
        else:
            self.point_radius = self.radius[:1].clone()

    # -- state ---------------------------------------------------------------------------------
    def state_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint positions and velocities read from raw observations.

        Args:
            obs: [B, Do] raw observations.

        Returns:
            (q [B, J], v [B, J]).
        """
        obs = obs.to(self.dtype)
        q = torch.empty(obs.shape[0], self.n_joints, dtype=self.dtype)
        for j in range(self.n_joints):
            if self.obs_qpos[j] >= 0:
                q[:, j] = obs[:, self.obs_qpos[j]]
            else:
                q[:, j] = torch.atan2(obs[:, self.obs_sin[j]], obs[:, self.obs_cos[j]])
        return q, obs[:, self.obs_qvel]

    # -- kinematics ----------------------------------------------------------------------------
    def joint_positions(self, q: torch.Tensor) -> torch.Tensor:
        """Planar positions of the joints and the tip (arm) or of the body (point mass).

        Args:
            q: [..., J] joint positions.

        Returns:
            [..., L + 1, 2] for an arm (base joint first, end effector last); [..., 1, 2] for a
            point mass.
        """
        base = self.base[:2]
        if self.kind == "point_mass":
            return (base + q)[..., None, :]
        theta = torch.cumsum(q, dim=-1)
        steps = self.lengths[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], -1)
        tips = base + torch.cumsum(steps, dim=-2)
        return torch.cat([base.expand(*q.shape[:-1], 1, 2), tips], dim=-2)

    def end_effector(self, q: torch.Tensor) -> torch.Tensor:
        """[..., J] -> [..., 2] tip of the arm (the body for a point mass)."""
        return self.joint_positions(q)[..., -1, :]

    def collision_points(self, q: torch.Tensor) -> torch.Tensor:
        """Points whose distance minus ``point_radius`` is the robot's clearance.

        Args:
            q: [..., J] joint positions.

        Returns:
            [..., P, 3] world points (on the robot's plane, ``z = base[2]``).
        """
        joints = self.joint_positions(q)
        if self.kind == "point_mass":
            pts = joints
        else:
            a = joints[..., self._point_link, :]
            b = joints[..., self._point_link + 1, :]
            pts = a + self._point_frac[:, None] * (b - a)
        z = self.base[2].expand(*pts.shape[:-1], 1)
        return torch.cat([pts, z], dim=-1)

    def point_jacobian(self, q: torch.Tensor, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """D point / d q for collision points attached to the robot.

        Args:
            q: [..., J] joint positions.
            points: [..., K, 2] planar positions of the points (from ``collision_points``).
            index: [..., K] long, which collision point each one is (its link for an arm).

        Returns:
            [..., K, 2, J] Jacobians (a point on link l moves with joints 0..l).
        """
        if self.kind == "point_mass":
            eye = torch.eye(2, self.n_joints, dtype=q.dtype)
            return eye.expand(*points.shape[:-1], 2, self.n_joints)
        joints = self.joint_positions(q)[..., None, :-1, :]  # [..., 1, J, 2]
        r = points[..., None, :] - joints  # [..., K, J, 2]
        link = self._point_link[index]  # [..., K]
        moves = (torch.arange(self.n_joints) <= link[..., None])  # [..., K, J]
        # A hinge about z at joint j moves a point p by ez x (p - p_j) per radian.
        return torch.stack([-r[..., 1], r[..., 0]], dim=-2) * moves[..., None, :]

    # -- dynamics ------------------------------------------------------------------------------
    def _com_jacobian(self, q: torch.Tensor):
        joints = self.joint_positions(q)  # [..., L+1, 2]
        theta = torch.cumsum(q, dim=-1)
        e = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)  # [..., L, 2]
        com = joints[..., :-1, :] + self.com[:, None] * e
        r = com[..., :, None, :] - joints[..., None, :-1, :]  # [..., k, j, 2]
        jac = torch.stack([-r[..., 1], r[..., 0]], dim=-1) * self.lower[..., None]
        return jac, e, theta

    def mass_and_bias(self, q: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mass_matrix(q), bias(q, v))`` sharing one Jacobian evaluation."""
        if self.kind == "point_mass":
            return self.mass_matrix(q), torch.zeros_like(v)
        parts = self._com_jacobian(q)
        return self.mass_matrix(q, parts), self.bias(q, v, parts)

    def mass_matrix(self, q: torch.Tensor, _parts=None) -> torch.Tensor:
        """Joint-space inertia including rotor armature.

        Args:
            q: [..., J] joint positions.

        Returns:
            [..., J, J] symmetric positive definite.
        """
        arm = torch.diag(self.armature)
        if self.kind == "point_mass":
            return (torch.eye(self.n_joints, dtype=q.dtype) * self.mass[0] + arm).expand(
                *q.shape[:-1], self.n_joints, self.n_joints)
        jac, _, _ = _parts or self._com_jacobian(q)
        trans = torch.einsum("...kia,...kja,k->...ij", jac, jac, self.mass)
        return trans + self.rot_inertia + arm

    def bias(self, q: torch.Tensor, v: torch.Tensor, _parts=None) -> torch.Tensor:
        """Coriolis and centrifugal forces (MuJoCo's ``qfrc_bias`` without gravity along the joints).

        Args:
            q: [..., J] joint positions.
            v: [..., J] joint velocities.

        Returns:
            [..., J] generalized forces.
        """
        if self.kind == "point_mass":
            return torch.zeros_like(v)
        jac, e, _ = _parts or self._com_jacobian(q)
        w2 = torch.cumsum(v, dim=-1).square()  # link angular speed squared
        lengths, com = self.lengths, self.com
        # Centripetal acceleration of each centre of mass when qacc = 0: every joint before it
        # swings its link, and the link itself swings the centre of mass.
        link_acc = -(lengths * w2)[..., :, None] * e  # [..., L, 2]
        before = torch.cumsum(link_acc, dim=-2) - link_acc
        acc = before - (com * w2)[..., :, None] * e
        return torch.einsum("...kja,...ka,k->...j", jac, acc, self.mass)

    def step(self, q: torch.Tensor, v: torch.Tensor, ctrl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One control step (``substeps`` physics steps) with the full nonlinear model.

        Args:
            q: [..., J] positions.
            v: [..., J] velocities.
            ctrl: [..., A] controls (A = J), held for the whole step.

        Returns:
            (q', v') after the step.
        """
        h, damping = self.h, self.damping
        force = self.gear * ctrl
        for _ in range(self.substeps):
            m_tilde = self.mass_matrix(q) + h * torch.diag(damping)
            rhs = force - damping * v - self.bias(q, v)
            v = v + h * torch.linalg.solve(m_tilde, rhs.unsqueeze(-1)).squeeze(-1)
            q = q + h * v
        return q, v

    def linear_rollout(self, q0: torch.Tensor, v0: torch.Tensor, horizon: int,
                       nominal: tuple[torch.Tensor, torch.Tensor] | None = None) -> LinearRollout:
        """Affine maps from an action chunk to its states (a time-varying linearization).

        Step k's inertia and bias are evaluated at the state it starts from on a nominal
        trajectory (``nominal``: the states after each action, e.g. from an earlier call applied to
        a candidate chunk), or all frozen at ``(q0, v0)`` without one. Within a control step they
        are held fixed over the ``substeps`` physics steps.

        Args:
            q0: [B, J] positions at the chunk's start.
            v0: [B, J] velocities at the chunk's start.
            horizon: H, actions in the chunk.
            nominal: Optional (q [B, H, J], v [B, H, J]) states after each action.

        Returns:
            The maps (see ``LinearRollout``).
        """
        B, J, h = q0.shape[0], self.n_joints, self.h
        if nominal is None:
            qs, vs = q0[:, None].expand(B, horizon, J), v0[:, None].expand(B, horizon, J)
        else:
            qs = torch.cat([q0[:, None], nominal[0][:, :-1]], 1)
            vs = torch.cat([v0[:, None], nominal[1][:, :-1]], 1)
        damping = self.damping
        mass, bias = self.mass_and_bias(qs, vs)
        minv = torch.linalg.inv(mass + h * torch.diag(damping))  # [B, H, J, J]
        eye = torch.eye(J, dtype=q0.dtype).expand_as(minv)
        P = eye - h * minv * damping  # v' = P v + Q u + r per physics step
        Q = h * minv * self.gear
        r = -h * (minv @ bias.unsqueeze(-1))
        # One physics step on x = [q; v]: x' = A x + Bs u + rs; a control step is n of them.
        A = torch.cat([torch.cat([eye, h * P], -1), torch.cat([torch.zeros_like(eye), P], -1)], -2)
        Bs = torch.cat([h * Q, Q], -2)
        rs = torch.cat([h * r, r], -2)
        Ab, Bb, rb = A, Bs, rs
        for _ in range(self.substeps - 1):
            Bb, rb, Ab = A @ Bb + Bs, A @ rb + rs, A @ Ab
        # The chain over the chunk is H tiny matrix products: numpy's per-call overhead is a
        # fraction of torch's at this size, and nothing here needs gradients.
        Ab_np, Bb_np, rb_np = Ab.numpy(), Bb.numpy(), rb.numpy()
        # X = [S | x]: the action map and the free response, advanced together.
        X = np.zeros((B, 2 * J, horizon * J + 1))
        X[:, :J, -1], X[:, J:, -1] = q0.numpy(), v0.numpy()
        out = np.empty((B, horizon, 2 * J, horizon * J + 1))
        for k in range(horizon):
            X = Ab_np[:, k] @ X
            X[:, :, k * J:(k + 1) * J] = Bb_np[:, k]
            X[:, :, -1:] += rb_np[:, k]
            out[:, k] = X
        out_t = torch.from_numpy(out)
        free_t, maps_t = out_t[..., -1], out_t[..., :-1]
        return LinearRollout(
            q_free=free_t[..., :J].reshape(B, horizon * J),
            q_map=maps_t[:, :, :J].reshape(B, horizon * J, horizon * J),
            v_free=free_t[..., J:].reshape(B, horizon * J),
            v_map=maps_t[:, :, J:].reshape(B, horizon * J, horizon * J),
        )

"""``ChunkConstraint``: a constraint spec (plain data) enforced on action chunks while they are sampled.

The policy calls three hooks: ``begin(obs)`` once per chunk (reads the robot's state from the raw
observation and linearizes its dynamics over the chunk), ``step(x)`` after every denoising /
integration step, and ``finish(x)`` on the sample. ``x`` is the chunk in the policy's normalized
action units; bounds are converted with the action normalizer's centre and half range.

Methods (``ChunkConstraintConfig.method``):

- ``none``: nothing.
- ``clip``: the sample's executed actions are clamped into the hard limits (below); obstacles are
  ignored (a clamp has no notion of them).
- ``project``: every step projects the iterate onto the box and half-space sets (joint speed,
  joint range, action rate and linearized obstacle clearance) by averaged closed-form projections;
  the sample gets a longer projection and the hard-limit clamp.
- ``guidance``: every step descends the gradient of the obstacle-clearance cost; hard-limit clamp.
- ``cbf``: every step projects onto discrete control-barrier conditions on obstacle clearance,
  ``h_{k+1} >= (1 - gamma) h_k`` along the chunk (linearized); so does the sample; hard-limit clamp.
- ``final``: only the sample is projected (obstacles and limits); hard-limit clamp.

Hard-limit clamp (every method but ``none``): step by step along the executed actions, each action
is moved so that the predicted next joint velocity stays inside the speed limit (less a margin) and
inside a braking envelope of the joint range, then clamped into ``ctrlrange`` and the rate limit
from the previous action, which therefore hold exactly; speeds and positions hold up to the twin's
prediction error, which the margins absorb. Joint states go through ``TorchRobot`` (the robot's
dynamics), so torque commands can be held to joint-space limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policies.constraints.geometry import Obstacles
from policies.constraints.robot import TorchRobot
from policies.constraints.solvers import (
    averaged_projections,
    clamp_rate,
    penalty_gradient,
    velocity_box_step,
)

METHODS = ("none", "clip", "project", "guidance", "cbf", "final")
_FD = 1e-5  # finite-difference step for obstacle normals, metres
_EPS = 1e-5  # slack against float32 rounding of the executed actions
QUIET_SLACK = 0.15  # metres beyond obstacle_activation that count as far from every obstacle


@dataclass(kw_only=True)
class ChunkConstraintConfig:
    """How a constraint spec is enforced while a chunk is sampled."""

    method: str = "none"
    """One of ``none``, ``clip``, ``project``, ``guidance``, ``cbf``, ``final``."""
    velocity_margin: float = 0.1
    """Fraction of each joint speed limit kept free for the twin's prediction error."""
    position_margin: float = 0.05
    """Joint-range margin, rad or m."""
    brake_fraction: float = 0.5
    """Fraction of the full-torque deceleration assumed when braking before a joint limit."""
    obstacle_margin: float = 0.04
    """Clearance the chunk is pushed to keep from obstacles, metres."""
    obstacle_activation: float = 0.2
    """Obstacle rows are added only where the predicted clearance is below this, metres."""
    step_fraction: float = 0.3
    """Per-step methods act on the last fraction of the denoising steps (early iterates are
    mostly noise)."""
    step_iters: int = 3
    """Projection sweeps per denoising step."""
    final_iters: int = 16
    """Projection sweeps on the sample (half before, half after relinearizing the obstacles)."""
    obstacle_stride: int = 2
    """Obstacle rows at every this-many predicted states during denoising (the cost grows with the
    rows); the sample's own projection uses every state."""
    guidance_scale: float = 1.0
    """Step size of the cost-gradient guidance as a fraction of 1 / L, L the Lipschitz constant
    of the clearance cost's gradient (1 moves onto the constraint when a single row binds)."""
    cbf_gamma: float = 0.3
    """Decay rate of the discrete barrier condition, 0 < gamma <= 1."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"constraint method={self.method!r} is invalid; expected one of {list(METHODS)}")
        for name in ("velocity_margin", "step_fraction", "brake_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)}; expected a fraction in [0, 1]")
        if not 0.0 < self.cbf_gamma <= 1.0:
            raise ValueError(f"cbf_gamma={self.cbf_gamma}; expected 0 < gamma <= 1")
        if self.obstacle_stride < 1:
            raise ValueError(f"obstacle_stride={self.obstacle_stride}; expected >= 1")
        if self.step_iters < 1 or self.final_iters < 1:
            raise ValueError(f"step_iters={self.step_iters}, final_iters={self.final_iters}; expected >= 1")


def _vec(doc: dict[str, Any], key: str) -> torch.Tensor:
    return torch.as_tensor(doc[key], dtype=torch.float64)


class ChunkConstraint:
    """A spec's limits and obstacles enforced on [B, H, A] chunks in normalized units.

    Args:
        spec: ``ConstraintSpec.to_dict()`` of the task (plain data).
        action_center: [A] the action normalizer's centre (raw = centre + half_range * normalized).
        action_half_range: [A] the action normalizer's half range.
        horizon: H, actions per chunk.
        n_action_steps: Ta, actions executed from each chunk (the hard-limit clamp covers these).
        config: The method and its settings.

    Raises:
        ValueError: When the spec lacks a robot model but the method needs joint states, or shapes
            disagree.
    """

    def __init__(self, spec: dict[str, Any], action_center: torch.Tensor, action_half_range: torch.Tensor,
                 horizon: int, n_action_steps: int, config: ChunkConstraintConfig) -> None:
        self.config = config
        self.H, self.Ta = int(horizon), int(n_action_steps)
        self.center = action_center.detach().to(torch.float64)
        self.half = action_half_range.detach().to(torch.float64)
        A = self.center.numel()
        self.A = A
        # Bounds pulled in by _EPS so the policy's float32 unnormalization cannot round past them.
        self.low, self.high = _vec(spec, "ctrl_low") + _EPS, _vec(spec, "ctrl_high") - _EPS
        if self.low.numel() != A:
            raise ValueError(f"spec has {self.low.numel()} actuators; the policy has action_dim={A}")
        rate = spec.get("action_rate_limit")
        self.rate = None if rate is None else torch.as_tensor(rate, dtype=torch.float64) - 2 * _EPS
        self.robot = TorchRobot(spec["robot"]) if spec.get("robot") else None
        if self.robot is None and config.method != "none":
            raise ValueError(f"constraint method {config.method!r} needs the spec's robot model; "
                             "this spec has none (robot=None)")
        if self.robot is not None and self.robot.n_joints != A:
            raise ValueError(f"robot model has {self.robot.n_joints} joints; expected one per action ({A})")
        self.obstacles = Obstacles(spec.get("obstacles", []))
        self.q_low, self.q_high = _vec(spec, "joint_low"), _vec(spec, "joint_high")
        self.v_limit = _vec(spec, "joint_velocity_limit") * (1.0 - config.velocity_margin)
        # Normalized box of the actions, tiled over the chunk.
        self.y_low = ((self.low - self.center) / self.half).repeat(self.H)
        self.y_high = ((self.high - self.center) / self.half).repeat(self.H)
        self._prev: torch.Tensor | None = None
        self._state = None
        self._nominal = None
        self._quiet = False
        # numpy copies for the step-by-step clamp.
        self._rate_np = None if self.rate is None else self.rate.numpy()
        self._torque_np = (self.robot.gear * torch.maximum(self.high.abs(), self.low.abs())).numpy() \
            if self.robot is not None else None
        self._ramp_np = 0.0
        if self.rate is not None:
            u_max = torch.maximum(self.high.abs(), self.low.abs())
            steps = torch.arange(1, 64, dtype=torch.float64)[:, None]
            self._ramp_np = (u_max - steps * self.rate).clamp_min(0.0).sum(0).numpy()  # [A]

    # -- episode / chunk -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the last executed action (a new episode starts from zero control)."""
        self._prev = None
        self._nominal = None

    def begin(self, obs: torch.Tensor) -> None:
        """Read the state from the newest raw observation and linearize the chunk's dynamics.

        Args:
            obs: [B, Do] raw observation of the current step.
        """
        if self.config.method == "none":
            return
        q0, v0 = self.robot.state_from_obs(obs)
        B = q0.shape[0]
        if self._prev is None or self._prev.shape[0] != B:
            self._prev = torch.zeros(B, self.A, dtype=torch.float64)
            self._nominal = None
        # Linearize along the last chunk's predicted continuation (frozen at the start without one).
        # The bias grows with the nominal speeds and feeds the next nominal, so a continuation
        # predicted from a fast state could grow chunk after chunk to inf (then NaN actions):
        # its speeds are capped at max(|v0|, the speed limit) and a non-finite one is dropped.
        if self._nominal is not None:
            q_nom, v_nom = self._nominal
            if bool(torch.isfinite(q_nom).all()) and bool(torch.isfinite(v_nom).all()):
                cap = torch.maximum(v0.abs(), self.v_limit)[:, None]
                self._nominal = (q_nom, torch.minimum(torch.maximum(v_nom, -cap), cap))
            else:
                self._nominal = None
        self._state = (q0, v0, self.robot.linear_rollout(q0, v0, self.H, self._nominal))
        self._hard_rows = self._limit_rows() if self.config.method == "project" else None
        self._d0 = None
        self._quiet = False
        if len(self.obstacles):
            pts = self.robot.collision_points(q0)
            self._d0 = (self.obstacles.signed_distance(pts) - self.robot.point_radius[:, None]).amin(1)
            if self._nominal is not None:
                # Far from every obstacle along the last chunk's predicted continuation: the
                # per-step corrections are skipped (the sample's own correction still runs).
                pts = self.robot.collision_points(self._nominal[0])
                clear = self.obstacles.signed_distance(pts) - self.robot.point_radius[:, None]
                self._quiet = bool(clear.min() > self.config.obstacle_activation + QUIET_SLACK)

    # -- hooks -----------------------------------------------------------------------------------
    @property
    def corrects_steps(self) -> bool:
        """Whether ``step`` ever changes an iterate.

        ``clip`` and ``final`` act in ``finish`` only, so a sampler may skip the per-step hook and
        keep its fast path.
        """
        return self.config.method in ("project", "guidance", "cbf")

    def step(self, x: torch.Tensor, index: int, total: int) -> torch.Tensor:
        """Correct the iterate after denoising step ``index`` of ``total``.

        Args:
            x: [B, H, A] normalized iterate.
            index: 0-based step just taken.
            total: Steps in this sampling run.

        Returns:
            [B, H, A] the corrected iterate.
        """
        method = self.config.method
        if (method not in ("project", "guidance", "cbf") or self._quiet
                or index < total * (1 - self.config.step_fraction)):
            return x
        y = x.reshape(x.shape[0], -1).to(torch.float64)
        if method == "guidance":
            rows = self._obstacle_rows(y, barrier=False)
            if rows is not None:
                # Step size scale / (2 sum |c_i|^2) over the violated rows: the cost's gradient is
                # Lipschitz with that constant on their region, so scale = 1 cannot overshoot.
                C = rows[0]
                violated = ((C @ y.unsqueeze(-1)).squeeze(-1) > rows[1]).to(C.dtype)
                lipschitz = 2 * ((C * C).sum(-1) * violated).sum(-1, keepdim=True).clamp_min(1e-12)
                y = y - self.config.guidance_scale * penalty_gradient(y, *rows) / lipschitz
        else:
            rows = self._rows(y, barrier=method == "cbf", hard=method == "project")
            if rows is not None:
                y = averaged_projections(y, *rows, self.y_low, self.y_high, self.config.step_iters)
        return y.to(x.dtype).reshape(x.shape)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Correct the sample: the method's final projection, then the hard-limit clamp.

        Args:
            x: [B, H, A] normalized sample.

        Returns:
            [B, H, A] the enforced sample.
        """
        method = self.config.method
        if method == "none":
            return x
        y = x.reshape(x.shape[0], -1).to(torch.float64)
        if method in ("project", "final", "cbf"):
            # Obstacle rows are linearizations: relinearize once halfway through the sweeps. Joint
            # limits are left to the exact clamp below, except for per-step projection, whose
            # sets include them.
            for _ in range(2):
                rows = self._rows(y, barrier=method == "cbf", hard=method == "project", stride=1)
                if rows is None:
                    break
                y = averaged_projections(y, *rows, self.y_low, self.y_high, self.config.final_iters // 2)
        actions = self._clamp_hard(self.center + self.half * y.reshape(-1, self.H, self.A))
        self._prev = actions[:, self.Ta - 1].clone()
        return ((actions - self.center) / self.half).to(x.dtype)

    # -- rows --------------------------------------------------------------------------------------
    def _to_normalized(self, C: torch.Tensor, b: torch.Tensor):
        """Rows ``C a <= b`` on raw flattened actions -> rows on normalized ones."""
        center = self.center.repeat(self.H)
        return C * self.half.repeat(self.H), b - C @ center

    def _limit_rows(self):
        """Joint speed, joint range and action-rate rows of the linearized chunk (normalized)."""
        _, _, lin = self._state
        B, n = lin.v_map.shape[0], self.H * self.A
        v_lim = self.v_limit.repeat(self.H)
        q_hi = (self.q_high - self.config.position_margin).repeat(self.H)
        q_lo = (self.q_low + self.config.position_margin).repeat(self.H)
        C = [lin.v_map, -lin.v_map, lin.q_map, -lin.q_map]
        b = [v_lim - lin.v_free, v_lim + lin.v_free, q_hi - lin.q_free, lin.q_free - q_lo]
        if self.rate is not None:
            # (D a)_k = a_k - a_{k-1}: identity minus the identity shifted down by one step.
            shift = torch.diag(torch.ones(n - self.A, dtype=torch.float64), -self.A)
            diff = torch.eye(n, dtype=torch.float64) - shift
            rate = self.rate.repeat(self.H).expand(B, n).clone()
            offset = rate.clone()
            rate[:, :self.A] += self._prev
            offset[:, :self.A] -= self._prev
            C += [diff.expand(B, n, n), -diff.expand(B, n, n)]
            b += [rate, offset]
        C, b = torch.cat(C, 1), torch.cat(b, 1)
        return self._to_normalized(C, b)

    def _rows(self, y: torch.Tensor, barrier: bool, hard: bool, stride: int | None = None):
        hard_rows = None
        if hard:
            hard_rows = self._hard_rows if self._hard_rows is not None else self._limit_rows()
        parts = [r for r in (self._obstacle_rows(y, barrier, stride), hard_rows) if r is not None]
        if not parts:
            return None
        C, b = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
        # Rows that bind nowhere in the batch (b = +inf) only cost time: drop them.
        live = torch.isfinite(b).any(0)
        return (C[:, live], b[:, live]) if bool(live.any()) else None

    def _obstacle_rows(self, y: torch.Tensor, barrier: bool, stride: int | None = None):
        """Linearized clearance rows at the iterate ``y`` [B, n] (normalized), or ``None``.

        Plain rows ask ``d_k >= margin`` at every ``obstacle_stride``-th predicted state; barrier
        rows ask ``d_k - margin >= (1 - gamma) (d_{k-1} - margin)`` between consecutive ones, with
        ``d_0`` the current clearance.
        """
        if not len(self.obstacles):
            return None
        q0, _, lin = self._state
        B, J = y.shape[0], self.robot.n_joints
        a = self.center.repeat(self.H) + self.half.repeat(self.H) * y
        stride = stride or self.config.obstacle_stride
        # Rows at states stride-1, 2 stride-1, ...: the last state of every stride.
        q_map = lin.q_map.reshape(B, self.H, J, self.H * self.A)[:, stride - 1::stride]
        q_free = lin.q_free.reshape(B, self.H, J)[:, stride - 1::stride]
        H = q_map.shape[1]
        q = q_free + (q_map @ a[:, None, :, None]).squeeze(-1)  # [B, H', J]
        pts = self.robot.collision_points(q)  # [B, H', P, 3]
        radius = self.robot.point_radius[:, None]
        d_all = self.obstacles.signed_distance(pts) - radius  # [B, H, P, O]
        d, idx = d_all.min(dim=2)  # [B, H, O]
        n_obs = d.shape[-1]
        sel = torch.gather(pts, 2, idx[..., None].expand(B, H, n_obs, 3))  # [B, H, O, 3]
        # Outward normal of obstacle o at its nearest point, by forward differences in x and y.
        probe = sel[None].repeat(3, 1, 1, 1, 1)
        probe[1, ..., 0] += _FD
        probe[2, ..., 1] += _FD
        sd = self.obstacles.signed_distance(probe).diagonal(dim1=-2, dim2=-1)  # [3, B, H, O]
        normal = torch.stack([sd[1] - sd[0], sd[2] - sd[0]], -1) / _FD  # [B, H, O, 2]
        jac = self.robot.point_jacobian(q, sel[..., :2], idx)  # [B, H, O, 2, J]
        g_q = torch.einsum("bhoc,bhocj->bhoj", normal, jac)
        G = torch.einsum("bhoj,bhjn->bhon", g_q, q_map) * self.half.repeat(self.H)  # d d / d y
        margin = self.config.obstacle_margin
        Gy = (G @ y[:, None, :, None]).squeeze(-1)  # [B, H, O]
        if barrier:
            keep = 1.0 - self.config.cbf_gamma
            d_prev = torch.cat([self._d0[:, None], d[:, :-1]], 1)
            G_prev = torch.cat([torch.zeros_like(G[:, :1]), G[:, :-1]], 1)
            Gy_prev = torch.cat([torch.zeros_like(Gy[:, :1]), Gy[:, :-1]], 1)
            C = -(G - keep * G_prev)
            b = (d - margin) - keep * (d_prev - margin) - (Gy - keep * Gy_prev)
        else:
            C, b = -G, d - margin - Gy
        b = torch.where(d < self.config.obstacle_activation, b, torch.full_like(b, math.inf))
        return C.reshape(B, H * n_obs, -1), b.reshape(B, H * n_obs)

    # -- hard limits -------------------------------------------------------------------------------
    def _clamp_hard(self, actions: torch.Tensor) -> torch.Tensor:
        """Executed actions inside ctrlrange, the rate limit, joint speed and a braking envelope.

        Args:
            actions: [B, H, A] raw actions.

        Returns:
            [B, H, A] raw actions; the first Ta hold every hard limit (speeds and positions up to
            the twin's error), the rest the box and rate limit.
        """
        q0, _, lin = self._state
        c = self.config
        B, H, J, A, Ta = actions.shape[0], self.H, self.robot.n_joints, self.A, self.Ta
        a = actions.numpy().copy()
        V = lin.v_map.numpy().reshape(B, H, J, H, A)
        Qm = lin.q_map.numpy().reshape(B, H, J, H, A)
        v_free, q_free = lin.v_free.numpy().reshape(B, H, J), lin.q_free.numpy().reshape(B, H, J)
        gains = np.stack([V[:, k, :, k] for k in range(Ta)], 1)  # [B, Ta, J, A]
        inv_gains = np.linalg.inv(gains)
        low, high, rate = self.low.numpy(), self.high.numpy(), self._rate_np
        v_limit, q_low, q_high = self.v_limit.numpy(), self.q_low.numpy(), self.q_high.numpy()
        # Deceleration available to each joint at brake_fraction of full torque.
        m_diag = self.robot.mass_matrix(q0).diagonal(dim1=-2, dim2=-1).numpy()
        decel = c.brake_fraction * self._torque_np / m_diag  # [B, J]
        # A rate limit stops the torque from reversing at once: from full command it keeps pushing
        # for sum_i (u_max - i r)^+ more steps' worth while ramping down, so the speed bound
        # leaves room for that much more velocity.
        v_cap = np.maximum(v_limit - np.abs(np.diagonal(gains, axis1=-2, axis2=-1)) * self._ramp_np, 0.0)
        # Room to a joint limit, less one step at full speed, must allow braking to a stop.
        reach = c.position_margin + self.robot.h * self.robot.substeps * v_limit
        prev, q_k = self._prev.numpy(), q0.numpy()
        for k in range(Ta):
            lo = low if rate is None else np.maximum(prev - rate, low)
            hi = high if rate is None else np.minimum(prev + rate, high)
            v_hi = np.minimum(v_cap[:, k], np.sqrt(2 * decel * np.maximum(q_high - reach - q_k, 0.0)))
            v_lo = -np.minimum(v_cap[:, k], np.sqrt(2 * decel * np.maximum(q_k - q_low - reach, 0.0)))
            before = v_free[:, k] + np.einsum("bjha,bha->bj", V[:, k, :, :k], a[:, :k])
            prev = a[:, k] = velocity_box_step(a[:, k], before, gains[:, k], inv_gains[:, k], v_lo, v_hi,
                                               np.broadcast_to(lo, (B, A)), np.broadcast_to(hi, (B, A)))
            q_k = q_free[:, k] + np.einsum("bjha,bha->bj", Qm[:, k, :, :k + 1], a[:, :k + 1])
        a[:, Ta:] = clamp_rate(a[:, Ta:], prev, rate, low, high)
        # This chunk's predicted states from step Ta on are the next chunk's linearization points.
        flat = a.reshape(B, H * A, 1)
        q_pred = q_free + (Qm.reshape(B, H, J, H * A) @ flat[:, None])[..., 0]
        v_pred = v_free + (V.reshape(B, H, J, H * A) @ flat[:, None])[..., 0]
        pad = lambda x: np.concatenate([x[:, Ta:], np.repeat(x[:, -1:], Ta, 1)], 1)  # noqa: E731
        self._nominal = (torch.from_numpy(pad(q_pred)), torch.from_numpy(pad(v_pred)))
        return torch.from_numpy(a)

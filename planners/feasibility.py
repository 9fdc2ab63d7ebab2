"""Dynamics feasibility of a predicted action chunk, with MuJoCo in the loop, and its repair.

A chunk is rolled forward from the robot's current state on the task's own model (a private copy
and private ``MjData``: ``envs.physics_rollout.PhysicsRollout``, never the env's data). Along the
rollout it finds penetration (contacts deeper than a tolerance), joint-range and joint-speed
violations (the ``ConstraintSpec``), and generalized forces beyond the actuators' torque limits,
computed by inverse dynamics (``mj_inverse``) on the rolled-out (or any planned) states. An
infeasible chunk is repaired: candidates that scale the chunk towards zero command, and chunks
drawn from an optional resampler, are rolled out together, and the first feasible one (largest
scale, else the first resample) wins, within a time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mujoco
import numpy as np

from envs.constraints import ConstraintSpec
from envs.physics_rollout import PhysicsRollout


@dataclass(kw_only=True)
class FeasibilityConfig:
    """What counts as infeasible and how hard repair tries."""

    penetration_tol: float = 1e-3
    """Contacts deeper than this (metres) count as penetration."""
    limit_tol: float = 0.0
    """Slack beyond joint ranges and speed limits before a violation counts."""
    torque_tol: float = 0.05
    """Slack beyond the torque limits before a violation counts, as a fraction of each limit's
    magnitude: inverse dynamics from states a control step apart sees the step's mean
    acceleration, not the per-substep one the integrator applied."""
    scales: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
    """Repair candidates: the chunk times each scale (after clipping to ctrlrange), in order."""
    time_budget_s: float = 0.05
    """Wall-clock budget of one ``repair`` call; resampling stops when it is spent."""
    max_resamples: int = 4
    """Most chunks drawn from the resampler per ``repair`` call."""

    def __post_init__(self) -> None:
        for name in ("penetration_tol", "limit_tol", "torque_tol", "time_budget_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 0")
        if not self.scales or any(not 0.0 <= s <= 1.0 for s in self.scales):
            raise ValueError(f"scales={self.scales}; expected a non-empty tuple of values in [0, 1]")
        if self.max_resamples < 0:
            raise ValueError(f"max_resamples={self.max_resamples}; expected >= 0")


@dataclass(kw_only=True)
class FeasibilityReport:
    """Violations found along one rolled-out chunk."""

    penetration: float
    """Deepest contact penetration along the chunk, metres (0 when none)."""
    joint_violations: int
    """(step, joint) pairs outside the joint range."""
    velocity_violations: int
    """(step, joint) pairs above the joint speed limit."""
    torque_violations: int
    """(step, actuated dof) pairs whose inverse-dynamics force exceeds the torque limit."""
    first_violation: int | None
    """Index of the first control step with any violation, or ``None``."""
    feasible: bool = field(init=False)
    """No violation of any kind."""

    def __post_init__(self) -> None:
        self.feasible = self.first_violation is None


class FeasibilityChecker:
    """Roll chunks out on a private copy of the task's model and check them against its spec.

    Args:
        model: The task's model (copied, never changed).
        spec: The task's constraint spec (limits, torque limits).
        frame_skip: Physics steps per control step of the env.
        config: Tolerances and repair settings.
    """

    def __init__(self, model: mujoco.MjModel, spec: ConstraintSpec, frame_skip: int,
                 config: FeasibilityConfig | None = None) -> None:
        self.config = config or FeasibilityConfig()
        self.spec = spec
        self.rollout = PhysicsRollout(model, frame_skip)
        self.model = self.rollout.model
        # Discrete-time inverse dynamics: the inverse of the implicit integrator's own step.
        self.model.opt.enableflags |= int(mujoco.mjtEnableBit.mjENBL_INVDISCRETE)
        self.data = mujoco.MjData(self.model)
        self.dt = float(model.opt.timestep) * frame_skip
        self.qpos_index = np.asarray(spec.joint_qpos_index)
        self.dof_index = np.asarray(spec.joint_dof_index)
        # The dof each actuator drives (joint transmissions) and its force range there.
        self.act_dof = np.array([self.model.jnt_dofadr[self.model.actuator_trnid[a, 0]]
                                 for a in range(self.model.nu)])

    # -- checks ------------------------------------------------------------------------------------
    def inverse_forces(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Generalized forces that carry a planned state sequence from each state to the next.

        Step k's force is ``mj_inverse`` at the mean of states k and k + 1 with the acceleration
        ``(v_{k+1} - v_k) / dt`` (the step's mean acceleration, dt one control step).

        Args:
            qpos: [T + 1, nq] planned positions, the start state first.
            qvel: [T + 1, nv] planned velocities.

        Returns:
            [T, nv] ``qfrc_inverse`` per step.
        """
        qpos, qvel = np.asarray(qpos, np.float64), np.asarray(qvel, np.float64)
        qacc = np.diff(qvel, axis=0) / self.dt
        out = np.empty_like(qacc)
        d = self.data
        # Evaluated mid-step: damping and bias forces act on the step's mean velocity.
        q_mid, v_mid = 0.5 * (qpos[1:] + qpos[:-1]), 0.5 * (qvel[1:] + qvel[:-1])
        for t in range(len(qacc)):
            d.qpos[:], d.qvel[:], d.qacc[:] = q_mid[t], v_mid[t], qacc[t]
            mujoco.mj_inverse(self.model, d)
            out[t] = d.qfrc_inverse
        return out

    def check_states(self, qpos: np.ndarray, qvel: np.ndarray) -> FeasibilityReport:
        """Check a planned (or rolled-out) state sequence.

        Args:
            qpos: [T + 1, nq] positions: the start, then after each control step.
            qvel: [T + 1, nv] velocities, the same way.

        Returns:
            The violations found along the T steps (step k ends at state k + 1).
        """
        spec, tol = self.spec, self.config.limit_tol
        force = self.inverse_forces(qpos, qvel)[:, self.act_dof]
        qpos, qvel = qpos[1:], qvel[1:]
        q, v = qpos[:, self.qpos_index], qvel[:, self.dof_index]
        bad_q = (q < spec.joint_low - tol) | (q > spec.joint_high + tol)
        bad_v = np.abs(v) > spec.joint_velocity_limit + tol
        limit = spec.torque_limit
        f_tol = self.config.torque_tol * np.abs(limit)
        bad_f = (force < limit[:, 0] - f_tol[:, 0]) | (force > limit[:, 1] + f_tol[:, 1])
        depth = np.zeros(len(qpos))
        d = self.data
        for t in range(len(qpos)):
            d.qpos[:], d.qvel[:] = qpos[t], qvel[t]
            mujoco.mj_fwdPosition(self.model, d)
            if d.ncon:
                depth[t] = max(0.0, -float(d.contact.dist[:d.ncon].min()))
        bad = bad_q.any(1) | bad_v.any(1) | bad_f.any(1) | (depth > self.config.penetration_tol)
        first = int(np.argmax(bad)) if bad.any() else None
        return FeasibilityReport(penetration=float(depth.max(initial=0.0)),
                                 joint_violations=int(bad_q.sum()), velocity_violations=int(bad_v.sum()),
                                 torque_violations=int(bad_f.sum()), first_violation=first)

    def check(self, state: np.ndarray, actions: np.ndarray) -> list[FeasibilityReport]:
        """Roll chunks out from a full-physics state and check each.

        Args:
            state: (nstate,) full-physics state (``envs.physics_rollout.physics_state``).
            actions: [T, nu] one chunk or [K, T, nu] several.

        Returns:
            One report per chunk.
        """
        actions = np.asarray(actions, np.float64)
        batch = actions if actions.ndim == 3 else actions[None]
        states = self.rollout.run(state, batch)
        start = np.broadcast_to(np.asarray(state, np.float64), (len(batch), 1, len(state)))
        states = np.concatenate([start, states], axis=1)
        qpos, qvel = self.rollout.qpos(states), self.rollout.qvel(states)
        return [self.check_states(qpos[k], qvel[k]) for k in range(len(batch))]

    # -- repair ------------------------------------------------------------------------------------
    def repair(
        self, state: np.ndarray, actions: np.ndarray, resample: Callable[[], np.ndarray] | None = None
    ) -> tuple[np.ndarray, FeasibilityReport, dict]:
        """A feasible version of a chunk, or the least bad one found within the time budget.

        Args:
            state: (nstate,) full-physics state the chunk starts from.
            actions: [T, nu] the predicted chunk.
            resample: Optional callable drawing a new [T, nu] chunk (e.g. the policy sampling
                again); tried after the scaled candidates while budget is left.

        Returns:
            (chunk, its report, info): info holds ``candidate`` (``"scale=<s>"`` or
            ``"resample=<i>"``), ``rolled_out`` (chunks simulated) and ``seconds``.
        """
        t0 = time.perf_counter()
        c, spec = self.config, self.spec
        clipped = np.clip(np.asarray(actions, np.float64), spec.ctrl_low, spec.ctrl_high)
        candidates = np.stack([clipped * s for s in c.scales])
        reports = self.check(state, candidates)
        names = [f"scale={s:g}" for s in c.scales]
        best = next((i for i, r in enumerate(reports) if r.feasible), None)
        chunks = list(candidates)
        n_resample = 0
        while (best is None and resample is not None and n_resample < c.max_resamples
               and time.perf_counter() - t0 < c.time_budget_s):
            chunk = np.clip(np.asarray(resample(), np.float64), spec.ctrl_low, spec.ctrl_high)
            report = self.check(state, chunk)[0]
            chunks.append(chunk)
            reports.append(report)
            names.append(f"resample={n_resample}")
            n_resample += 1
            if report.feasible:
                best = len(chunks) - 1
        if best is None:
            # Nothing feasible: the candidate whose first violation comes latest, then the shallowest.
            def badness(i: int):
                r = reports[i]
                return (-(r.first_violation if r.first_violation is not None else len(clipped)),
                        r.penetration, r.joint_violations + r.velocity_violations + r.torque_violations)
            best = min(range(len(chunks)), key=badness)
        info = {"candidate": names[best], "rolled_out": len(chunks), "seconds": time.perf_counter() - t0}
        return chunks[best].astype(np.asarray(actions).dtype), reports[best], info

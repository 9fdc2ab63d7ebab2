"""A runtime dynamics guard: every command is simulated on a cloned ``MjData`` before it is sent.

Action-space enforcement (clamps, rate limits, a torch twin of the rigid-body dynamics) bounds the
torque, not what the joints do with it: a contact impulse, a rate limit that stops the torque from
reversing in time, or the twin's linearization error can still carry a joint past its speed limit
or its range. The guard closes that gap with MuJoCo in the loop. For each command it

1. clamps it into ``ctrlrange`` and the action-rate limit around the control now applied,
2. rolls it out one control step on a private ``MjData`` (the env's full integration state, warm
   start included, so the prediction is the env's own next step bit for bit), then follows it with
   a braking continuation (a feedback law that drives the joint speeds to zero within the same
   box and rate limit) for ``horizon`` more control steps, and
3. accepts the command when no predicted state along that rollout leaves the joint ranges or
   exceeds the speed limits. Otherwise it searches the segment between the braking command and the
   requested one for the command closest to the request that passes (bisection), and sends the
   braking command when nothing closer passes.

Checking the continuation, not only the next step, is what makes the guard recursive: a command
accepted at step t comes with a verified way to stop, whose first action is again acceptable at
step t + 1, so the arm is never driven into a state from which the limits cannot be held.

The env's model is read, never changed, and its data only read (``mj_getState``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from envs.constraints import ConstraintSpec

_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


@dataclass(kw_only=True)
class DynamicsGuardConfig:
    """How far ahead the guard looks and how hard it searches."""

    horizon: int = 16
    """Control steps of the braking continuation checked after the command."""
    velocity_margin: float = 0.0
    """Fraction of each joint speed limit kept free (the prediction is exact in simulation; a real
    robot's model error needs a margin)."""
    position_margin: float = 0.0
    """Joint-range margin kept free, rad or m."""
    brake_time: float = 0.05
    """Seconds in which the braking law asks to stop (shorter saturates the actuators sooner)."""
    bisections: int = 5
    """Bisection steps between the braking and the requested command."""
    avoid_contacts: bool = False
    """Also count a contact at the end of any predicted control step as a violation (its excess
    is 1 + the penetration depth in metres), so the guard brakes before an impact it can foresee:
    a last line of defence for obstacles that sampling-time enforcement missed."""

    def __post_init__(self) -> None:
        if self.horizon < 0:
            raise ValueError(f"horizon={self.horizon}; expected >= 0")
        if not 0.0 <= self.velocity_margin < 1.0:
            raise ValueError(f"velocity_margin={self.velocity_margin}; expected a fraction in [0, 1)")
        if self.position_margin < 0:
            raise ValueError(f"position_margin={self.position_margin}; expected >= 0")
        if self.brake_time <= 0:
            raise ValueError(f"brake_time={self.brake_time}; expected > 0 seconds")
        if self.bisections < 0:
            raise ValueError(f"bisections={self.bisections}; expected >= 0")


@dataclass
class GuardStep:
    """What the guard did with one command."""

    sent: np.ndarray
    """(nu,) the command sent."""
    intervened: bool
    """The sent command differs from the request (clamped, rate-limited or repaired)."""
    repaired: bool
    """The clamped request failed the dynamics check and was moved towards braking."""
    excess: float
    """Worst predicted excess of the sent command's rollout over the limits, as a fraction of the
    limit for speeds, in rad/m for positions, 1 + depth for a contact with ``avoid_contacts``; 0 when
    it passed)."""
    scale: float = field(default=1.0)
    """Where the sent command lies between braking (0) and the clamped request (1)."""


class DynamicsGuard:
    """Check and repair commands against joint-speed and joint-range limits with MuJoCo in the loop.

    Args:
        model: The env's model (read only; geometry changes of the env are seen at once).
        spec: Limits to hold: ``ctrl_low``/``ctrl_high``, ``action_rate_limit``, ``joint_low``/
            ``joint_high`` and ``joint_velocity_limit`` (e.g. a tightened copy of the task's spec).
        frame_skip: Physics steps per control step of the env.
        config: Look-ahead and search settings.

    Raises:
        ValueError: When the spec's actuators do not match the model's or a bound is not finite.
    """

    def __init__(self, model: mujoco.MjModel, spec: ConstraintSpec, frame_skip: int,
                 config: DynamicsGuardConfig | None = None) -> None:
        if frame_skip < 1:
            raise ValueError(f"frame_skip={frame_skip}; expected >= 1")
        if len(spec.ctrl_low) != model.nu:
            raise ValueError(f"spec has {len(spec.ctrl_low)} actuators; the model has nu={model.nu}")
        self.config = config or DynamicsGuardConfig()
        self.model = model
        self.data = mujoco.MjData(model)
        self.frame_skip = int(frame_skip)
        self.dt = float(model.opt.timestep) * self.frame_skip
        self.low = np.asarray(spec.ctrl_low, np.float64)
        self.high = np.asarray(spec.ctrl_high, np.float64)
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ValueError(f"ctrl bounds {self.low.tolist()} / {self.high.tolist()} must be finite")
        self.rate = None if spec.action_rate_limit is None else np.asarray(spec.action_rate_limit, np.float64)
        c = self.config
        self.qpos_index = np.asarray(spec.joint_qpos_index)
        self.dof_index = np.asarray(spec.joint_dof_index)
        self.q_low = np.asarray(spec.joint_low, np.float64) + c.position_margin
        self.q_high = np.asarray(spec.joint_high, np.float64) - c.position_margin
        self.v_limit = np.asarray(spec.joint_velocity_limit, np.float64) * (1.0 - c.velocity_margin)
        # Each actuator's joint dof and gear: the braking law maps a desired joint torque to controls.
        trn = model.actuator_trnid[:, 0]
        if np.any(model.actuator_trntype != int(mujoco.mjtTrn.mjTRN_JOINT)):
            raise ValueError("DynamicsGuard needs joint-transmission actuators (one joint per actuator)")
        self.act_dof = np.array([int(model.jnt_dofadr[j]) for j in trn])
        self.gear = np.asarray(model.actuator_gear[:, 0], np.float64)
        self._state = np.empty(mujoco.mj_stateSize(model, _STATE))
        self._torque = np.empty(model.nv)
        self.steps = 0
        self.interventions = 0
        self.repairs = 0
        self.unresolved = 0
        self.non_finite = 0

    # -- public ------------------------------------------------------------------------------------
    def filter(self, command: np.ndarray, data: mujoco.MjData) -> GuardStep:
        """The command to send from the env's current state.

        Args:
            command: (nu,) the requested command.
            data: The env's ``MjData`` (read only); its ``ctrl`` is the command applied last, the
                rate limit's reference (zero after a reset).

        Returns:
            The decision; ``sent`` passes the dynamics check (``excess == 0``) whenever the
            braking command does: the request itself, or the passing point found by bisection
            between the two. A command with a non-finite entry is refused and the braking command
            sent instead (counted in ``non_finite``).
        """
        cmd = np.asarray(command, np.float64).reshape(-1)
        if cmd.size != self.model.nu:
            raise ValueError(f"command has {cmd.size} entries; expected {self.model.nu}")
        self.steps += 1
        mujoco.mj_getState(self.model, data, self._state, _STATE)
        prev = np.asarray(data.ctrl, np.float64).copy()
        self._restore()
        brake = self._brake(prev)
        finite = bool(np.isfinite(cmd).all())
        if not finite:
            # Refused (never NaN into MuJoCo): the robot brakes instead.
            self.non_finite += 1
            wanted = brake
        else:
            lo, hi = self._box(prev)
            wanted = np.clip(cmd, lo, hi)
        excess = self._excess(wanted, prev)
        scale, sent, repaired = float(finite), wanted, False
        if excess > 0.0 and finite:
            repaired = True
            self.repairs += 1
            brake_excess = self._excess(brake, prev)
            if brake_excess > 0.0:
                # Even braking now leaves the limits (a state no command could save): brake anyway,
                # it is the least violating choice the guard knows of.
                sent, excess, scale = brake, brake_excess, 0.0
            else:
                # Bisection from braking (passes) towards the request (fails).
                good, bad = 0.0, 1.0
                for _ in range(self.config.bisections):
                    mid = 0.5 * (good + bad)
                    if self._excess(brake + mid * (wanted - brake), prev) > 0.0:
                        bad = mid
                    else:
                        good = mid
                scale, excess = good, 0.0
                sent = brake + good * (wanted - brake)
        self.unresolved += excess > 0.0
        intervened = not finite or bool(np.any(sent != cmd))
        self.interventions += intervened
        return GuardStep(sent=sent, intervened=intervened, repaired=repaired, excess=float(excess),
                         scale=float(scale))

    def predict(self, command: np.ndarray, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """The state one control step ahead under ``command``, as the guard predicts it.

        Args:
            command: (nu,) controls held for the step (sent as given: no clamp).
            data: The env's ``MjData`` (read only).

        Returns:
            (qpos (nq,), qvel (nv,)) copies.
        """
        mujoco.mj_getState(self.model, data, self._state, _STATE)
        self._restore()
        self.data.ctrl[:] = np.asarray(command, np.float64).reshape(-1)
        mujoco.mj_step(self.model, self.data, self.frame_skip)
        return self.data.qpos.copy(), self.data.qvel.copy()

    def summary(self) -> dict[str, int]:
        """Counts since construction, JSON-ready."""
        return {"commands": self.steps, "interventions": self.interventions, "repairs": self.repairs,
                "unresolved": self.unresolved, "non_finite": self.non_finite}

    # -- internals ---------------------------------------------------------------------------------
    def _box(self, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.rate is None:
            return self.low, self.high
        # prev may sit outside a tightened ctrlrange (an earlier unguarded command): the rate
        # limit then wins, moving back towards the box as fast as allowed.
        lo = np.maximum(self.low, prev - self.rate)
        hi = np.minimum(self.high, prev + self.rate)
        return np.minimum(lo, hi), np.maximum(lo, hi)

    def _restore(self) -> None:
        mujoco.mj_setState(self.model, self.data, self._state, _STATE)

    def _brake(self, prev: np.ndarray) -> np.ndarray:
        """Braking command at the private data's state.

        ``M (-v / brake_time)`` as controls, moved from ``prev`` towards it as far as the box and
        rate limit allow (one scale for every actuator, so the coupled joints keep the direction
        of the change).
        """
        d = self.data
        # The inertia at this state (mj_step leaves the previous substep's): position stage only,
        # which mj_step recomputes anyway, so the rollout itself is unchanged.
        mujoco.mj_fwdPosition(self.model, d)
        mujoco.mj_mulM(self.model, d, self._torque, d.qvel / -self.config.brake_time)
        target = np.clip(self._torque[self.act_dof] / self.gear, self.low, self.high)
        lo, hi = self._box(prev)
        step = target - prev
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(step > 0, (hi - prev) / step, np.where(step < 0, (lo - prev) / step, np.inf))
        alpha = float(np.clip(room.min(initial=1.0), 0.0, 1.0))
        return np.clip(prev + alpha * step, lo, hi)

    def _over(self) -> float:
        d = self.data
        v = np.abs(d.qvel[self.dof_index]) / self.v_limit - 1.0
        q = d.qpos[self.qpos_index]
        over = max(float(v.max()), float((q - self.q_high).max()), float((self.q_low - q).max()), 0.0)
        if self.config.avoid_contacts and d.ncon:
            # The env's own collision flag: contacts found by the step's last collision pass.
            over = max(over, 1.0 + max(0.0, -float(d.contact.dist[:d.ncon].min())))
        return over

    def _excess(self, command: np.ndarray, prev: np.ndarray) -> float:
        """Worst excess over the limits along ``command`` then the braking continuation."""
        m, d = self.model, self.data
        self._restore()
        d.ctrl[:] = command
        mujoco.mj_step(m, d, self.frame_skip)
        worst = self._over()
        last = command
        for _ in range(self.config.horizon):
            if worst > 0.0:
                break
            last = self._brake(last)
            d.ctrl[:] = last
            mujoco.mj_step(m, d, self.frame_skip)
            worst = self._over()
        return worst

"""Sampling MPC over the task's own MuJoCo model: predictive sampling, MPPI and CEM.

All three share one loop (MuJoCo MPC's structure): propose K spline-parametrized action sequences
around a nominal, roll them out in parallel from the current state with ``mujoco.rollout`` on the
planner's own ``MjData``, score them with a pure numpy cost, update the nominal. They differ only
in the proposal and the update:

- predictive sampling (Howell et al. 2022): the nominal plus Gaussian perturbations; keep the best.
- MPPI (Williams et al. 2017): the cost-weighted average of the samples (softmax, temperature).
- CEM: refit a Gaussian to the elite samples over a few iterations; keep the best sample.

Between control steps the nominal is warm-started: the last plan's spline is shifted by the time
that passed (read from the state). Every action is projected into the actuators' ``ctrlrange``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from envs.physics_rollout import PhysicsRollout
from planners.base import Plan, check_state
from planners.costs import CostFn, Trajectories, cost_preset
from planners.splines import INTERPOLATIONS, basis, interpolate, shift_knots


@dataclass(kw_only=True)
class SamplingConfig:
    """Settings shared by the sampling planners."""

    samples: int = 64
    """K candidate action sequences per iteration."""
    horizon: int = 32
    """T control steps planned."""
    knots: int = 6
    """P spline knots spread evenly over the horizon."""
    interpolation: str = "cubic"
    """``zero`` (hold), ``linear`` or ``cubic`` (Catmull-Rom) between knots."""
    noise: float = 0.3
    """Std of the knot perturbations, as a fraction of each control's half-range (1 if unlimited)."""
    iterations: int = 1
    """Sample-and-update rounds per plan."""
    nthread: int = 2
    """Threads of the rollout pool."""
    substeps: int | None = None
    """Physics steps per control step in the planning model; ``None`` keeps the task's frame skip
    (exact prediction), fewer scale the planning model's timestep up (faster, approximate)."""
    seed: int = 0
    """Seed of the sampler, used when ``reset`` is given none."""

    def __post_init__(self) -> None:
        for name in ("samples", "horizon", "knots", "iterations", "nthread"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 1")
        if self.samples < 2:
            raise ValueError(f"samples {self.samples} must be >= 2 (the nominal and a perturbation)")
        if self.knots > self.horizon:
            raise ValueError(f"knots {self.knots} must be <= horizon {self.horizon}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is unknown; expected one of "
                             f"{INTERPOLATIONS}")
        if not self.noise > 0:
            raise ValueError(f"noise {self.noise} must be > 0")
        if self.substeps is not None and self.substeps < 1:
            raise ValueError(f"substeps {self.substeps} must be >= 1 (or None)")


@dataclass(kw_only=True)
class MPPIConfig(SamplingConfig):
    """MPPI settings."""

    temperature: float = 0.1
    """Softmax temperature on costs normalized to [0, 1] by the batch's range (scale-free)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature {self.temperature} must be > 0")


@dataclass(kw_only=True)
class CEMConfig(SamplingConfig):
    """Cross-entropy method settings."""

    iterations: int = 2
    """Refits of the sampling Gaussian per plan."""
    elites: int = 8
    """Best samples the Gaussian is refitted to."""
    min_noise: float = 0.05
    """Floor of the refitted std, as a fraction of the half-range (keeps exploring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 2 <= self.elites <= self.samples:
            raise ValueError(f"elites {self.elites} must lie in [2, samples={self.samples}]")
        if not 0 < self.min_noise <= self.noise:
            raise ValueError(f"min_noise {self.min_noise} must lie in (0, noise={self.noise}]")


class SamplingPlanner:
    """The shared loop; subclasses define ``_update``.

    Args:
        model: The task's MuJoCo model (copied, never changed).
        frame_skip: Physics steps per control step of the task.
        cost: ``cost(trajectories, goal) -> (K,)``.
        config: Settings.
    """

    name = "sampling"
    config_class: type[SamplingConfig] = SamplingConfig

    def __init__(self, model: mujoco.MjModel, frame_skip: int, cost: CostFn,
                 config: SamplingConfig | None = None) -> None:
        self.config = config or self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ValueError(f"{self.name} needs a {self.config_class.__name__}; got "
                             f"{type(self.config).__name__}")
        cfg = self.config
        self.model = model
        self.cost = cost
        self.rollout = PhysicsRollout(model, frame_skip, cfg.nthread, cfg.substeps)
        self.ctrl_low, self.ctrl_high = self.rollout.ctrl_low, self.rollout.ctrl_high
        self.control_dt = float(model.opt.timestep) * frame_skip
        finite = np.isfinite(self.ctrl_low) & np.isfinite(self.ctrl_high)
        half = np.where(finite, 0.5 * (self.ctrl_high - self.ctrl_low), 1.0)
        self._scale = half  # perturbation unit per control
        self._weights = basis(np.arange(cfg.horizon), cfg.knots, cfg.horizon, cfg.interpolation)
        self.reset()

    @classmethod
    def from_env(cls, env, config: SamplingConfig | None = None, cost: str | CostFn | None = None):
        """Build for a MuJoCo env (kinodiff or Gymnasium); ``cost`` is a preset name or a function."""
        u = env.unwrapped
        if not callable(cost):
            env_id = env.spec.id if env.spec else type(u).__name__
            cost = cost_preset(env_id, cost).build(u)
        return cls(u.model, int(u.frame_skip), cost, config)

    def reset(self, seed: int | None = None) -> None:
        """Forget the nominal plan and reseed the sampler."""
        cfg = self.config
        self._rng = np.random.default_rng(cfg.seed if seed is None else seed)
        centre = np.clip(np.zeros(self.rollout.nu), self.ctrl_low, self.ctrl_high)
        self._nominal = np.tile(centre, (cfg.knots, 1))
        self._last_time: float | None = None

    # -- the loop ------------------------------------------------------------------------------
    def plan(self, state: np.ndarray, goal: np.ndarray | None = None) -> Plan:
        """Plan ``horizon`` actions from ``state`` (full physics, not modified) towards ``goal``."""
        t0 = time.perf_counter()
        cfg = self.config
        state = check_state(state, self.rollout.nstate)
        goal = None if goal is None else np.asarray(goal, dtype=np.float64)
        now = float(state[0])
        if self._last_time is not None and now > self._last_time:
            elapsed = (now - self._last_time) / self.control_dt
            self._nominal = self._project(shift_knots(self._nominal, elapsed, cfg.horizon, cfg.interpolation))
        self._last_time = now
        mean, std = self._nominal, np.broadcast_to(cfg.noise * self._scale, self._nominal.shape)
        best = (np.inf, None, None, None)  # cost, knots, actions, qpos
        costs = np.zeros(0)
        for _ in range(cfg.iterations):
            noise = self._rng.standard_normal((cfg.samples - 1, *mean.shape))
            knots = self._project(np.concatenate([mean[None], mean + std * noise]))
            actions, costs, qpos = self._evaluate(state, knots, goal)
            k = int(np.argmin(costs))
            if costs[k] < best[0]:
                # Copies: the rollout buffer is reused by the next iteration.
                best = (float(costs[k]), knots[k].copy(), actions[k].copy(), qpos[k].copy())
            mean, std = self._update(knots, costs, mean, std)
        plan_cost, nominal, actions, qpos = self._select(state, goal, mean, best)
        self._nominal = nominal
        diagnostics: dict[str, Any] = {
            "cost_min": float(costs.min()), "cost_mean": float(costs.mean()),
            "samples": cfg.samples * cfg.iterations, "plan_ms": 1e3 * (time.perf_counter() - t0)}
        return Plan(actions=actions.astype(np.float64), states=qpos.copy(), cost=plan_cost,
                    diagnostics=diagnostics)

    def _project(self, knots: np.ndarray) -> np.ndarray:
        return np.clip(knots, self.ctrl_low, self.ctrl_high)

    def _evaluate(self, state, knots, goal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions ``(K, T, Da)``, costs ``(K,)`` and qpos ``(K, T, nq)`` of knot sets ``(K, P, Da)``."""
        # Cubic splines may overshoot the knots: the actions are projected too.
        actions = self._project(interpolate(knots, self._weights))
        states = self.rollout.run(state, actions)
        traj = Trajectories(qpos=self.rollout.qpos(states), qvel=self.rollout.qvel(states), ctrl=actions)
        costs = np.asarray(self.cost(traj, goal), dtype=np.float64)
        if costs.shape != (len(knots),):
            raise ValueError(f"cost returned shape {costs.shape}; expected ({len(knots)},)")
        # A diverged rollout (NaN state) must never win.
        return actions, np.where(np.isfinite(costs), costs, np.inf), traj.qpos

    def _update(self, knots, costs, mean, std) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _select(self, state, goal, mean, best) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(cost, nominal knots, actions, qpos) of the plan to return; default: the best sample."""
        cost, knots, actions, qpos = best
        return cost, knots, actions, qpos


class PredictiveSampling(SamplingPlanner):
    """Predictive sampling: the best of the nominal and its Gaussian perturbations."""

    name = "predictive_sampling"

    def _update(self, knots, costs, mean, std):
        return knots[int(np.argmin(costs))], std


class MPPI(SamplingPlanner):
    """Model-predictive path integral control: the softmax-weighted mean of the samples."""

    name = "mppi"
    config_class = MPPIConfig

    def _update(self, knots, costs, mean, std):
        finite = np.isfinite(costs)
        if not finite.any():
            return mean, std
        c = np.where(finite, costs, costs[finite].max())
        spread = max(float(c.max() - c.min()), 1e-12)
        w = np.exp(-(c - c.min()) / (spread * self.config.temperature))
        return np.einsum("k,kpd->pd", w / w.sum(), knots), std

    def _select(self, state, goal, mean, best):
        # MPPI executes the weighted mean, which is not one of the samples: roll it out once.
        actions, costs, qpos = self._evaluate(state, mean[None], goal)
        return float(costs[0]), mean, actions[0], qpos[0]


class CEM(SamplingPlanner):
    """Cross-entropy method: refit a diagonal Gaussian over the knots to the elite samples."""

    name = "cem"
    config_class = CEMConfig

    def _update(self, knots, costs, mean, std):
        elites = knots[np.argsort(costs, kind="stable")[: self.config.elites]]
        floor = self.config.min_noise * self._scale
        return elites.mean(axis=0), np.maximum(elites.std(axis=0), floor)

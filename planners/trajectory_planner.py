"""The trajectory-diffusion planner: diffuse a start-to-goal plan, execute it, replan.

Every ``replan_every`` control steps (or when the goal changes) it diffuses a fresh plan from the
robot's current state to the goal (:func:`planners.trajectory_diffusion.sample_trajectories`),
i.e. a receding horizon. Between replans the plan is executed in one of two ways:

- ``execution="track"``: a PD tracker (:mod:`planners.tracking`) drives the robot towards the
  planned state ``lookahead`` control steps ahead, Diffuser's Maze2D controller;
- ``execution="open_loop"``: the plan's own diffused actions are executed as they are, the
  baseline Diffuser's Sec. 5.1 shows failing (set ``replan_every=0`` to execute a whole plan
  before diffusing the next one).

torch is imported only when a planner is built, so the registry stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from planners.base import Plan, check_state
from planners.tracking import PDTracker, PDTrackerConfig, interpolate_states


@dataclass(kw_only=True)
class TrajectoryDiffusionConfig:
    """Trajectory-diffusion planner settings."""

    checkpoint: str = ""
    """Folder of a trained model (``python -m agents.train.trajectory``); required."""
    execution: str = "track"
    """``"track"`` (PD tracking of the planned states) or ``"open_loop"`` (the diffused actions)."""
    replan_every: int = 8
    """Diffuse a new plan every this many control steps (0: only when the plan runs out)."""
    samples: int = 1
    """Plans diffused per replan; with a guide the lowest-cost one is kept, else the first."""
    inference_steps: int = 20
    """Reverse diffusion steps per plan."""
    eta: float = 0.0
    """0: DDIM (deterministic given the noise), 1: DDPM."""
    lookahead: int = 2
    """The tracker aims at the planned state this many control steps ahead."""
    kp: float = 8.0
    """Tracker position gain (action per metre)."""
    kd: float = 1.0
    """Tracker velocity gain (action per m/s)."""
    feedforward: float | None = None
    """Tracker velocity feed-forward (action per m/s of planned velocity). None: read off the
    task's model by ``from_env``, joint damping over motor gear (the constant action that holds
    1 m/s; Maze-v0: 2 N s/m over 2 N = 1, with ``damping=0.125``: 0.0625)."""
    hold_radius: float = 0.0
    """With ``execution="track"``: within this distance of the goal the tracker holds the goal
    instead of diffusing a plan. Demonstrations that end on arrival never show a plan that starts
    at the goal, so such plans wander; a task that scores the steps spent at the goal (Maze-v0
    with ``reward="sparse"``) needs the hold. 0 turns it off."""
    guide_scale: float = 0.0
    """Step along the guide cost's gradient per denoising step (needs a ``guide``)."""
    position: tuple[int, int] = (0, 1)
    """qpos (and qvel) indices of the robot's planar position (and velocity)."""
    seed: int = 0
    """Noise seed when ``reset`` is given none."""

    def __post_init__(self) -> None:
        self.position = tuple(self.position)
        if not self.checkpoint:
            raise ValueError("planner 'trajectory_diffusion' needs checkpoint=<folder of a trained "
                             "model>; train one with python -m agents.train.trajectory")
        if self.execution not in ("track", "open_loop"):
            raise ValueError(f"execution {self.execution!r}; expected 'track' or 'open_loop'")
        if self.replan_every < 0 or self.samples < 1 or self.inference_steps < 1 or self.lookahead < 1:
            raise ValueError(f"replan_every={self.replan_every} (>= 0), samples={self.samples}, "
                             f"inference_steps={self.inference_steps}, lookahead={self.lookahead} "
                             "(>= 1 each) out of range")
        if not (np.isfinite(self.hold_radius) and self.hold_radius >= 0):
            raise ValueError(f"hold_radius={self.hold_radius}; expected a finite distance >= 0")
        if not 0.0 <= self.eta <= 1.0 or self.guide_scale < 0:
            raise ValueError(f"eta={self.eta} (expected in [0, 1]) or guide_scale={self.guide_scale} "
                             "(expected >= 0) out of range")
        PDTrackerConfig(kp=self.kp, kd=self.kd,
                        feedforward=0.0 if self.feedforward is None else self.feedforward)


class TrajectoryDiffusionPlanner:
    """Diffuser-style planning with PD tracking or open-loop execution, replanned on a schedule.

    Args:
        model: A :class:`planners.trajectory_diffusion.TrajectoryModel`.
        nq: Joint positions in the full-physics state (positions at ``state[1:1+nq]``,
            velocities right after).
        nstate: Length of the full-physics state.
        ctrl_low: ``(Da,)`` lower action bounds.
        ctrl_high: ``(Da,)`` upper action bounds.
        config: Settings.
        guide: Optional differentiable cost ``(B, H, Ds+Da) torch -> (B,)`` for guided sampling.
    """

    name = "trajectory_diffusion"
    config_class = TrajectoryDiffusionConfig

    def __init__(self, model, nq: int, nstate: int, ctrl_low: np.ndarray, ctrl_high: np.ndarray,
                 config: TrajectoryDiffusionConfig,
                 guide: Callable[[Any], Any] | None = None) -> None:
        self.model, self.config, self.guide = model, config, guide
        self.ctrl_low, self.ctrl_high = np.asarray(ctrl_low, float), np.asarray(ctrl_high, float)
        if config.feedforward is None:
            raise ValueError("feedforward=None; expected a number (from_env reads it off the task's "
                             "model: joint damping over motor gear)")
        if self.ctrl_low.shape != (model.config.action_dim,):
            raise ValueError(f"the task has {self.ctrl_low.size} actuators; the model diffuses "
                             f"{model.config.action_dim} actions")
        self.tracker = PDTracker(PDTrackerConfig(kp=config.kp, kd=config.kd,
                                                 feedforward=config.feedforward),
                                 self.ctrl_low, self.ctrl_high)
        self._nq, self._nstate = nq, nstate
        self.reset()

    @classmethod
    def from_env(cls, env, config: TrajectoryDiffusionConfig, cost=None):
        """Build for a point-mass MuJoCo task; ``cost`` may be a differentiable torch guide."""
        from envs.robot_models import velocity_feedforward
        from planners.base import env_state
        from planners.trajectory_diffusion import TrajectoryModel

        u = env.unwrapped
        if config.feedforward is None:  # a qvel index is a dof index
            config = replace(config, feedforward=velocity_feedforward(u.model, config.position[0]))
        model = TrajectoryModel.load(config.checkpoint)
        return cls(model, u.model.nq, len(env_state(env)), u.model.actuator_ctrlrange[:, 0],
                   u.model.actuator_ctrlrange[:, 1], config, cost if callable(cost) else None)

    def reset(self, seed: int | None = None) -> None:
        """Drop the current plan and reseed the noise."""
        import torch

        self._seed = self.config.seed if seed is None else seed
        self._gen = torch.Generator().manual_seed(int(self._seed) % (2**63))
        self._traj: np.ndarray | None = None
        self._goal: np.ndarray | None = None
        self._k = 0
        self.replans = 0
        """Plans diffused since the last reset."""

    def plan(self, state: np.ndarray, goal: np.ndarray | None = None) -> Plan:
        """The action for this control step and the rest of the current plan."""
        state = check_state(state, self._nstate)
        if goal is None:
            raise ValueError("planner 'trajectory_diffusion' needs a goal position; got None")
        goal = np.asarray(goal, dtype=np.float64)
        cfg, mcfg = self.config, self.model.config
        idx = list(cfg.position)
        pos = state[1:1 + self._nq][idx]
        vel = state[1 + self._nq:][idx]
        if (cfg.execution == "track" and cfg.hold_radius
                and np.linalg.norm(goal - pos) <= cfg.hold_radius):
            action = self.tracker.action(pos, vel, goal, np.zeros_like(goal))
            self._traj = None  # leaving the hold diffuses a fresh plan
            return Plan(actions=action[None], states=goal[None].copy(),
                        cost=float(np.linalg.norm(goal - pos)),
                        diagnostics={"replanned": False, "replans": self.replans, "holding": True})
        span = mcfg.horizon * mcfg.stride
        due = (self._traj is None or self._goal is None or not np.array_equal(goal, self._goal)
               or (cfg.replan_every and self._k >= cfg.replan_every) or self._k >= span)
        if due:
            self._diffuse(np.concatenate([pos, vel]), goal)
        traj, k, s = self._traj, self._k, mcfg.stride
        if cfg.execution == "track":
            ahead = (k + cfg.lookahead) / s
            if ahead >= mcfg.horizon - 1:
                ref_pos, ref_vel = goal, np.zeros_like(goal)  # past the plan: hold the goal
            else:
                ref = interpolate_states(traj[:, :4], ahead)
                ref_pos, ref_vel = ref[:2], ref[2:4]
            action = self.tracker.action(pos, vel, ref_pos, ref_vel)
        else:
            action = np.clip(traj[min(k // s, mcfg.horizon - 1), 4:], self.ctrl_low, self.ctrl_high)
        rest = traj[min(k // s, mcfg.horizon - 1):]
        actions = np.clip(rest[:, 4:], self.ctrl_low, self.ctrl_high)
        actions[0] = action
        self._k += 1
        # The cost: length of the path still to go, along the plan and from its end to the goal.
        path = np.vstack([pos, rest[:, :2], goal])
        cost = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        return Plan(actions=actions, states=rest[:, :2].copy(), cost=cost,
                    diagnostics={"replanned": bool(due), "replans": self.replans,
                                 "plan_step": k, "planned_states": traj[:, :4].copy()})

    def _diffuse(self, start: np.ndarray, goal: np.ndarray) -> None:
        import torch

        from planners.trajectory_diffusion import sample_trajectories

        cfg = self.config
        trajs = sample_trajectories(self.model, torch.as_tensor(start), torch.as_tensor(goal),
                                    samples=cfg.samples, steps=cfg.inference_steps, eta=cfg.eta,
                                    generator=self._gen, guide=self.guide,
                                    guide_scale=cfg.guide_scale)
        best = 0
        if self.guide is not None:
            with torch.no_grad():
                best = int(torch.argmin(self.guide(trajs)))
        self._traj = trajs[best].double().numpy()
        self._goal, self._k = goal.copy(), 0
        self.replans += 1

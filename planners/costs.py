"""Planning costs: pure numpy functions of rolled-out trajectories, with named presets per task.

A cost maps K rolled-out trajectories (and a goal) to K numbers, lower is better. A preset knows how
to build its cost from a task (geometry read once, e.g. link lengths) and where the task keeps its
goal (the observation, or a fixed point of the scene). ``COST_PRESETS[env_id][name]``; the first
name of a task is its default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Trajectories:
    """K rolled-out trajectories of T control steps."""

    qpos: np.ndarray
    """``(K, T, nq)`` joint positions after each control step."""
    qvel: np.ndarray
    """``(K, T, nv)`` joint velocities after each control step."""
    ctrl: np.ndarray
    """``(K, T, nu)`` controls applied."""


CostFn = Callable[[Trajectories, "np.ndarray | None"], np.ndarray]
"""``cost(trajectories, goal) -> (K,)``."""


def reach_cost(pos: np.ndarray, goal: np.ndarray, ctrl: np.ndarray, *, terminal: float = 1.0,
               control: float = 0.0) -> np.ndarray:
    """Mean distance to a goal over the horizon, plus a terminal distance and a control effort term.

    Args:
        pos: ``(K, T, D)`` positions (any task coordinates).
        goal: ``(D,)`` goal.
        ctrl: ``(K, T, Da)`` controls.
        terminal: Weight of the distance after the last step.
        control: Weight of the mean squared control.

    Returns:
        ``(K,)`` costs. E.g. a trajectory resting on the goal with zero controls costs 0.
    """
    dist = np.linalg.norm(pos - goal, axis=-1)  # (K, T)
    return dist.mean(axis=1) + terminal * dist[:, -1] + control * np.square(ctrl).sum(-1).mean(1)


@dataclass(frozen=True, kw_only=True)
class CostPreset:
    """How to plan for one task: a cost built from the task, and where its goal comes from."""

    description: str
    """One line for listings."""
    build: Callable[[Any], CostFn]
    """``unwrapped env -> cost``; reads only fixed geometry (link lengths, goal poses)."""
    goal: Callable[[Any, Any], np.ndarray | None] = lambda env, obs: None
    """``(unwrapped env, observation) -> goal`` of the current step (read only)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Planner settings tuned for the task (e.g. a shorter horizon); explicit settings win."""


# -- kinodiff tasks -----------------------------------------------------------------------------
def _point_goal(control: float) -> Callable[[Any], CostFn]:
    def build(env) -> CostFn:
        return lambda t, goal: reach_cost(t.qpos[..., :2], goal, t.ctrl, control=control)
    return build


def _tiny_reach(env) -> CostFn:
    def cost(t: Trajectories, goal: np.ndarray) -> np.ndarray:
        # Success needs the cart slow at the goal: its final speed is penalized too.
        return reach_cost(t.qpos[..., :1], goal, t.ctrl) + 0.5 * np.abs(t.qvel[:, -1, 0])
    return cost


def _arm_reach(env) -> CostFn:
    from envs.arm_kinematics import arm_clearance, forward_kinematics

    layout, spec = env.layout, env.constraint_spec

    def cost(t: Trajectories, goal: np.ndarray) -> np.ndarray:
        ee = forward_kinematics(t.qpos, layout)[..., 3, :]
        # Penetration of the obstacles (negative clearance) is penalized.
        hit = np.minimum(arm_clearance(t.qpos, layout, spec), 0.0)
        return reach_cost(ee, goal, t.ctrl, control=0.01) - 10.0 * hit.mean(axis=1)
    return cost


def _arena(env) -> CostFn:
    n = env.model.nu // 2  # two force motors per robot

    def cost(t: Trajectories, goal: np.ndarray) -> np.ndarray:
        k, steps, _ = t.qpos.shape
        pos = t.qpos.reshape(k, steps, n, 2)
        return np.linalg.norm(pos - goal, axis=-1).mean(axis=(1, 2)) + 0.01 * np.square(t.ctrl).mean((1, 2))
    return cost


def _push_t(env) -> CostFn:
    from envs.push_t_geometry import pose_error

    shape, goal_pose = env.layout.shape, env.layout.goal

    def cost(t: Trajectories, goal: np.ndarray | None) -> np.ndarray:
        err = pose_error(shape, t.qpos[..., [2, 3, 5]], goal_pose)  # (K, T)
        # The pusher has to reach the block before it can move it.
        near = np.linalg.norm(t.qpos[..., :2] - t.qpos[..., 2:4], axis=-1)
        return err.mean(1) + err[:, -1] + 0.1 * near.mean(1)
    return cost


# -- Gymnasium tasks: costs read only the model and the rolled-out state -----------------------------
def _inverted_pendulum(env) -> CostFn:
    def cost(t: Trajectories, goal: np.ndarray | None) -> np.ndarray:
        # Pole upright (qpos[1] = 0), cart near the centre, little motion.
        return (np.square(t.qpos[..., 1]) + 0.1 * np.square(t.qpos[..., 0])
                + 0.01 * np.square(t.qvel[..., 0])).mean(axis=1)
    return cost


def _reacher(env) -> CostFn:
    # Link lengths read from the model: body1 sits at the end of link 0, the fingertip at the end of
    # link 1; the target is two slide joints (qpos[2:4]).
    l0 = float(env.model.body("body1").pos[0])
    l1 = float(env.model.body("fingertip").pos[0])

    def cost(t: Trajectories, goal: np.ndarray | None) -> np.ndarray:
        q0, q01 = t.qpos[..., 0], t.qpos[..., 0] + t.qpos[..., 1]
        tip = np.stack([l0 * np.cos(q0) + l1 * np.cos(q01), l0 * np.sin(q0) + l1 * np.sin(q01)], -1)
        dist = np.linalg.norm(tip - t.qpos[..., 2:4], axis=-1)
        # Reacher-v5 charges |a|^2 with the same weight as the distance.
        return dist.mean(1) + dist[:, -1] + np.square(t.ctrl).sum(-1).mean(1)
    return cost


def _obs_slice(start: int, stop: int) -> Callable[[Any, Any], np.ndarray]:
    return lambda env, obs: np.asarray(obs[start:stop], dtype=np.float64)


def _push_t_preset() -> CostPreset:
    return CostPreset(description="T block pose error to the goal pose, pusher near the block",
                      build=_push_t)


COST_PRESETS: dict[str, dict[str, CostPreset]] = {
    "kinodiff/Maze-v0": {
        # The return charges 0.01 |a|^2 per step and pays only net progress: this control weight
        # makes the planner no more forceful than the scripted expert (about as fast).
        "goal": CostPreset(description="distance to the goal cell (or a subgoal), control effort",
                           build=_point_goal(control=1.0), goal=_obs_slice(4, 6)),
        "fast": CostPreset(description="distance to the goal, light control effort (full speed)",
                           build=_point_goal(control=0.05), goal=_obs_slice(4, 6)),
    },
    "kinodiff/PointObstacle-v0": {
        "goal": CostPreset(description="distance to the goal behind the box",
                           build=_point_goal(control=0.01),
                           goal=lambda env, obs: np.array(env.layout.goal, dtype=np.float64)),
    },
    "kinodiff/TinyReach-v0": {
        "goal": CostPreset(description="distance to the goal, stopped there", build=_tiny_reach,
                           goal=_obs_slice(2, 3)),
    },
    "kinodiff/ArmReach-v0": {
        "goal": CostPreset(description="end-effector distance to the target, obstacle penetration",
                           build=_arm_reach, goal=_obs_slice(11, 13)),
    },
    "kinodiff/MultiRobotArena-v0": {
        "goals": CostPreset(description="mean distance of every robot to its goal", build=_arena,
                            goal=lambda env, obs: np.array(env.goals, dtype=np.float64)),
    },
    "kinodiff/PushT-v0": {"pose": _push_t_preset()},
    "kinodiff/PushTImage-v0": {"pose": _push_t_preset()},
    "InvertedPendulum-v5": {
        # The pole is unstable: open-loop plans longer than ~0.6 s diverge before they end.
        "upright": CostPreset(description="pole upright, cart centred", build=_inverted_pendulum,
                              settings={"horizon": 16, "knots": 4, "noise": 0.1}),
    },
    "Reacher-v5": {
        "reach": CostPreset(description="fingertip distance to the target", build=_reacher),
    },
}
"""Task id -> preset name -> preset; the first name is the task's default."""


def cost_preset(env_id: str, name: str | None = None) -> CostPreset:
    """The preset ``name`` (default: the task's first) of ``env_id``.

    Raises:
        ValueError: Naming the tasks with presets, or the task's preset names.
    """
    presets = COST_PRESETS.get(env_id)
    if presets is None:
        raise ValueError(f"no cost preset for {env_id!r}; expected one of {sorted(COST_PRESETS)} "
                         "(or pass a cost function)")
    if name is None:
        return next(iter(presets.values()))
    if name not in presets:
        raise ValueError(f"cost preset {name!r} is unknown for {env_id}; expected one of {sorted(presets)}")
    return presets[name]

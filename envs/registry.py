"""The task registry: a plain dict, Gymnasium registration, and factories with clear errors."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


@dataclass(frozen=True, kw_only=True)
class EnvSpec:
    """One kinodiff task."""

    id: str
    """Gymnasium id, ``kinodiff/<Task>-v<N>``."""
    entry_point: str
    """``module:Class`` of the env."""
    description: str
    """One line for ``kinodiff envs``."""
    max_episode_steps: int
    """Time limit applied by ``gymnasium.make``."""
    experts: dict[str, str] = field(default_factory=dict)
    """Expert name -> ``module:Class``; the class is built from the unwrapped env."""


ENV_SPECS: dict[str, EnvSpec] = {}


def _add(spec: EnvSpec) -> None:
    ENV_SPECS[spec.id] = spec


_add(
    EnvSpec(
        id="kinodiff/PointObstacle-v0",
        entry_point="envs.point_obstacle_v0:PointObstacleEnv",
        description="Point robot reaches a goal behind a box, passing left or right (two-modal).",
        max_episode_steps=200,
        experts={"scripted": "envs.experts.point_obstacle:PointObstacleExpert"},
    )
)


_add(
    EnvSpec(
        id="kinodiff/TinyReach-v0",
        entry_point="envs.tiny_reach_v0:TinyReachEnv",
        description="1-D point mass reaches a goal on a rail; tiny and deterministic, for fast tests.",
        max_episode_steps=50,
        experts={"scripted": "envs.experts.tiny_reach:TinyReachExpert"},
    )
)


_add(
    EnvSpec(
        id="kinodiff/Maze-v0",
        entry_point="envs.maze_v0:MazeEnv",
        description="Point robot crosses a D4RL-style walled maze to a far goal (layout u|medium|large).",
        # 30 s at 20 Hz: the scripted expert's longest episode on the large layout is ~230 steps.
        max_episode_steps=600,
        experts={"scripted": "envs.experts.maze:MazeExpert"},
    )
)


_add(
    EnvSpec(
        id="kinodiff/ArmReach-v0",
        entry_point="envs.arm_reach_v0:ArmReachEnv",
        description="Torque-limited planar 3-link arm reaches a target among obstacles (constraint spec).",
        # 6.25 s at 40 Hz: the IK expert needs ~75 steps on average; the longest plans (a full
        # sweep of joint 1 around the obstacles) take ~200.
        max_episode_steps=250,
        experts={"ik": "envs.experts.arm_reach:ArmReachExpert"},
    )
)


_add(
    EnvSpec(
        id="kinodiff/MultiRobotArena-v0",
        entry_point="envs.multi_robot_arena_v0:MultiRobotArenaEnv",
        description="N disc robots (n_robots 2..64) each reach their own goal in one walled arena.",
        # 20 s at 20 Hz: ample for 64 robots crossing the 3 m arena around each other.
        max_episode_steps=400,
        experts={"orca": "envs.experts.multi_robot_arena:MultiRobotArenaExpert"},
    )
)


_add(
    EnvSpec(
        id="kinodiff/PushT-v0",
        entry_point="envs.push_t_v0:PushTEnv",
        description="Round pusher pushes a T-shaped block onto a goal pose (diffusion-policy PushT).",
        # 30 s at 10 Hz, the diffusion-policy evaluation horizon.
        max_episode_steps=300,
        experts={
            "mpc": "envs.experts.push_t:PushTMPCExpert",
            "feedback": "envs.experts.push_t_feedback:PushTFeedbackExpert",
        },
    )
)


_add(
    EnvSpec(
        id="kinodiff/PushTImage-v0",
        entry_point="envs.push_t_image_v0:PushTImageEnv",
        description="PushT observed as a 96x96 top-camera image plus the pusher's position.",
        max_episode_steps=300,
        experts={"mpc": "envs.experts.push_t:PushTMPCExpert"},
    )
)


def register_envs() -> None:
    """Register every kinodiff task with Gymnasium (idempotent)."""
    for spec in ENV_SPECS.values():
        if spec.id not in gym.registry:
            gym.register(
                id=spec.id,
                entry_point=spec.entry_point,
                max_episode_steps=spec.max_episode_steps,
            )


def list_envs() -> list[str]:
    """Return the registered kinodiff task ids."""
    return sorted(ENV_SPECS)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is a kinodiff task or a Gymnasium id; else raise naming valid ids."""
    if env_id in ENV_SPECS or env_id in gym.registry:
        return env_id
    raise ValueError(f"unknown env id {env_id!r}; expected one of {list_envs()}")


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """Build a task through ``gymnasium.make`` (time limit and checkers included)."""
    return gym.make(check_env_id(env_id), **kwargs)


def _load(entry: str) -> Callable[..., Any]:
    # ``entry`` comes from the registry in code (``"envs.experts.point:ScriptedExpert"``), never data.
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


def make_expert(env_id: str, name: str, env: gym.Env):
    """Build the task's expert ``name`` for ``env``.

    Raises:
        ValueError: When the task has no such expert, listing the ones it has.
    """
    spec = ENV_SPECS.get(check_env_id(env_id))
    experts = spec.experts if spec else {}
    if name not in experts:
        raise ValueError(
            f"unknown expert {name!r} for {env_id}; expected one of {sorted(experts)}"
        )
    return _load(experts[name])(env.unwrapped)

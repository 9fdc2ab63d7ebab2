"""The planner registry: a plain dict, ``register_planner`` and ``make_planner``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import gymnasium as gym

PLANNERS: dict[str, type] = {}
"""Planner name -> class. A class provides ``config_class`` and ``from_env(env, config, cost)``."""


def register_planner(name: str, cls: type) -> None:
    """Register planner class ``cls`` under ``name``.

    Raises:
        ValueError: When ``name`` is taken by another class.
    """
    if PLANNERS.get(name, cls) is not cls:
        raise ValueError(f"planner name {name!r} is already registered to {PLANNERS[name].__name__}")
    PLANNERS[name] = cls


def planner_config(name: str, **overrides: Any):
    """The config of planner ``name`` with ``overrides`` (validated by the config itself)."""
    cls = _planner_class(name)
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown} for planner {name!r}; expected some of {sorted(known)}")
    return cls.config_class(**overrides)


def make_planner(name: str, env: gym.Env, cost: Any = None, **overrides: Any):
    """Build planner ``name`` for a MuJoCo ``env`` (read through ``env.unwrapped``, never changed).

    Args:
        name: A key of :data:`PLANNERS`.
        env: The task (kinodiff or Gymnasium MuJoCo).
        cost: A cost preset name of the task, a cost function, or ``None`` (the task's default).
        **overrides: Fields of the planner's config.

    Raises:
        ValueError: For an unknown name (listing the valid ones) or a bad setting.
    """
    from planners.costs import COST_PRESETS

    env_id = env.spec.id if env.spec else ""
    tuned = {}
    if not callable(cost) and env_id in COST_PRESETS:
        from planners.costs import cost_preset

        known = {f.name for f in fields(_planner_class(name).config_class)}
        tuned = {k: v for k, v in cost_preset(env_id, cost).settings.items() if k in known}
    return _planner_class(name).from_env(env, planner_config(name, **{**tuned, **overrides}), cost)


def _planner_class(name: str) -> type:
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; expected one of {sorted(PLANNERS)}")
    return PLANNERS[name]


def _register_builtin() -> None:
    from planners.hierarchical import HierarchicalPlanner
    from planners.sampling import CEM, MPPI, PredictiveSampling
    from planners.trajectory_planner import TrajectoryDiffusionPlanner

    for cls in (PredictiveSampling, MPPI, CEM, HierarchicalPlanner, TrajectoryDiffusionPlanner):
        register_planner(cls.name, cls)


_register_builtin()

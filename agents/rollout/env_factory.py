"""A picklable env factory: what rollout workers (local or Ray) are handed instead of live envs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from envs import make_env
from envs.wrappers import ActionNoise, DomainRandomization
from envs.wrappers.domain_randomization import shift_spec


@dataclass(frozen=True)
class EnvFactory:
    """Builds ``env_id`` with ``kwargs``; optionally noisy actions and a domain-randomization preset."""

    env_id: str
    """Task id (kinodiff or any Gymnasium id)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""
    shift: str | None = None
    """Name of a domain-randomization preset (``envs.wrappers.SHIFT_PRESETS``)."""
    render_mode: str | None = None
    """``"rgb_array"`` to render frames."""
    action_noise: float = 0.0
    """Standard deviation of Gaussian noise on every executed action (``envs.wrappers.ActionNoise``;
    DART collection); the action handed to ``step``, which a collector stores, stays clean."""

    def __post_init__(self) -> None:
        if self.shift is not None:
            shift_spec(self.shift)  # fail fast on an unknown preset, naming the valid ones
        if not (math.isfinite(self.action_noise) and self.action_noise >= 0):
            raise ValueError(f"action_noise={self.action_noise}; expected a finite standard "
                             "deviation >= 0")

    def __call__(self) -> gym.Env:
        """A fresh env."""
        kwargs = dict(self.kwargs)
        if self.render_mode is not None:
            kwargs["render_mode"] = self.render_mode
        env = make_env(self.env_id, **kwargs)
        if self.action_noise:
            env = ActionNoise(env, self.action_noise)
        return DomainRandomization(env, self.shift) if self.shift else env

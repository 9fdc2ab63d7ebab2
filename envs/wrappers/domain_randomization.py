"""Domain randomization with named presets (used by ``kinodiff eval --shift NAME``).

At every reset, masses, friction and actuator gains of the MuJoCo model are scaled by factors drawn
from the preset's ranges, and Gaussian noise is added to every observation. Nominal values are
saved when the wrapper is built, so scales never compound across episodes. Presets with a
``layout`` (``obstacle_shift``, ``goal_shift``) also move the task's obstacles or goal outside the
support of its training data, through the task's own ``shift_layout(rng, kind)`` method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np

from envs.layout_shift import LAYOUT_KINDS


@dataclass(frozen=True, kw_only=True)
class ShiftSpec:
    """Ranges of multiplicative scales (per body / geom / actuator) and observation noise."""

    mass: tuple[float, float] = (1.0, 1.0)
    """Scale range of every body mass."""
    friction: tuple[float, float] = (1.0, 1.0)
    """Scale range of every geom's sliding friction."""
    actuator_gain: tuple[float, float] = (1.0, 1.0)
    """Scale range of every actuator gear (the gain from control to force)."""
    obs_noise: float = 0.0
    """Standard deviation of Gaussian observation noise, in observation units."""
    layout: str = "none"
    """What the task moves outside its training support each episode: ``none``, ``obstacle`` or
    ``goal`` (needs a task with ``shift_layout``)."""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUT_KINDS:
            raise ValueError(f"layout={self.layout!r}; expected one of {list(LAYOUT_KINDS)}")
        for name in ("mass", "friction", "actuator_gain"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} range {(lo, hi)} is invalid; expected 0 < low <= high")
        if self.obs_noise < 0:
            raise ValueError(f"obs_noise={self.obs_noise}; expected >= 0")


SHIFT_PRESETS: dict[str, ShiftSpec] = {
    "nominal": ShiftSpec(),
    "mass": ShiftSpec(mass=(1.5, 3.0)),
    "friction": ShiftSpec(friction=(0.2, 0.5)),
    "actuator_gain": ShiftSpec(actuator_gain=(0.5, 0.8)),
    "obs_noise": ShiftSpec(obs_noise=0.03),
    "all": ShiftSpec(mass=(1.5, 3.0), friction=(0.2, 0.5), actuator_gain=(0.5, 0.8), obs_noise=0.03),
    "obstacle_shift": ShiftSpec(layout="obstacle"),
    "goal_shift": ShiftSpec(layout="goal"),
}


def shift_spec(name: str) -> ShiftSpec:
    """The preset ``name``; the error lists the valid names."""
    if name not in SHIFT_PRESETS:
        raise ValueError(f"unknown shift {name!r}; expected one of {sorted(SHIFT_PRESETS)}")
    return SHIFT_PRESETS[name]


class DomainRandomization(gym.Wrapper):
    """Randomize a MuJoCo task's physics per episode and add observation noise.

    Args:
        env: A kinodiff or Gymnasium MuJoCo env (``env.unwrapped.model`` is an ``MjModel``).
        shift: A ``ShiftSpec`` or a preset name.
    """

    def __init__(self, env: gym.Env, shift: ShiftSpec | str) -> None:
        super().__init__(env)
        self.shift = shift_spec(shift) if isinstance(shift, str) else shift
        if self.shift.layout != "none" and not callable(getattr(env.unwrapped, "shift_layout", None)):
            task = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
            raise ValueError(f"shift {shift!r} moves the {self.shift.layout} outside the training "
                             f"support, but {task} cannot (expected a task with a shift_layout "
                             "method, e.g. kinodiff/PointObstacle-v0 or kinodiff/ArmReach-v0)")
        model = env.unwrapped.model
        self._nominal = {"mass": model.body_mass.copy(), "friction": model.geom_friction[:, 0].copy(),
                         "gear": model.actuator_gear[:, 0].copy()}
        self._rng = np.random.default_rng()
        self.scales: dict[str, np.ndarray] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Draw new physics scales (seeded by ``seed``), apply them, then reset the task."""
        if seed is not None:
            # Kept apart from the task's own generator, so a shift never changes the task's draws.
            self._rng = np.random.default_rng([int(seed), 0x5A1F])
        s, model, nom = self.shift, self.env.unwrapped.model, self._nominal
        self.scales = {
            "mass": self._rng.uniform(*s.mass, size=nom["mass"].shape),
            "friction": self._rng.uniform(*s.friction, size=nom["friction"].shape),
            "actuator_gain": self._rng.uniform(*s.actuator_gain, size=nom["gear"].shape),
        }
        model.body_mass[:] = nom["mass"] * self.scales["mass"]
        model.geom_friction[:, 0] = nom["friction"] * self.scales["friction"]
        model.actuator_gear[:, 0] = nom["gear"] * self.scales["actuator_gain"]
        extra = {}
        if s.layout != "none":
            extra["layout"] = self.env.unwrapped.shift_layout(self._rng, s.layout)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._noisy(obs), {**info, "shift": asdict(s), **extra}

    def step(self, action):
        """Step the task and add observation noise."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._noisy(obs), reward, terminated, truncated, info

    def _noisy(self, obs):
        if self.shift.obs_noise == 0.0 or not isinstance(obs, np.ndarray):
            return obs
        return (obs + self._rng.normal(0.0, self.shift.obs_noise, obs.shape)).astype(obs.dtype)

"""PushT-v0: push a T-shaped block onto a goal pose with a position-controlled round pusher.

The diffusion-policy "hello world" (Chi et al. 2023), in MuJoCo at 1 mm per pixel of the original
512 x 512 px scene. Control runs at 10 Hz: each action is the pusher's target position, held for ten
10 ms physics steps. The block slides on the table with Coulomb friction and stops once it is no
longer pushed. Success is the original's: the block covers at least 95 % of the goal's area,
computed exactly (``envs.push_t_geometry``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from envs.mujoco_task import MujocoTaskEnv
from envs.push_t_geometry import CoverageFn, TShape, distance_to_shape, wrap_angle

# Observations are positions inside the 0.5 m walled table; the bound leaves room for the soft
# contacts and joint limits to be violated by a few millimetres.
_POS_BOUND = 0.3


@dataclass(frozen=True, kw_only=True)
class PushTLayout:
    """Geometry of the scene, read from the MJCF so the env, the expert and tests share one truth."""

    shape: TShape
    """The T's footprint in the block frame (origin at its area centroid)."""
    goal: np.ndarray
    """(3,) goal pose ``(x, y, angle)`` of the block frame."""
    pusher_radius: float
    """Radius of the pusher, metres."""
    pusher_range: np.ndarray
    """(2, 2) ``[[x_low, x_high], [y_low, y_high]]`` of the pusher's target, metres."""
    table_half: float
    """Half side of the square table inside the walls, metres."""


def read_layout(model) -> PushTLayout:
    """Read the scene's geometry from a compiled ``push_t.xml`` model."""
    rects = [model.geom(name) for name in ("block_bar", "block_stem")]
    quat = model.body("goal").quat
    goal_angle = 2.0 * math.atan2(quat[3], quat[0])
    return PushTLayout(
        shape=TShape(
            centers=np.array([g.pos[:2] for g in rects], dtype=np.float64),
            halves=np.array([g.size[:2] for g in rects], dtype=np.float64),
        ),
        goal=np.array([*model.body("goal").pos[:2], wrap_angle(goal_angle)], dtype=np.float64),
        pusher_radius=float(model.geom("pusher").size[0]),
        pusher_range=np.array(model.actuator_ctrlrange, dtype=np.float64),
        table_half=float(model.geom("table").size[0]),
    )


class PushTEnv(MujocoTaskEnv):
    """Push the T onto the goal pose.

    Observation (float32, 5): ``[pusher_x, pusher_y, block_x, block_y, block_angle]``, metres and
    radians; the block pose is that of its area centroid, the angle wrapped to ``[-pi, pi)``.
    Action (float32, 2): the pusher's target ``(x, y)`` inside the table, ``[-0.235, 0.235]``.
    Start: block centroid uniform in ``[-block_spread, block_spread]^2`` with a uniform angle,
    redrawn while it already covers more than ``max_start_coverage`` of the goal; pusher uniform in
    ``[-pusher_spread, pusher_spread]^2``, redrawn while it touches the block. Goal: the fixed pose
    ``(0, 0, pi/4)``. Success: coverage >= ``success_coverage``; the episode then terminates.

    Reward terms: ``coverage`` is the change of coverage since the last step (so the return is the
    coverage gained and dawdling never pays), ``success`` is 1 on the step that succeeds.
    ``info["coverage"]`` is the coverage on every step, ``info["position"]`` the pusher's ``(x, y)``.

    Args:
        block_spread: Half side of the block centroid's start square, metres.
        pusher_spread: Half side of the pusher's start square, metres.
        max_start_coverage: Starts covering more of the goal than this are redrawn.
        success_coverage: Coverage that counts as success.
        render_mode: ``None`` or ``"rgb_array"``.
        width: Rendered frame width.
        height: Rendered frame height.
    """

    def __init__(
        self,
        block_spread: float = 0.12,
        pusher_spread: float = 0.2,
        max_start_coverage: float = 0.5,
        success_coverage: float = 0.95,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
    ) -> None:
        EzPickle.__init__(
            self, block_spread, pusher_spread, max_start_coverage, success_coverage, render_mode,
            width, height,
        )
        # The table inside the walls is 0.5 m square; the T reaches 0.081 m from its centroid.
        if not 0.0 <= block_spread <= 0.16:
            raise ValueError(f"block_spread {block_spread} is out of range; expected 0 <= s <= 0.16")
        if not 0.0 <= pusher_spread <= 0.235:
            raise ValueError(f"pusher_spread {pusher_spread} is out of range; expected 0 <= s <= 0.235")
        if not 0.0 < success_coverage <= 1.0:
            raise ValueError(f"success_coverage {success_coverage} is out of range; expected 0 < c <= 1")
        if not 0.0 <= max_start_coverage < success_coverage:
            raise ValueError(
                f"max_start_coverage {max_start_coverage} is out of range; "
                f"expected 0 <= c < success_coverage ({success_coverage})"
            )
        obs_space = gym.spaces.Box(
            low=np.array([-_POS_BOUND] * 4 + [-np.pi], dtype=np.float32),
            high=np.array([_POS_BOUND] * 4 + [np.pi], dtype=np.float32),
            dtype=np.float32,
        )
        super().__init__("push_t.xml", 10, obs_space, render_mode, width, height)
        self.block_spread = float(block_spread)
        self.pusher_spread = float(pusher_spread)
        self.max_start_coverage = float(max_start_coverage)
        self.success_coverage = float(success_coverage)
        self.layout = read_layout(self.model)
        self.coverage_fn = CoverageFn(self.layout.shape, self.layout.goal)
        # A view of MuJoCo's qpos buffer ([pusher x, y, block x, y, z, yaw]): one binding call saved
        # per use, and .tolist() hands the per-step math plain floats.
        self._q = self.data.qpos
        self._coverage = 0.0
        self._prev_coverage = 0.0

    # -- state read-outs and set-up (for tests and tools) --------------------------------------
    def block_pose(self) -> np.ndarray:
        """(3,) the block's centroid pose ``(x, y, angle)``, angle wrapped to ``[-pi, pi)``."""
        q = self.data.qpos
        return np.array([q[2], q[3], wrap_angle(q[5])])

    def pusher_position(self) -> np.ndarray:
        """(2,) the pusher's position."""
        return self.data.qpos[:2].copy()

    def set_block_pose(self, pose) -> None:
        """Place the block at ``(x, y, angle)`` at rest on the table (for resets and tests)."""
        q = self.data.qpos
        q[2], q[3], q[4], q[5] = pose[0], pose[1], 0.0, pose[2]
        self.data.qvel[2:] = 0.0

    # -- task hooks ----------------------------------------------------------------------------
    def _reset_task(self, options: dict) -> None:
        rng = self.np_random
        lay = self.layout
        # Rejection sampling draws only from self.np_random, so it stays reproducible under the seed.
        for _ in range(1000):
            pose = np.array([
                rng.uniform(-self.block_spread, self.block_spread),
                rng.uniform(-self.block_spread, self.block_spread),
                rng.uniform(-np.pi, np.pi),
            ])
            if self.coverage_fn(*pose) <= self.max_start_coverage:
                break
        else:
            raise RuntimeError(
                f"no block start covering <= {self.max_start_coverage} of the goal in 1000 draws; "
                f"raise max_start_coverage or block_spread ({self.block_spread})"
            )
        for _ in range(1000):
            pusher = rng.uniform(-self.pusher_spread, self.pusher_spread, size=2)
            if distance_to_shape(lay.shape, pose, pusher[None])[0] >= lay.pusher_radius + 0.01:
                break
        else:
            raise RuntimeError(
                f"no pusher start clear of the block in 1000 draws; "
                f"raise pusher_spread ({self.pusher_spread})"
            )
        self.data.qpos[:2] = pusher
        self.data.ctrl[:] = pusher  # the servo holds the pusher where it starts
        self.set_block_pose(pose)
        self._coverage = self._prev_coverage = self.coverage_fn(*pose)

    def _observation(self) -> np.ndarray:
        px, py, bx, by, _, yaw = self._q.tolist()
        return np.array((px, py, bx, by, (yaw + math.pi) % (2.0 * math.pi) - math.pi), dtype=np.float32)

    def _evaluate(self, action: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        # Reward terms: coverage (its change since the last step), then success.
        self._prev_coverage = prev = self._coverage
        _, _, bx, by, _, yaw = self._q.tolist()
        self._coverage = coverage = self.coverage_fn(bx, by, yaw)
        success = coverage >= self.success_coverage
        coverage_term = coverage - prev
        success_term = 1.0 if success else 0.0
        info = {
            "reward_coverage": coverage_term,
            "reward_success": success_term,
            "is_success": success,
            "coverage": coverage,
            "position": self._q[:2].copy(),
        }
        return coverage_term + success_term, success, info

    def _task_info(self) -> dict[str, Any]:
        return {"coverage": self._coverage, "position": self._q[:2].copy()}

"""The shared base of every kinodiff MuJoCo task: simulator plumbing apart from task logic."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from envs.constraints import ConstraintSpec, constraint_spec_from_model
from envs.mjcf_loader import load_mjcf
from sim_assets import asset_path

# Warnings MuJoCo raises when the state blows up (BADQPOS, BADQVEL, BADQACC, BADCTRL: contiguous
# in mjtWarning); it then silently resets the state, which would hide the failure from the learner.
# We end the episode instead.
_DIVERGENCE = slice(int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADCTRL) + 1)
assert _DIVERGENCE.stop - _DIVERGENCE.start == 4, "mjtWarning order changed"
_WARNING_NAMES = [mujoco.mjtWarning(i).name.removeprefix("mjWARN_")
                  for i in range(_DIVERGENCE.start, _DIVERGENCE.stop)]
# Actions up to this long are range-checked on Python floats, longer ones with numpy ufuncs: the
# measured crossover of the two on this stack lies between 16 and 128 entries.
_PYTHON_CHECK_MAX = 16


class MujocoTaskEnv(gym.Env, EzPickle):
    """A MuJoCo task: loads the MJCF, validates actions, steps, flags divergence, renders.

    Subclasses implement the task: ``_reset_task``, ``_observation``, and either
    ``_reward_terms``, ``_is_success`` and ``_task_info`` or, where the step cost matters, all
    three at once in ``_evaluate``. Reward is always the exact sum of the reward terms, which are
    also reported as ``info["reward_<name>"]``.

    Bad inputs, the same for every task (tests/envs/test_bad_inputs.py):

    * An action of the wrong shape, or with a NaN or infinite value, raises ``ValueError`` naming
      the action and what was expected; MuJoCo never sees it (it would zero a NaN control).
    * An out-of-range action is **clipped** to the action space, never rejected; the number of
      clipped entries is ``info["action_clipped"]`` on every step (0 when none was).
    * ``step()`` before the first ``reset()``, or after a step that terminated, raises
      ``RuntimeError``: stepping on would run from a state MuJoCo may have silently reset.
      Truncation is the time limit's (``gymnasium.make``'s ``TimeLimit``): stepping past it
      continues the physics and reports ``truncated`` again; only ``reset()`` starts an episode.
    * A simulation that diverges (MuJoCo's BADQPOS / BADQVEL / BADQACC / BADCTRL warning, e.g.
      from a huge velocity or force) ends the episode: ``terminated=True``, reward 0 (every term
      0), ``info["diverged"] = True`` and ``info["divergence_warnings"]`` the count of each
      warning raised during the step, by name; the observation is made finite. Never an
      automatic reset.
    * The MJCF is loaded through :func:`envs.mjcf_loader.load_mjcf`, which refuses files that
      reach outside ``sim_assets`` and models over its size caps before MuJoCo compiles them.

    Args:
        xml_name: Asset name in ``sim_assets``.
        frame_skip: Physics steps per control step.
        observation_space: The task's observation space.
        render_mode: ``None`` or ``"rgb_array"``.
        width: Rendered frame width in pixels.
        height: Rendered frame height in pixels.
        camera: Name of the MJCF camera used for rendering.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    terminate_on_success = True
    """Whether a successful step ends the episode. A task whose reward counts the steps spent at
    the goal (D4RL Maze2D's sparse reward) sets it False: the episode then runs to its time limit
    and ``info["is_success"]`` says whether the robot is at the goal now."""

    def __init__(
        self,
        xml_name: str,
        frame_skip: int,
        observation_space: gym.spaces.Box,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
        camera: str = "top",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; expected None or 'rgb_array'")
        self.model = self._load_model(xml_name)
        self.data = mujoco.MjData(self.model)
        self.frame_skip = int(frame_skip)
        self.render_mode = render_mode
        self._width, self._height, self._camera = width, height, camera
        self._renderer: mujoco.Renderer | None = None
        self._clipped = 0
        # Why step() must wait for reset(), or None while an episode runs.
        self._ended: str | None = "before reset()"
        # A live view of MuJoCo's warning counters: reading it costs no binding calls per step.
        self._warnings = self.data.warning.number
        # A live view of the divergence counters alone (see _DIVERGENCE).
        self._divergence_counts = self._warnings[_DIVERGENCE]
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.action_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self._low, self._high = low.astype(np.float64), high.astype(np.float64)
        self._action = np.zeros(self.action_space.shape)
        self._action_in = np.zeros(self.action_space.shape)
        self._low32, self._high32 = low.copy(), high.copy()
        self._action32 = np.zeros(self.action_space.shape, dtype=np.float32)
        self._action_shape = self.action_space.shape
        # Short actions are range-checked on Python floats, long ones with two ufuncs (see step).
        self._bounds = (list(zip(self._low.tolist(), self._high.tolist(), strict=True))
                        if self._low.size <= _PYTHON_CHECK_MAX else None)
        # MjData arrays are views of MuJoCo's buffers: caching them saves a binding call per use.
        self._ctrl, self._qpos, self._qvel = self.data.ctrl, self.data.qpos, self.data.qvel
        self.observation_space = observation_space
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}
        # Limits read from the MJCF; tasks replace it with a fuller spec (robot model, workspace).
        self.constraint_spec: ConstraintSpec = constraint_spec_from_model(self.model)

    def _load_model(self, xml_name: str) -> mujoco.MjModel:
        """Compile the task's scene (override to edit it first, e.g. add obstacles with MjSpec)."""
        return load_mjcf(asset_path(xml_name))

    @property
    def dt(self) -> float:
        """Seconds of simulated time per control step."""
        return float(self.model.opt.timestep) * self.frame_skip

    # -- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the simulation and the task; ``seed`` makes it reproducible bit for bit."""
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_task(options or {})
        mujoco.mj_forward(self.model, self.data)
        obs = self._observation()
        self._ended = None
        return obs, {"is_success": False, **self._task_info()}

    def step(self, action):
        """Apply one validated action for ``frame_skip`` physics steps."""
        if self._ended is not None:
            raise RuntimeError(f"step() called {self._ended}; call reset() to start an episode")
        # The common case, a float array of the right shape inside the bounds, is recognised
        # without a conversion: on Python floats for short actions (NaN fails every comparison),
        # else by clipping a float64 copy and comparing bytes. Anything else takes the general
        # path, which clips and counts or raises.
        ctrl = self._ctrl
        if type(action) is np.ndarray and action.shape == self._action_shape and action.dtype.kind == "f":
            bounds = self._bounds
            if bounds is not None:
                for value, (low, high) in zip(action.tolist(), bounds, strict=True):
                    if not low <= value <= high:
                        ctrl[:] = self._validate_action(action)
                        break
                else:
                    ctrl[:] = action
                    self._clipped = 0
            elif action.dtype == np.float32:
                # The bounds are the float32 space's own: the check needs no cast.
                self._set_if_in_bounds(ctrl, action, action, self._low32, self._high32, self._action32)
            else:
                self._action_in[:] = action
                self._set_if_in_bounds(ctrl, action, self._action_in, self._low, self._high, self._action)
        else:
            ctrl[:] = self._validate_action(action)
        counts = self._divergence_counts
        before = counts.tolist()
        mujoco.mj_step(self.model, self.data, self.frame_skip)
        obs = self._observation()
        if counts.tolist() != before:
            # The state is meaningless now: end the episode with a flag, never auto-reset.
            raised = (counts - before).tolist()
            _, _, info = self._evaluate(ctrl)
            for key in info:
                if key.startswith("reward_"):
                    info[key] = 0.0
            info.update(is_success=False, diverged=True, action_clipped=self._clipped,
                        divergence_warnings={_WARNING_NAMES[i]: n for i, n in enumerate(raised) if n})
            self._ended = "after the episode terminated (the simulation diverged)"
            return np.nan_to_num(obs), 0.0, True, False, info
        reward, success, info = self._evaluate(ctrl)
        info["diverged"] = False
        info["action_clipped"] = self._clipped
        terminated = success and self.terminate_on_success
        if terminated:
            self._ended = "after the episode terminated (success)"
        return obs, reward, terminated, False, info

    def render(self):
        """Return an ``(H, W, 3)`` uint8 frame from the task camera (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self._height, self._width)
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self):
        """Release the renderer's GL context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- helpers ---------------------------------------------------------------------------
    def _set_if_in_bounds(self, ctrl: np.ndarray, action: np.ndarray, values: np.ndarray,
                          low: np.ndarray, high: np.ndarray, out: np.ndarray) -> None:
        """``ctrl <- values`` if clipping them to ``[low, high]`` changes no byte, else the general path.

        NaN fails the byte compare too, so it reaches ``_validate_action`` and its error.
        """
        np.fmin(np.fmax(values, low, out=out), high, out=out)
        if out.tobytes() == values.tobytes():
            ctrl[:] = values
            self._clipped = 0
        else:
            ctrl[:] = self._validate_action(action)

    def _validate_action(self, action) -> np.ndarray:
        arr = np.asarray(action, dtype=np.float64)
        if arr.shape != self.action_space.shape:
            raise ValueError(f"action has shape {arr.shape}; expected {self.action_space.shape}")
        # Clip into a buffer with fmax/fmin, which map NaN to a bound: any non-finite value or
        # out-of-range command then shows up as a changed byte, and the common case costs one
        # comparison. Clipping is counted in info["action_clipped"], never silent.
        out = self._action
        np.fmin(np.fmax(arr, self._low, out=out), self._high, out=out)
        if out.tobytes() != arr.tobytes():
            if not np.isfinite(arr).all():
                raise ValueError(f"action {arr.tolist()} has non-finite values; expected finite numbers")
            self._clipped = int(np.count_nonzero(out != arr))
        else:
            self._clipped = 0
        return out

    # -- task hooks ------------------------------------------------------------------------
    def _reset_task(self, options: dict) -> None:
        raise NotImplementedError

    def _evaluate(self, action: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        """Reward, success and info of the step just taken.

        ``info`` holds every reward term as ``reward_<name>``, ``is_success`` and the task's own
        keys (the base adds ``diverged`` and ``action_clipped``); the reward is the sum of the
        terms in their order. This default builds it from
        ``_reward_terms``, ``_is_success`` and ``_task_info``; a task whose step cost matters may
        override it to build the same dict in one go. On a diverged step the base calls it too,
        for the keys, then zeroes the terms.

        Args:
            action: The control applied (``data.ctrl``, after clipping).
        """
        terms = self._reward_terms(action)
        success = self._is_success()
        info = {}
        reward = 0.0
        for key, value in terms.items():
            info["reward_" + key] = value
            reward += value
        info["is_success"] = success
        info.update(self._task_info())
        return reward, success, info

    def _observation(self) -> np.ndarray:
        raise NotImplementedError

    def _reward_terms(self, action: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def _task_info(self) -> dict[str, Any]:
        return {}

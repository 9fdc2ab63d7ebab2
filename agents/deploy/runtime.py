"""Run an exported policy with onnxruntime and numpy only (no torch, no mujoco).

``OnnxPolicy`` mirrors ``policies.base.Policy``'s execution: an observation history padded with the
first observation, and ``select_action`` served from a queue of the first Ta actions of each chunk.
The runtime owns the sampler's random numbers (a seeded numpy generator), so a chunk is a pure
function of (observations, noise).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np
import onnxruntime as ort

from agents.deploy.sidecar import read_sidecar


class OnnxPolicy:
    """An exported policy.

    Args:
        path: The ``.onnx`` file (its sidecar ``<path>.json`` beside it).
        threads: onnxruntime intra-op threads (1 keeps a core free for the control loop).
        seed: Seed of the noise generator.
        verify: Check the file's sha256 against the sidecar.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1, seed: int = 0, verify: bool = True) -> None:
        if threads < 1:
            raise ValueError(f"threads={threads}; expected >= 1")
        self.spec: dict[str, Any] = read_sidecar(path, verify=verify)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != list(self.spec["inputs"]):
            raise ValueError(f"{str(path)!r} has inputs {names}; its sidecar declares "
                             f"{list(self.spec['inputs'])}")
        self.uses_noise = "noise" in names
        self.rng = np.random.default_rng(seed)
        self._history: deque[np.ndarray] = deque(maxlen=self.n_obs_steps)
        self._queue: deque[np.ndarray] = deque()

    @property
    def n_obs_steps(self) -> int:
        """To: observations per chunk."""
        return int(self.spec["n_obs_steps"])

    @property
    def horizon(self) -> int:
        """H: actions per chunk."""
        return int(self.spec["horizon"])

    @property
    def n_action_steps(self) -> int:
        """Ta: actions executed per chunk (receding horizon)."""
        return int(self.spec["n_action_steps"])

    @property
    def obs_dim(self) -> int:
        """Do: observation features."""
        return int(self.spec["observation"]["dim"])

    @property
    def action_dim(self) -> int:
        """Da: action features."""
        return int(self.spec["action"]["dim"])

    @property
    def control_hz(self) -> float:
        """The control rate the policy was trained at (one action per period)."""
        return float(self.spec["control_hz"])

    def sample_noise(self, batch: int = 1) -> np.ndarray:
        """[B, H, Da] float32 standard-normal noise from the runtime's generator."""
        return self.rng.standard_normal((batch, self.horizon, self.action_dim), dtype=np.float32)

    def predict_chunk(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """One chunk.

        Args:
            obs: [B, To, Do] or [To, Do] raw observations, oldest first.
            noise: [B, H, Da] initial noise (default: drawn from the runtime's generator).

        Returns:
            [B, H, Da] (or [H, Da] for unbatched input) float32 raw actions inside the limits.
        """
        o = np.asarray(obs, dtype=np.float32)
        single = o.ndim == 2
        o = o[None] if single else o
        if o.ndim != 3 or o.shape[1:] != (self.n_obs_steps, self.obs_dim):
            to, do = self.n_obs_steps, self.obs_dim
            raise ValueError(f"observation batch has shape {np.shape(obs)}; expected "
                             f"[B, {to}, {do}] or [{to}, {do}]")
        if not np.isfinite(o).all():
            raise ValueError("observation has non-finite values; expected finite numbers")
        feeds = {"obs": np.ascontiguousarray(o)}
        if self.uses_noise:
            n = self.sample_noise(o.shape[0]) if noise is None else np.asarray(noise, dtype=np.float32)
            if n.shape != (o.shape[0], self.horizon, self.action_dim):
                raise ValueError(f"noise has shape {n.shape}; expected "
                                 f"{(o.shape[0], self.horizon, self.action_dim)}")
            feeds["noise"] = np.ascontiguousarray(n)
        (actions,) = self.session.run(["actions"], feeds)
        return actions[0] if single else actions

    def reset(self, seed: int | None = None) -> None:
        """Forget the history and queued actions; optionally reseed the noise."""
        self._history.clear()
        self._queue.clear()
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def observe(self, obs: np.ndarray) -> np.ndarray:
        """Append one observation [Do] to the history; returns the history [To, Do].

        The first observation of an episode fills the whole history, as in training.
        """
        o = np.asarray(obs, dtype=np.float32).reshape(-1)
        if o.size != self.obs_dim:
            raise ValueError(f"observation has {o.size} features; expected {self.obs_dim}")
        if not self._history:
            self._history.extend([o] * self.n_obs_steps)
        else:
            self._history.append(o)
        return np.stack(self._history)

    def select_action(self, obs: np.ndarray) -> np.ndarray:
        """One control step: [Do] -> [Da]; a new chunk is predicted when the queue is empty."""
        history = self.observe(obs)
        if not self._queue:
            self._queue.extend(self.predict_chunk(history)[: self.n_action_steps])
        return self._queue.popleft()

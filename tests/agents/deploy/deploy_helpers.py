"""Shared helpers of the deploy tests (imported by name: tests have no packages)."""

import threading

import numpy as np

from agents.deploy.robot import Observation
from policies import make_policy, save_policy

TASK = "kinodiff/TinyReach-v0"  # obs (3,) [x, v, goal], action (1,) force
SHAPES = {"obs_dim": 3, "action_dim": 1, "n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}
SMALL = {"diffusion": {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4},
         "mlp": {"hidden_dims": (32, 32)}}


def save_untrained(folder, name="diffusion", **overrides):
    """A saved policy with random weights and fitted normalizers (no training needed to export)."""
    policy = make_policy(name, **{**SHAPES, **SMALL[name], **overrides})
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.uniform([-1, -2, -1], [1, 2, 1], size=(256, 3)),
                           rng.uniform(-0.8, 0.8, size=(256, 1)))
    save_policy(policy, folder, metadata={"env_id": TASK})
    return folder


HZ = 250.0  # fast enough for short tests; the assertions count ticks and messages, never time


class FakeRobot:
    """In-process robot: the state is the number of commands executed; it logs every message."""

    def __init__(self, episode_length=None):
        self.log = []  # ("command", array) | ("hold",) | ("stop",) | ("reset", seed)
        self.steps = 0
        self.episode_length = episode_length
        self.answer = True
        self.ticks = 0
        self.on_observe = None
        self.on_command = None

    def read_observation(self, timeout):
        self.ticks += 1
        if self.on_observe:
            self.on_observe(self)
        if not self.answer:
            return None
        done = self.episode_length is not None and self.steps >= self.episode_length
        return Observation(values=np.array([self.steps, 0.0, 0.0]), seq=self.steps, stamp=0.0,
                           reward=1.0, done=done, success=done)

    def send_command(self, command):
        self.log.append(("command", np.array(command)))
        self.steps += 1
        if self.on_command:
            self.on_command(self)

    def hold(self):
        self.log.append(("hold",))

    def stop(self):
        self.log.append(("stop",))

    def reset(self, seed):
        self.log.append(("reset", seed))
        self.steps = 0
        return self.read_observation(0.0)

    def commands(self):
        return [m[1] for m in self.log if m[0] == "command"]


class StubPolicy:
    """Chunk j of the answer to observation x is x + j (so each command tells which chunk made it)."""

    n_action_steps = 4
    horizon = 8

    def __init__(self, nan_at=None, block_on_call=None):
        self.calls = 0
        self.resets = []
        self.history = []
        self.nan_at = nan_at  # (call, index) of a NaN action
        self.block_on_call = block_on_call
        self.release = threading.Event()

    def reset(self, seed=None):
        self.resets.append(seed)
        self.history = []

    def observe(self, obs):
        self.history = [*self.history[-1:], np.asarray(obs)] if self.history else [obs, obs]
        return np.stack(self.history)

    def predict_chunk(self, history):
        self.calls += 1
        if self.block_on_call is not None and self.calls >= self.block_on_call:
            self.release.wait(10.0)  # a frozen policy
        chunk = (history[-1, 0] + np.arange(self.horizon, dtype=np.float64))[:, None] * 0.01
        if self.nan_at is not None and self.calls == self.nan_at[0]:
            chunk[self.nan_at[1]] = np.nan
        return chunk

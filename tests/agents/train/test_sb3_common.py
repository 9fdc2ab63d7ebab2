import gymnasium as gym
import numpy as np
import pytest

from agents.train.dppo import DppoConfig
from agents.train.residual import ResidualConfig
from agents.train.sb3_common import (
    SuccessReward,
    check_reward,
    monitored,
    sb3_progress_bar,
    within_budget,
)


class _Scripted(gym.Env):
    """Three steps with task rewards 2, 3, 5; success (and the end) on the third."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == 3
        return np.zeros(1, np.float32), [2.0, 3.0, 5.0][self.t - 1], done, False, {"is_success": done}


def test_success_reward_is_one_on_success_and_the_monitor_inside_keeps_the_task_return():
    env = SuccessReward(monitored(_Scripted(), "Scripted-v0"))
    env.reset(seed=0)
    rewards, info = [], {}
    for _ in range(3):
        _, r, terminated, _, info = env.step(np.zeros(1, np.float32))
        rewards.append(r)
    assert rewards == [0.0, 0.0, 1.0] and terminated
    assert info["episode"]["r"] == 10.0  # 2 + 3 + 5: what logs and evaluations report


def test_unknown_reward_is_named():
    with pytest.raises(ValueError, match="reward='dense'"):
        check_reward("dense")
    with pytest.raises(ValueError, match="reward='x'"):
        DppoConfig(base="b", reward="x")
    with pytest.raises(ValueError, match="reward='x'"):
        ResidualConfig(base="b", reward="x")


def test_success_reward_refuses_a_task_without_is_success():
    class _Silent(_Scripted):
        def step(self, action):
            obs, r, terminated, truncated, _ = super().step(action)
            return obs, r, terminated, truncated, {}

    env = SuccessReward(_Silent())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="_Silent does not report it"):
        env.step(np.zeros(1, np.float32))


def test_budget_is_whole_rollouts_that_never_exceed_it():
    # 200,000 // 2,048 = 97 rollouts = 198,656 (98 would be 200,704); a tiny budget still runs one.
    assert within_budget(200_000, 2048) == 198_656
    assert within_budget(4096, 2048) == 4096
    assert within_budget(100, 2048) == 2048


def test_progress_bar_only_where_sb3_can_draw_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    # Without rich, SB3's progress bar raises ImportError: the trainers must not ask for it.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "rich" else real(name))
    assert sb3_progress_bar(True) is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "rich" else real(name))
    assert sb3_progress_bar(True) is True
    assert sb3_progress_bar(False) is False

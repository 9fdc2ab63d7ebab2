"""GuardedActor: any actor's commands pass the runtime dynamics guard before the env steps them."""

import numpy as np

import envs
from agents.rollout.guarded_actor import GuardedActor


class FullTorque:
    """An actor that ignores its observations and pushes every joint at full torque."""

    source = "test"

    def __init__(self) -> None:
        self.resets = 0

    def reset(self, episode_index: int, seed: int) -> None:
        self.resets += 1

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.array([1.0, -1.0, 1.0], dtype=np.float32)

    def pop_latencies(self) -> list[float]:
        return [0.5]


def episode(env, actor, steps=120):
    u = env.unwrapped
    obs, _ = env.reset(seed=3)
    actor.reset(0, 3)
    bad = 0
    for _ in range(steps):
        action = actor.act(obs)
        assert action.dtype == np.float32
        obs, *_ = env.step(action)
        counts = u.constraint_spec.count_violations(u.data.qpos, u.data.qvel)
        bad += counts.joint_position + counts.joint_velocity
    return bad


def test_full_torque_passes_the_limits_alone_and_holds_them_guarded():
    env = envs.make_env("kinodiff/ArmReach-v0")
    assert episode(env, FullTorque()) > 0  # the MJCF speed limits are not enforced by MuJoCo
    inner = FullTorque()
    guarded = GuardedActor(inner, env)
    assert episode(env, guarded) == 0
    assert guarded.guard.repairs > 0 and guarded.guard.unresolved == 0
    assert inner.resets == 1 and guarded.pop_latencies() == [0.5] and guarded.source == "test"

import numpy as np
import pytest

from envs import make_env
from envs.wrappers import (
    SHIFT_PRESETS,
    ActionChunk,
    DomainRandomization,
    FrameStackObservation,
    ShiftSpec,
    VideoRecorder,
)

ENV = "kinodiff/TinyReach-v0"


def test_action_chunk_runs_ta_steps_and_sums_rewards():
    plain, chunked = make_env(ENV), ActionChunk(make_env(ENV), 3)
    plain.reset(seed=1)
    chunked.reset(seed=1)
    actions = np.array([[0.5], [0.2], [-0.1]], np.float32)
    rewards = [plain.step(a)[1] for a in actions]
    obs_plain = plain.unwrapped.data.qpos.copy()
    obs, reward, *_, info = chunked.step(actions)
    assert info["executed_steps"] == 3 and np.isclose(reward, sum(rewards))
    assert np.array_equal(chunked.unwrapped.data.qpos, obs_plain)
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        chunked.step(np.zeros((2, 1)))


def test_observation_history_is_gymnasiums_frame_stack():
    env = FrameStackObservation(make_env(ENV), 2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 3)


def test_domain_randomization_scales_physics_reproducibly_and_restores_nominal():
    env = DomainRandomization(make_env(ENV), "all")
    nominal_mass = env.unwrapped.model.body_mass.copy()
    obs_a, info = env.reset(seed=4)
    mass_a = env.unwrapped.model.body_mass.copy()
    obs_b, _ = env.reset(seed=4)
    assert np.array_equal(obs_a, obs_b) and np.array_equal(mass_a, env.unwrapped.model.body_mass)
    lo, hi = SHIFT_PRESETS["all"].mass
    cart = env.unwrapped.model.body("cart").id
    assert lo * nominal_mass[cart] <= mass_a[cart] <= hi * nominal_mass[cart]
    assert info["shift"]["obs_noise"] == 0.03
    nominal = DomainRandomization(make_env(ENV), "nominal")
    nominal.reset(seed=4)
    assert np.array_equal(nominal.unwrapped.model.body_mass, nominal_mass)
    with pytest.raises(ValueError, match="unknown shift 'moon'"):
        DomainRandomization(make_env(ENV), "moon")
    with pytest.raises(ValueError, match="mass range"):
        ShiftSpec(mass=(2.0, 1.0))


def test_video_recorder_writes_one_file_per_episode(tmp_path):
    env = VideoRecorder(make_env(ENV, render_mode="rgb_array"), tmp_path)
    for seed in (0, 1):
        env.reset(seed=seed)
        for _ in range(3):
            env.step(np.zeros(1, np.float32))
    env.close()
    assert [p.name for p in env.paths] == ["episode_0.mp4", "episode_1.mp4"]
    assert all(p.stat().st_size > 0 for p in env.paths)

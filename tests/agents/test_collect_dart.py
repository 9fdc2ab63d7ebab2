"""DART collection: noisy actions executed, the expert's clean actions stored."""

import numpy as np
import pytest

import envs
from agents.collect import CollectConfig, collect
from agents.data.episode_store import EpisodeStore
from agents.utils import episode_seed

ENV = "kinodiff/PointObstacle-v0"


def _collect(tmp_path, name: str, noise: float) -> EpisodeStore:
    collect(CollectConfig(env=ENV, episodes=2, out=str(tmp_path / name), action_noise=noise),
            progress=False)
    return EpisodeStore.open(tmp_path / name)


def test_dart_stores_the_experts_clean_action_for_each_visited_state(tmp_path):
    clean, noisy = _collect(tmp_path, "clean.zarr", 0.0), _collect(tmp_path, "dart.zarr", 0.3)
    d_clean, d_noisy = clean.load(["obs", "action"]), noisy.load(["obs", "action"])
    # The noise changed where the robot went ...
    n = min(len(d_clean["obs"]), len(d_noisy["obs"]))
    assert not np.allclose(d_clean["obs"][:n], d_noisy["obs"][:n], atol=1e-3)
    # ... and each stored action is the expert's own at the stored state (replayed per episode).
    env = envs.make_env(ENV)
    expert = envs.make_expert(ENV, "scripted", env)
    start = 0
    for index, end in enumerate(noisy.episode_ends):
        expert.reset(index, np.random.default_rng(episode_seed(0, index)))
        replayed = np.array([expert.act(o) for o in d_noisy["obs"][start:end]])
        np.testing.assert_allclose(d_noisy["action"][start:end], replayed, atol=1e-6)
        start = end
    assert noisy.attrs["provenance"]["collect"]["action_noise"] == 0.3


def test_bad_action_noise_is_refused_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"action_noise=-0.1; expected a finite standard deviation"):
        CollectConfig(env=ENV, out=str(tmp_path / "x.zarr"), action_noise=-0.1)
    assert not (tmp_path / "x.zarr").exists()

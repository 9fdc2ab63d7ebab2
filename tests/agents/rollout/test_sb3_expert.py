import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

from agents.collect import CollectConfig, collect
from agents.data.episode_store import EpisodeStore


def test_collect_with_an_sb3_expert_on_a_plain_gymnasium_id(tmp_path):
    model = PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=32, seed=0, verbose=0)
    model.learn(64)
    model.save(tmp_path / "ppo_pendulum")
    summary = collect(CollectConfig(env="Pendulum-v1", expert=f"sb3:{tmp_path / 'ppo_pendulum'}",
                                    episodes=2, out=str(tmp_path / "d.zarr"), keep_failed=True),
                      progress=False)
    store = EpisodeStore.open(tmp_path / "d.zarr")
    assert summary["episodes"] == 2 and store.n_steps == 400  # Pendulum's time limit: 200 steps
    assert list(store.table()["source"]) == ["sb3:ppo_pendulum.zip"] * 2
    obs = store.episode(0)["obs"][:5]
    expected = np.stack([model.predict(o, deterministic=True)[0] for o in obs])
    assert np.allclose(store.episode(0)["action"][:5], expected)


def test_missing_sb3_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        collect(CollectConfig(env="Pendulum-v1", expert="sb3:nope.zip", episodes=1,
                              out=str(tmp_path / "d.zarr")), progress=False)
    assert not (tmp_path / "d.zarr").exists()

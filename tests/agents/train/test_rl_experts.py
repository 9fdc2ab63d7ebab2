import numpy as np
import pytest

from agents.collect import CollectConfig, collect
from agents.data.episode_store import EpisodeStore
from agents.train.rl import PRESETS, RlConfig, load_obs_stats, preset, train_rl


def test_expert_with_normalized_observations_collects_what_it_was_trained_on(tmp_path):
    out = train_rl(RlConfig(env="Pendulum-v1", out=str(tmp_path / "run"), steps=512, n_envs=2,
                            normalize=True, eval_every=256, eval_episodes=1, checkpoint_every=256,
                            algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1}), progress=False)
    assert (out / "model.vecnormalize.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("*.zip")) == ["step_0000256.zip",
                                                                           "step_0000512.zip"]
    collect(CollectConfig(env="Pendulum-v1", expert=f"sb3:{out / 'model.zip'}", episodes=1,
                          out=str(tmp_path / "d.zarr"), keep_failed=True), progress=False)
    episode = EpisodeStore.open(tmp_path / "d.zarr").episode(0)
    from stable_baselines3 import PPO

    model = PPO.load(out / "model.zip", device="cpu")
    normalize = load_obs_stats(out / "model.zip")
    expected = model.predict(normalize(episode["obs"][:5]), deterministic=True)[0]
    raw = model.predict(episode["obs"][:5], deterministic=True)[0]
    np.testing.assert_allclose(episode["action"][:5], expected, atol=1e-6)
    assert not np.allclose(expected, raw)  # the statistics matter


def test_presets_are_a_dict_with_a_default():
    assert preset("InvertedPendulum-v5", "ppo") is PRESETS["InvertedPendulum-v5"]["ppo"]
    assert preset("Hopper-v5", "sac") is PRESETS["default"]["sac"]
    with pytest.raises(ValueError, match="algo='a2c'"):
        preset("Hopper-v5", "a2c")


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_rl(RlConfig(env="Pendulum-v1", out=str(tmp_path / "run")), progress=False)

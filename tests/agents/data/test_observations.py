"""Image (Dict) observations through the store, the BC batches and the batched policy actor."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.data.episode_store import EpisodeStore
from agents.data.observations import (
    chunk_steps_for,
    obs_keys,
    obs_shapes,
    obs_specs,
    policy_obs,
    stack_observations,
)
from agents.data.sampler import SequenceSampler
from agents.rollout.batch_actors import PolicyBatchActor
from agents.train.bc import _Batches
from policies import make_policy

IMG = (32, 32, 3)
SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, IMG, np.uint8),
                         "agent_pos": gym.spaces.Box(-1, 1, (2,), np.float32)})


def _frames(t, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, IMG, dtype=np.uint8),
             "agent_pos": rng.normal(size=2)} for _ in range(t)]


def test_dict_observations_get_one_array_per_key_images_stay_uint8():
    specs = obs_specs(SPACE)
    assert specs == {"obs.image": (IMG, "uint8"), "obs.agent_pos": ((2,), "float32")}
    assert obs_specs(gym.spaces.Box(-1, 1, (5,))) == {"obs": ((5,), "float32")}
    steps = stack_observations(_frames(4))
    assert steps["obs.image"].dtype == np.uint8 and steps["obs.image"].shape == (4, *IMG)
    assert steps["obs.agent_pos"].dtype == np.float32 and steps["obs.agent_pos"].shape == (4, 2)
    assert stack_observations([np.zeros(3)])["obs"].dtype == np.float32
    with pytest.raises(ValueError, match="Box or a Dict of Boxes"):
        obs_specs(gym.spaces.Discrete(3))


def test_image_chunks_are_a_few_mib_and_low_dim_chunks_stay_long():
    # 4 MiB / (96 * 96 * 3 bytes) = 151 steps per chunk; low-dim stores keep 4096.
    assert chunk_steps_for({"obs.image": ((96, 96, 3), "uint8"), "action": ((2,), "float32")}) == 151
    assert chunk_steps_for({"obs": ((5,), "float32")}) == 4096


def test_store_round_trip_and_bc_windows_from_image_keys(tmp_path):
    specs = {**obs_specs(SPACE), "action": ((2,), "float32")}
    lengths = (5, 3)
    with EpisodeStore.create(tmp_path / "d.zarr", specs, env_id="x", chunk_steps=4) as store:
        for i, t in enumerate(lengths):
            steps = {**stack_observations(_frames(t, seed=i)),
                     "action": np.arange(2 * t, dtype=np.float32).reshape(t, 2) + 100 * i}
            store.add_episode(steps, episode_id=i, seed=i, source="test", success=True)
    store = EpisodeStore.open(tmp_path / "d.zarr")
    keys = obs_keys(store.keys)
    assert keys == ["obs.agent_pos", "obs.image"]
    assert obs_shapes({k: store.step_shape(k) for k in keys}) == {"agent_pos": (2,), "image": IMG}
    data = store.load([*keys, "action"])
    assert data["obs.image"].dtype == np.uint8
    assert np.array_equal(data["obs.image"][:5], stack_observations(_frames(5))["obs.image"])
    batches = _Batches(data, SequenceSampler(store.episode_ends, np.array([1]), 2, 4), seed=0)
    batch = batches.take(np.array([0]))  # anchored at the first step of episode 1 (rows 5..7)
    assert set(batch["obs"]) == {"image", "agent_pos"} and batch["obs"]["image"].dtype == torch.uint8
    # Edge padding: the first frame repeats; actions run 5, 6, 7 then repeat 7.
    image = policy_obs(data)["image"]
    assert torch.equal(batch["obs"]["image"][0], torch.as_tensor(image[[5, 5]]))
    assert batch["action"][0, :, 0].tolist() == [100.0, 102.0, 104.0, 104.0]


def test_policy_batch_actor_serves_image_slots_in_one_call():
    policy = make_policy("diffusion", obs_dim=2, action_dim=2, horizon=8, n_action_steps=4,
                         obs_encoder="image", image_shape=IMG, crop_shape=(28, 28), image_features=8,
                         encoder_channels=(8, 8, 8, 8), num_keypoints=4, hidden_dims=(32, 32),
                         num_inference_steps=2).eval()
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda o: calls.append({k: v.shape for k, v in o.items()}) or original(o)
    actor = PolicyBatchActor(policy, n_slots=3, n_robots=1, source="p")
    for slot in range(3):
        actor.reset(slot, slot, seed=slot)
    frames = _frames(3)
    actions = [actor.act(frames, [0, 1, 2]) for _ in range(5)]
    assert all(a.shape == (3, 2) and np.isfinite(a).all() for a in actions)
    # Ta = 4: one call for all three slots at step 0 and again at step 4.
    assert calls == [{"image": (3, 2, *IMG), "agent_pos": (3, 2, 2)}] * 2

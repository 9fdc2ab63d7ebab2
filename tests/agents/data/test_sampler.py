import numpy as np
import pytest

from agents.data.sampler import SequenceSampler, split_episodes


def test_windows_are_edge_padded_within_their_episode():
    # Two episodes: [0, 3) and [3, 8). To=2, H=4.
    s = SequenceSampler(np.array([3, 8]), np.array([0, 1]), n_obs_steps=2, horizon=4)
    assert len(s) == 8
    obs_idx, act_idx = s.indices(np.array([0, 2, 3, 7]))
    # Anchor 0: obs (-1, 0) clamps to (0, 0); actions 0..3 clamp at the episode end 2.
    assert obs_idx.tolist() == [[0, 0], [1, 2], [3, 3], [6, 7]]
    assert act_idx.tolist() == [[0, 1, 2, 2], [2, 2, 2, 2], [3, 4, 5, 6], [7, 7, 7, 7]]


def test_sampler_over_a_subset_of_episodes():
    s = SequenceSampler(np.array([3, 8, 10]), np.array([2]), n_obs_steps=1, horizon=2)
    obs_idx, act_idx = s.indices(np.arange(len(s)))
    assert obs_idx.ravel().tolist() == [8, 9] and act_idx.tolist() == [[8, 9], [9, 9]]


def test_split_is_seeded_disjoint_and_complete():
    a = split_episodes(20, 0.2, seed=1)
    b = split_episodes(20, 0.2, seed=1)
    c = split_episodes(20, 0.2, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == 4 and sorted(np.concatenate(a).tolist()) == list(range(20))
    assert len(split_episodes(1, 0.5, 0)[0]) == 1
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(10, 1.5, 0)

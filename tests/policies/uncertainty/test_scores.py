import math

import pytest
import torch

from policies.uncertainty.scores import (
    ensemble_disagreement,
    rnd_error,
    sample_dispersion,
    temporal_inconsistency,
)


def test_sample_dispersion_hand_computed():
    # One row, K=2 samples of a 1x1 chunk: values 0 and 2 -> population variance 1.
    samples = torch.tensor([[[[0.0]], [[2.0]]]])
    assert math.isclose(float(sample_dispersion(samples)[0]), 1.0)
    # Identical samples have no spread.
    assert float(sample_dispersion(torch.ones(3, 4, 5, 2)).abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"expected \[B, K, H, Da\]"):
        sample_dispersion(torch.ones(3, 5, 2))


def test_ensemble_disagreement_hand_computed():
    # M=2 members predicting 1 and 3 for every element -> variance 1; a second row agrees -> 0.
    preds = torch.zeros(2, 2, 4, 3)
    preds[0, 0], preds[1, 0] = 1.0, 3.0
    out = ensemble_disagreement(preds)
    assert torch.allclose(out, torch.tensor([1.0, 0.0]))


def test_temporal_inconsistency_zero_for_a_continued_chunk():
    H, shift = 6, 2
    prev = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    cont = torch.cat([prev[:, shift:], torch.zeros(1, shift, 1)], dim=1)  # previous chunk advanced
    samples = torch.stack([cont, cont], dim=1)
    assert float(temporal_inconsistency(prev, samples, shift)[0]) == 0.0
    # Off by 1 on every overlapping element -> mean squared difference 1.
    assert math.isclose(float(temporal_inconsistency(prev, samples + 1.0, shift)[0]), 1.0)
    with pytest.raises(ValueError, match="shift=6"):
        temporal_inconsistency(prev, samples, H)


def test_rnd_error_is_mean_squared_error():
    # (1-0)^2 and (3-1)^2 -> mean 2.5
    assert math.isclose(float(rnd_error(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]]))[0]), 2.5)

"""Uncertainty scores as pure functions over batched tensors (no loop over samples).

Letters: B batch, K sampled chunks per observation, M ensemble members, H horizon, Da action dim.
Every score is computed in normalized action units, so one threshold scale fits every task.
"""

from __future__ import annotations

import torch


def sample_dispersion(samples: torch.Tensor) -> torch.Tensor:
    """Spread of K sampled chunks of the same observation (aleatoric / multimodality).

    The mean over (H, Da) of the per-element variance across the K samples.

    Args:
        samples: [B, K, H, Da] sampled chunks (normalized units).

    Returns:
        [B] dispersion; 0 when every sample is equal.
    """
    if samples.ndim != 4:
        raise ValueError(f"samples have shape {tuple(samples.shape)}; expected [B, K, H, Da]")
    return samples.var(dim=1, unbiased=False).mean(dim=(1, 2))


def ensemble_disagreement(predictions: torch.Tensor) -> torch.Tensor:
    """Disagreement of M ensemble members' clean-chunk predictions (epistemic).

    Args:
        predictions: [M, B, H, Da] each member's prediction for the same inputs.

    Returns:
        [B] mean over (H, Da) of the variance across members.
    """
    if predictions.ndim != 4:
        raise ValueError(f"predictions have shape {tuple(predictions.shape)}; expected [M, B, H, Da]")
    return predictions.var(dim=0, unbiased=False).mean(dim=(1, 2))


def temporal_inconsistency(previous: torch.Tensor, samples: torch.Tensor, shift: int) -> torch.Tensor:
    """How far new chunks stray from the still-unexecuted part of the previous chunk (Sentinel).

    The previous chunk, advanced by ``shift`` executed steps, overlaps the first ``H - shift`` steps
    of each new sample; the score is the mean squared difference on that overlap, averaged over K.

    Args:
        previous: [B, H, Da] the chunk predicted at the last call.
        samples: [B, K, H, Da] this call's samples.
        shift: Steps executed since the last call (Ta for receding horizon), 1 <= shift < H.

    Returns:
        [B] inconsistency; 0 when the new samples continue the previous chunk exactly.
    """
    H = samples.shape[2]
    if not 1 <= shift < H:
        raise ValueError(f"shift={shift}; expected 1 <= shift < H={H}")
    if previous.shape != (samples.shape[0], H, samples.shape[3]):
        raise ValueError(f"previous chunk has shape {tuple(previous.shape)}; expected "
                         f"{(samples.shape[0], H, samples.shape[3])}")
    overlap = previous[:, None, shift:] - samples[:, :, : H - shift]
    return overlap.square().mean(dim=(1, 2, 3))


def rnd_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Random-network-distillation novelty: squared error of predictor vs frozen target, [B, E] -> [B]."""
    return (prediction - target).square().mean(dim=-1)

"""Angle observation features: an angle enters the state encoder as (sin, cos), never as a number.

A range-normalized angle jumps from +1 to -1 where it wraps (PushT's block angle at +-pi), so two
nearly equal poses look maximally different to the denoiser. Its sine and cosine are continuous.
"""

from __future__ import annotations

import torch

from policies.layers import feature_index
from policies.normalizer import RangeNormalizer


def check_angle_features(dims: tuple[int, ...], obs_dim: int) -> None:
    """Raise if ``dims`` are not distinct feature indices in ``[0, obs_dim)``."""
    if len(set(dims)) != len(dims) or any(not 0 <= d < obs_dim for d in dims):
        raise ValueError(f"angle_features={dims} is invalid; expected distinct indices in "
                         f"[0, {obs_dim})")


def angle_features(obs: torch.Tensor, dims: tuple[int, ...], normalizer: RangeNormalizer) -> torch.Tensor:
    """Replace each angle feature of normalized observations by its sine and append its cosine.

    Args:
        obs: [..., Do] range-normalized observations.
        dims: Indices of the features that are angles, radians before normalization.
        normalizer: The observations' ``RangeNormalizer`` (to recover the raw angles exactly).

    Returns:
        [..., Do + len(dims)]: ``sin`` at each angle's index, the ``cos`` of the angles appended
        in the order of ``dims``.
    """
    if not dims:
        return obs
    dims = tuple(dims)
    idx = feature_index(dims, obs.device)
    center, half_range = normalizer.selected(dims)
    raw = torch.addcmul(center, obs.index_select(-1, idx), half_range)
    return torch.cat([obs.index_copy(-1, idx, torch.sin(raw)), torch.cos(raw)], dim=-1)


def check_body_keypoints(points: tuple[float, ...], pose: tuple[int, ...], obs_dim: int) -> None:
    """Raise unless ``points`` are (x, y) pairs and ``pose`` three feature indices below ``obs_dim``."""
    if len(points) % 2:
        raise ValueError(f"body_keypoints has {len(points)} numbers; expected (x, y) pairs")
    if points and (len(pose) != 3 or len(set(pose)) != 3 or any(not 0 <= d < obs_dim for d in pose)):
        raise ValueError(f"body_pose={pose} is invalid; expected three distinct indices (x, y, angle) "
                         f"in [0, {obs_dim})")


def body_keypoints(obs: torch.Tensor, points: torch.Tensor, pose: tuple[int, ...],
                   normalizer: RangeNormalizer) -> torch.Tensor:
    """World positions of points fixed on a rigid body, in the units of its normalized x and y.

    Diffusion Policy's PushT state is such keypoints of the T: where a face is becomes a linear
    function of them, not a product of the pose's position and the sine and cosine of its angle.

    Args:
        obs: [..., Do] range-normalized observations.
        points: [P, 2] points in the body frame (raw units).
        pose: Indices of the body's ``(x, y, angle)`` features.
        normalizer: The observations' ``RangeNormalizer``.

    Returns:
        [..., 2P]: ``(x, y)`` of each point, normalized as the body's x and y are.
    """
    pose = tuple(pose)
    center, half_range = normalizer.selected(pose)  # [3] each: x, y, angle
    raw = obs.index_select(-1, feature_index(pose, obs.device)) * half_range + center  # [..., 3]
    c, s = torch.cos(raw[..., 2:]), torch.sin(raw[..., 2:])
    px, py = points[:, 0], points[:, 1]
    x = raw[..., :1] + c * px - s * py  # [..., P]
    y = raw[..., 1:2] + s * px + c * py
    x = (x - center[0]) / half_range[0]
    y = (y - center[1]) / half_range[1]
    return torch.stack([x, y], dim=-1).flatten(-2)

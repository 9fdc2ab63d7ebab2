"""Observation encoders: an observation history -> one condition vector [B, out_dim] for a denoiser.

Both encoders keep each observation step's features contiguous in the output (step 0's features, then
step 1's, ...), so a denoiser may split the condition into one token per step.
"""

from __future__ import annotations

import torch
from torch import nn


class LowDimEncoder(nn.Module):
    """Identity encoder for low-dimensional observations: flattens the history.

    Args:
        obs_dim: Do, features per observation step.
        n_obs_steps: To, observation steps in the history.
    """

    def __init__(self, obs_dim: int, n_obs_steps: int) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("n_obs_steps", n_obs_steps)):
            if int(value) < 1:
                raise ValueError(f"{name}={value} is invalid; expected an integer >= 1")
        self.obs_dim, self.n_obs_steps = int(obs_dim), int(n_obs_steps)

    @property
    def out_dim(self) -> int:
        """Width of the encoding: To * Do."""
        return self.n_obs_steps * self.obs_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Flatten the observation history.

        Args:
            obs: [B, To, Do] observations, oldest first.

        Returns:
            [B, To * Do].
        """
        if obs.ndim != 3 or obs.shape[1:] != (self.n_obs_steps, self.obs_dim):
            raise ValueError(f"observation has shape {tuple(obs.shape)}; "
                             f"expected [B, {self.n_obs_steps}, {self.obs_dim}]")
        return obs.flatten(1)


class SpatialSoftmax(nn.Module):
    """Spatial soft-argmax (Levine et al. 2016): feature maps -> expected image coordinates per keypoint.

    Args:
        in_channels: C of the feature maps.
        height: h of the feature maps.
        width: w of the feature maps.
        num_keypoints: K, keypoints (a 1x1 convolution maps C channels to K heatmaps).
    """

    def __init__(self, in_channels: int, height: int, width: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, num_keypoints, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width),
                                indexing="ij")
        # [h * w, 2] (x, y) coordinates in [-1, 1]; fixed by the crop size, so not saved.
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, 2K] expected (x, y) of each keypoint's heatmap."""
        heat = self.proj(features).flatten(2).softmax(dim=-1)  # [N, K, h * w]
        return (heat @ self.grid).flatten(1)


class ImageEncoder(nn.Module):
    """A small CNN over every frame of an image history, concatenated with the agent position history.

    Each frame is converted from HWC (uint8 in [0, 255] or float in [0, 1]) to CHW float in [0, 1], cropped
    (randomly per frame in training mode, centred in eval mode, as Diffusion Policy does with 84 of 96
    pixels), passed through four stride-2 convolutions with GroupNorm and Mish, reduced to keypoints by a
    spatial soft-argmax and projected to ``feature_dim``. No pretrained weights are used.

    The output keeps each step contiguous: ``[feat_0, pos_0, feat_1, pos_1, ...]``.

    Args:
        image_shape: (C, H, W) of one frame; C must be 3.
        n_obs_steps: To, frames in the history.
        agent_pos_dim: P, agent position features per step.
        feature_dim: F, image features per frame.
        crop_shape: (h, w) crop, or None for no crop.
        channels: Widths of the four convolutions, each divisible by 8 (GroupNorm).
        num_keypoints: K, keypoints of the spatial soft-argmax.
    """

    def __init__(self, image_shape: tuple[int, int, int] = (3, 96, 96), n_obs_steps: int = 2,
                 agent_pos_dim: int = 2, feature_dim: int = 64, crop_shape: tuple[int, int] | None = None,
                 channels: tuple[int, int, int, int] = (32, 64, 128, 128), num_keypoints: int = 32) -> None:
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or image_shape[0] != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape={image_shape} is invalid; expected (3, H, W)")
        crop = tuple(int(s) for s in crop_shape) if crop_shape is not None else image_shape[1:]
        if len(crop) != 2 or not (1 <= crop[0] <= image_shape[1] and 1 <= crop[1] <= image_shape[2]):
            raise ValueError(f"crop_shape={crop_shape} is invalid; expected (h, w) with "
                             f"1 <= h <= {image_shape[1]} and 1 <= w <= {image_shape[2]}")
        if len(channels) != 4 or any(c < 8 or c % 8 for c in channels):
            raise ValueError(f"channels={channels} is invalid; expected four multiples of 8")
        for name, value in (("n_obs_steps", n_obs_steps), ("agent_pos_dim", agent_pos_dim),
                            ("feature_dim", feature_dim), ("num_keypoints", num_keypoints)):
            if int(value) < 1:
                raise ValueError(f"{name}={value} is invalid; expected an integer >= 1")
        self.image_shape = image_shape
        self.crop_shape = crop
        self.n_obs_steps, self.agent_pos_dim, self.feature_dim = n_obs_steps, agent_pos_dim, feature_dim

        layers: list[nn.Module] = []
        h, w, cin = crop[0], crop[1], 3
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.Mish()]
            h, w, cin = (h + 1) // 2, (w + 1) // 2, cout  # kernel 3, stride 2, padding 1
        self.backbone = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax(cin, h, w, num_keypoints)
        self.head = nn.Sequential(nn.Linear(2 * num_keypoints, feature_dim), nn.Mish())

    @property
    def out_dim(self) -> int:
        """Width of the encoding: To * (F + P)."""
        return self.n_obs_steps * (self.feature_dim + self.agent_pos_dim)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encode an image + agent position history.

        Args:
            obs: ``{"image": [B, To, H, W, 3] uint8 in [0, 255] or float in [0, 1],
                "agent_pos": [B, To, P]}``, oldest step first.

        Returns:
            [B, To * (F + P)].
        """
        if not isinstance(obs, dict) or not {"image", "agent_pos"} <= obs.keys():
            got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            raise ValueError(f"observation is {got}; expected a dict with keys 'image' and 'agent_pos'")
        image, pos = obs["image"], obs["agent_pos"]
        c, H, W = self.image_shape
        To = self.n_obs_steps
        if image.ndim != 5 or image.shape[1:] != (To, H, W, c):
            raise ValueError(f"image has shape {tuple(image.shape)}; expected [B, {To}, {H}, {W}, {c}]")
        if pos.ndim != 3 or pos.shape != (image.shape[0], To, self.agent_pos_dim):
            raise ValueError(f"agent_pos has shape {tuple(pos.shape)}; "
                             f"expected [{image.shape[0]}, {To}, {self.agent_pos_dim}]")
        B = image.shape[0]
        frames = self._crop(image.flatten(0, 1))  # [B * To, h, w, 3]
        frames = frames.permute(0, 3, 1, 2).float()
        if image.dtype == torch.uint8:
            frames = frames / 255.0
        features = self.head(self.keypoints(self.backbone(frames))).view(B, To, self.feature_dim)
        return torch.cat([features, pos.to(features.dtype)], dim=-1).flatten(1)

    def _crop(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] -> [N, h, w, 3]: a random crop per frame in training mode, the centre otherwise."""
        (_, H, W), (h, w) = self.image_shape, self.crop_shape
        if (h, w) == (H, W):
            return frames
        if not self.training:
            top, left = (H - h) // 2, (W - w) // 2
            return frames[:, top:top + h, left:left + w]
        # Cropping before the dtype conversion moves fewer bytes; gather with per-frame offsets.
        n = frames.shape[0]
        top = torch.randint(0, H - h + 1, (n, 1), device=frames.device)
        left = torch.randint(0, W - w + 1, (n, 1), device=frames.device)
        rows = (top + torch.arange(h, device=frames.device))[:, :, None]  # [N, h, 1]
        cols = (left + torch.arange(w, device=frames.device))[:, None, :]  # [N, 1, w]
        index = torch.arange(n, device=frames.device)[:, None, None]
        return frames[index, rows, cols]

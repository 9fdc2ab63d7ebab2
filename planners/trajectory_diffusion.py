"""Trajectory diffusion (Diffuser, Janner et al. 2022): denoise whole state-action sequences.

The model diffuses ``(H, Ds + Da)`` sequences of ``[x, y, vx, vy, ax, ay]`` (a point-mass task's
planar state and the action taken there), every ``stride``-th control step of expert episodes. It
predicts the clean sequence (as Diffuser does on Maze2D) and is conditioned by *inpainting*: the
first state is overwritten with the robot's state and the last position with the goal at every
denoising step, in training (those entries carry no loss) and in sampling. The same start and
goal are also given as the denoiser's conditioning vector (``condition_vector``), which makes a
small CPU-trained model much more reliable; set it off for pure inpainting.

Guidance: ``sample_trajectories(..., guide=fn, guide_scale=s)`` moves each step's clean-sequence
estimate down the gradient of a differentiable cost ``fn(states (B, H, Ds+Da), unnormalized) ->
(B,)`` before the reverse update (cost guidance on the x0 estimate, in the spirit of Diffuser's
Sec. 3.3 value guidance; the denoiser is not differentiated, so it costs one cost gradient).

Weights are saved as safetensors beside a JSON config (no pickle): see :meth:`TrajectoryModel.save`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from policies.diffusion.denoisers import MlpDenoiser, UNet1DDenoiser
from policies.diffusion.schedule import add_noise, cosine_alphas_cumprod, reverse_step, sampling_steps
from policies.io import atomic_write_text, load_tensors_verified, save_tensors_atomic

START_DIMS = 4
"""Entries of the first step fixed by inpainting: the whole state ``(x, y, vx, vy)``."""
GOAL_DIMS = 2
"""Entries of the last step fixed by inpainting: the goal position ``(x, y)``."""


@dataclass(kw_only=True)
class TrajectoryModelConfig:
    """Shape and denoiser of a trajectory-diffusion model."""

    horizon: int = 64
    """H, steps per diffused sequence."""
    stride: int = 1
    """Control steps between consecutive sequence steps (a plan spans ``H * stride`` steps)."""
    state_dim: int = 4
    """Ds: ``(x, y, vx, vy)``."""
    action_dim: int = 2
    """Da: the action at each step (diffused too, for the open-loop comparison)."""
    denoiser: str = "mlp"
    """``"mlp"`` (fast on a CPU) or ``"unet"`` (1-D temporal U-Net)."""
    hidden_dims: tuple[int, ...] = (512, 512, 512)
    """MLP widths."""
    unet_dims: tuple[int, ...] = (32, 64, 128)
    """U-Net channel widths per level."""
    diffusion_steps: int = 100
    """Training timesteps of the cosine schedule."""
    condition_vector: bool = True
    """Also feed ``[start state, goal]`` to the denoiser as its conditioning vector."""

    def __post_init__(self) -> None:
        self.hidden_dims, self.unet_dims = tuple(self.hidden_dims), tuple(self.unet_dims)
        if self.horizon < 2 or self.stride < 1:
            raise ValueError(f"horizon={self.horizon} and stride={self.stride}; expected horizon >= 2 "
                             "and stride >= 1")
        if self.state_dim < START_DIMS or self.action_dim < 1:
            raise ValueError(f"state_dim={self.state_dim}, action_dim={self.action_dim}; expected "
                             f"state_dim >= {START_DIMS} (x, y, vx, vy) and action_dim >= 1")
        if self.denoiser not in ("mlp", "unet"):
            raise ValueError(f"denoiser {self.denoiser!r}; expected 'mlp' or 'unet'")
        if self.diffusion_steps < 1:
            raise ValueError(f"diffusion_steps={self.diffusion_steps}; expected >= 1")

    @property
    def dim(self) -> int:
        """Ds + Da."""
        return self.state_dim + self.action_dim


class TrajectoryModel(nn.Module):
    """Denoiser, per-dimension normalization to ``[-1, 1]`` and the noise schedule.

    Args:
        config: Shape and denoiser.
        low: ``(Ds + Da,)`` data minimum per dimension (normalization).
        high: ``(Ds + Da,)`` data maximum per dimension.
    """

    def __init__(self, config: TrajectoryModelConfig, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if low.shape != (d,) or high.shape != (d,):
            raise ValueError(f"normalization bounds have shapes {tuple(low.shape)}, {tuple(high.shape)}; "
                             f"expected ({d},)")
        self.register_buffer("low", low)
        # A constant dimension would divide by zero: give it unit range.
        self.register_buffer("span", torch.where(high - low > 1e-6, high - low, torch.ones_like(low)))
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(config.diffusion_steps).float())
        cond_dim = START_DIMS + GOAL_DIMS if config.condition_vector else 0
        if config.denoiser == "mlp":
            self.denoiser = MlpDenoiser(config.horizon, d, cond_dim, config.hidden_dims)
        else:
            self.denoiser = UNet1DDenoiser(config.horizon, d, cond_dim, config.unet_dims)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Data units -> ``[-1, 1]`` (last axis is the Ds + Da dimensions)."""
        return (x - self.low) / self.span * 2.0 - 1.0

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` -> data units."""
        return (x + 1.0) * 0.5 * self.span + self.low

    def inpaint(self, x: torch.Tensor, start: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Overwrite (in place) the first state and last position of normalized ``x`` [B, H, D]."""
        x[:, 0, :START_DIMS] = start
        x[:, -1, :GOAL_DIMS] = goal
        return x

    def condition(self, start: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The denoiser's conditioning vector [B, Dc] from normalized start [B, 4] and goal [B, 2]."""
        if not self.config.condition_vector:
            return start.new_zeros(start.shape[0], 0)
        return torch.cat([start, goal], dim=-1)

    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Clean-sequence regression loss on a normalized batch [B, H, D] (inpainted entries masked)."""
        b = x0.shape[0]
        start, goal = x0[:, 0, :START_DIMS], x0[:, -1, :GOAL_DIMS]
        t = torch.randint(0, self.config.diffusion_steps, (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = self.inpaint(add_noise(x0, noise, t, self.alphas_cumprod), start, goal)
        pred = self.denoiser(x_t, t, self.condition(start, goal))
        mask = torch.ones_like(x0[0])
        mask[0, :START_DIMS] = 0.0
        mask[-1, :GOAL_DIMS] = 0.0
        return (((pred - x0) ** 2) * mask).sum() / (mask.sum() * b)

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``model.json`` into ``folder``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sha = save_tensors_atomic(dict(self.state_dict()), folder / "model.safetensors")
        meta = {"format": "kinodiff.trajectory_diffusion", "version": 1,
                "config": asdict(self.config), "sha256": sha}
        atomic_write_text(folder / "model.json", json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrajectoryModel:
        """Load a model written by :meth:`save` (eval mode)."""
        folder = Path(folder)
        meta_path = folder / "model.json"
        if not meta_path.is_file():
            raise ValueError(f"trajectory model {str(folder)!r} has no model.json; expected a folder "
                             "written by TrajectoryModel.save (python -m agents.train.trajectory)")
        meta = json.loads(meta_path.read_text())
        config = TrajectoryModelConfig(**meta["config"])
        tensors = load_tensors_verified(folder / "model.safetensors", meta["sha256"],
                                        "trajectory model weights")
        model = cls(config, tensors["low"], tensors["low"] + tensors["span"])
        model.load_state_dict(tensors)
        return model.eval()


def sample_trajectories(
    model: TrajectoryModel,
    start: torch.Tensor,
    goal: torch.Tensor,
    *,
    samples: int = 1,
    steps: int = 20,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    guide: Callable[[torch.Tensor], torch.Tensor] | None = None,
    guide_scale: float = 0.0,
) -> torch.Tensor:
    """Diffuse ``samples`` sequences from ``start`` to ``goal`` by inpainting.

    Args:
        model: The trained model.
        start: ``(Ds,)`` or ``(4,)`` start state ``(x, y, vx, vy)`` in data units.
        goal: ``(2,)`` goal position in data units.
        samples: B sequences diffused in one batch.
        steps: DDIM/DDPM reverse steps (strided through the training timesteps).
        eta: 0 for DDIM, 1 for DDPM.
        generator: Seeded noise source.
        guide: Differentiable cost ``(B, H, D) data units -> (B,)`` to descend while denoising.
        guide_scale: Step along the cost gradient on the normalized x0 estimate, per denoising step.

    Returns:
        ``(B, H, Ds + Da)`` sequences in data units (first state and last position inpainted).
    """
    cfg = model.config
    if samples < 1:
        raise ValueError(f"samples={samples}; expected >= 1")
    if guide_scale < 0:
        raise ValueError(f"guide_scale={guide_scale}; expected >= 0")
    start = torch.as_tensor(start, dtype=torch.float32).flatten()[:START_DIMS]
    goal = torch.as_tensor(goal, dtype=torch.float32).flatten()
    if start.shape != (START_DIMS,) or goal.shape != (GOAL_DIMS,):
        raise ValueError(f"start has {start.numel()} values and goal {goal.numel()}; expected "
                         f"{START_DIMS} (x, y, vx, vy) and {GOAL_DIMS} (x, y)")
    s_n = model.normalize(_pad(start, cfg.dim))[:START_DIMS].expand(samples, -1)
    g_n = model.normalize(_pad(goal, cfg.dim))[:GOAL_DIMS].expand(samples, -1)
    cond = model.condition(s_n, g_n)
    x = torch.randn((samples, cfg.horizon, cfg.dim), generator=generator)
    model.inpaint(x, s_n, g_n)
    for step in sampling_steps(model.alphas_cumprod, min(steps, cfg.diffusion_steps), eta):
        t = torch.full((samples,), step.t, dtype=torch.long)
        with torch.no_grad():
            pred = model.denoiser(x, t, cond)
        if guide is not None and guide_scale > 0:
            with torch.enable_grad():
                p = pred.detach().requires_grad_(True)
                grad = torch.autograd.grad(guide(model.unnormalize(p)).sum(), p)[0]
            pred = pred - guide_scale * grad
        model.inpaint(pred, s_n, g_n)
        noise = torch.randn(x.shape, generator=generator) if step.sigma > 0 else None
        x, _ = reverse_step(x, pred, step, "sample", True, noise)
        model.inpaint(x, s_n, g_n)
    return model.unnormalize(x.detach())


def _pad(v: torch.Tensor, dim: int) -> torch.Tensor:
    """``v`` padded with zeros to ``dim`` entries (so it normalizes with the leading dimensions)."""
    return torch.cat([v, v.new_zeros(dim - v.numel())])

"""Train a trajectory-diffusion model (planners.trajectory_diffusion) from a Maze-v0 episode store.

Every window of ``horizon`` steps, ``stride`` control steps apart, starting at every step of every
episode becomes one training sequence of ``[x, y, vx, vy, ax, ay]``; windows running past an
episode's end repeat its last state with a zero action (the robot has arrived), as Diffuser pads.

    kinodiff collect --env kinodiff/Maze-v0 --expert scripted --episodes 300 \
        --env-kwargs layout=u --out runs/trajdiff/maze_u.zarr
    python -m agents.train.trajectory --data runs/trajdiff/maze_u.zarr --out runs/trajdiff/u
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agents.data.episode_store import EpisodeStore
from planners.trajectory_diffusion import TrajectoryModel, TrajectoryModelConfig


@dataclass(kw_only=True)
class TrajectoryTrainConfig:
    """Training run of a trajectory-diffusion model."""

    data: str
    """Episode store (zarr) with ``obs`` ``[x, y, vx, vy, ...]`` and ``action``."""
    out: str
    """Output folder (model.safetensors, model.json, train.json)."""
    horizon: int = 64
    """H, steps per sequence."""
    stride: int = 1
    """Control steps between sequence steps."""
    denoiser: str = "mlp"
    """``"mlp"`` or ``"unet"``."""
    hidden: int = 256
    """MLP width (three hidden layers) or the U-Net's first channel width (doubling per level)."""
    iterations: int = 4000
    """Optimizer steps."""
    batch_size: int = 128
    """Sequences per step."""
    lr: float = 1e-3
    """Adam learning rate (cosine-decayed to 0)."""
    seed: int = 0
    """Seed of initialization and batches."""
    threads: int = 1
    """torch CPU threads (the machine is shared)."""

    def __post_init__(self) -> None:
        if min(self.iterations, self.batch_size, self.lr, self.threads, self.hidden) <= 0:
            raise ValueError(f"iterations={self.iterations}, batch_size={self.batch_size}, lr={self.lr}, "
                             f"threads={self.threads}, hidden={self.hidden}; expected all > 0")
        TrajectoryModelConfig(horizon=self.horizon, stride=self.stride, denoiser=self.denoiser)


def episode_windows(obs: np.ndarray, action: np.ndarray, horizon: int, stride: int) -> np.ndarray:
    """All ``(L, horizon, 4 + Da)`` windows of one episode (one per start step), padded at the end.

    Args:
        obs: ``(L, >=4)`` observations, ``[x, y, vx, vy, ...]``.
        action: ``(L, Da)`` actions.
        horizon: Steps per window.
        stride: Control steps between window steps.
    """
    if len(obs) != len(action) or not len(obs):
        raise ValueError(f"obs has {len(obs)} steps and action {len(action)}; expected equal, > 0")
    steps = np.concatenate([obs[:, :4], action], axis=1).astype(np.float32)
    # Padding: the last state, at rest where the episode ended, with a zero action.
    pad = np.concatenate([obs[-1, :4], np.zeros(action.shape[1])]).astype(np.float32)
    steps = np.concatenate([steps, pad[None]], axis=0)
    idx = np.arange(len(obs))[:, None] + stride * np.arange(horizon)[None, :]
    return steps[np.minimum(idx, len(obs))]


def load_windows(data: str, horizon: int, stride: int) -> np.ndarray:
    """``(N, horizon, 4 + Da)`` windows of every episode of the store at ``data``."""
    store = EpisodeStore.open(data)
    if store.n_episodes == 0:
        raise ValueError(f"episode store {data!r} has no episodes")
    out = []
    for i in range(store.n_episodes):
        ep = store.episode(i)
        out.append(episode_windows(ep["obs"], ep["action"], horizon, stride))
    return np.concatenate(out, axis=0)


def train(config: TrajectoryTrainConfig, log_every: int = 500) -> dict:
    """Train, save the model into ``config.out`` and return the training summary."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    windows = torch.from_numpy(load_windows(config.data, config.horizon, config.stride))
    flat = windows.reshape(-1, windows.shape[-1])
    h = config.hidden
    mcfg = TrajectoryModelConfig(horizon=config.horizon, stride=config.stride, denoiser=config.denoiser,
                                 action_dim=windows.shape[-1] - 4, hidden_dims=(h, h, h),
                                 unet_dims=(h, 2 * h, 4 * h))
    model = TrajectoryModel(mcfg, flat.min(0).values, flat.max(0).values)
    data = model.normalize(windows)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.iterations)
    gen = torch.Generator().manual_seed(config.seed)
    t0, losses, log = time.perf_counter(), [], []
    for it in range(1, config.iterations + 1):
        batch = data[torch.randint(0, len(data), (config.batch_size,), generator=gen)]
        loss = model.loss(batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if it % log_every == 0 or it == config.iterations:
            entry = {"iteration": it, "loss": float(np.mean(losses[-log_every:])),
                     "seconds": time.perf_counter() - t0}
            log.append(entry)
            print(json.dumps(entry), flush=True)
    model.eval().save(config.out)
    summary = {"config": asdict(config), "windows": len(data), "log": log,
               "train_seconds": time.perf_counter() - t0}
    (Path(config.out) / "train.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command line: every config field as ``--field``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    defaults = TrajectoryTrainConfig(data="", out="")
    for name in ("horizon", "stride", "hidden", "iterations", "batch_size", "seed", "threads"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--denoiser", default=defaults.denoiser, choices=("mlp", "unet"))
    train(TrajectoryTrainConfig(**vars(p.parse_args(argv))))


if __name__ == "__main__":
    main()

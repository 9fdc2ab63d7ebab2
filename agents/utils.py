"""Seeding, devices, seeds per episode, and atomic file helpers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Re-exported: the seed functions live in a torch-free module for the deploy runtime.
from agents.seeds import episode_id, episode_seed  # noqa: F401


def seed_everything(seed: int) -> int:
    """Seed Python, numpy and torch; returns the seed. Envs are seeded only via ``reset(seed=)``."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; other names pass through."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def write_json_atomic(path: str | os.PathLike, doc: Any) -> Path:
    """Write JSON to a temp file, fsync, and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def versions() -> dict[str, str]:
    """Versions of the pinned stack, for provenance and benchmark records."""
    import importlib.metadata as md

    out = {}
    for name in ("kinodiff", "torch", "mujoco", "gymnasium", "stable-baselines3", "numpy", "zarr",
                 "ray"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out

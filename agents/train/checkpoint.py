"""Training checkpoints: the deployable (EMA) policy plus the full training state, no pickle.

A checkpoint is a folder ``checkpoints/step_XXXXXXX`` holding ``policy.*`` (EMA weights, loadable
by ``load_policy``) and ``train_state.*`` (raw weights, optimizer, scheduler, RNG). Each file is
written atomically and ``checkpoints/latest.json`` is renamed into place last, so the latest
checkpoint always loads, whatever moment a crash picks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from agents.utils import write_json_atomic
from policies import Policy, save_policy
from policies.io import save_tensors_atomic

LATEST = "latest.json"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        plain["state"][str(idx)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                plain["state"][str(idx)][name] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    folder: Path,
    step: int,
    model: Policy,
    ema_model: Policy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    extra: dict[str, Any],
    metadata: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``step`` and point ``latest.json`` at it; prune old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / f"step_{step:07d}"
    ckpt.mkdir(exist_ok=True)
    save_policy(ema_model, ckpt, metadata={**metadata, "step": step})
    optim_tensors, optim_plain = _flatten_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    digest = save_tensors_atomic(tensors, ckpt / "train_state.safetensors")
    write_json_atomic(ckpt / "train_state.json", {
        "step": step,
        "optimizer": optim_plain,
        "scheduler": scheduler.state_dict(),
        "sha256": digest,
        **extra,
    })
    write_json_atomic(folder / LATEST, {"step": step, "path": ckpt.name})
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def latest_checkpoint(folder: Path) -> Path | None:
    """The folder ``latest.json`` points at, or ``None`` when there is no checkpoint yet."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    return folder / json.loads(pointer.read_text())["path"]


def load_train_state(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON of a checkpoint's training state."""
    doc = json.loads((ckpt / "train_state.json").read_text())
    return load_file(str(ckpt / "train_state.safetensors")), doc


def restore(
    ckpt: Path,
    model: Policy,
    ema_model: Policy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Load a checkpoint into live objects; returns the JSON document (step, extra)."""
    from policies import load_policy

    tensors, doc = load_train_state(ckpt)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema_loaded, _ = load_policy(ckpt)
    ema_model.load_state_dict(ema_loaded.state_dict())
    optimizer.load_state_dict(_unflatten_optimizer(tensors, doc["optimizer"]))
    scheduler.load_state_dict(doc["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    return doc

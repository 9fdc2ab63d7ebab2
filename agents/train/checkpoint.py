"""Training checkpoints: the deployable (EMA) policy plus the full training state, no pickle.

A checkpoint is a folder ``checkpoints/step_XXXXXXX`` holding ``policy.*`` (EMA weights, loadable
by ``load_policy``) and ``train_state.*`` (raw weights, optimizer, scheduler, RNG). Each file is
written atomically and ``checkpoints/latest.json`` is renamed into place last, so the latest
checkpoint always loads, whatever moment a crash picks. ``latest.json`` also holds the sha256 of
every file of the checkpoint: a flipped byte anywhere in it is reported, naming the file, before
anything is parsed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from agents.utils import write_json_atomic
from policies import Policy, save_policy
from policies.io import load_tensors_verified, save_tensors_atomic

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
    files = {f.name: _sha256(f) for f in sorted(ckpt.iterdir()) if not f.name.endswith(".tmp")}
    write_json_atomic(folder / LATEST, {"step": step, "path": ckpt.name, "files": files})
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def latest_checkpoint(folder: Path) -> Path | None:
    """The folder ``latest.json`` points at, or ``None`` when there is no checkpoint yet.

    Raises:
        ValueError: The pointer is unreadable, or a file of the checkpoint is missing or does not
            match the sha256 recorded when it was written.
    """
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    try:
        doc = json.loads(pointer.read_text())
        ckpt = folder / str(doc["path"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint pointer {str(pointer)!r} is corrupt ({exc}); expected "
                         '{"step", "path", "files"}') from exc
    if ckpt.parent != folder:
        raise ValueError(f"checkpoint pointer {str(pointer)!r} names {doc['path']!r}; expected a "
                         "folder inside the checkpoints folder")
    for name, digest in (doc.get("files") or {}).items():  # runs written before 2026-12 have none
        path = ckpt / name
        if not path.is_file():
            raise ValueError(f"checkpoint file {str(path)!r} is missing; expected it beside {LATEST}")
        if (found := _sha256(path)) != digest:
            raise ValueError(f"checkpoint file {str(path)!r} has sha256 {found[:12]}...; expected "
                             f"{digest[:12]}... (corrupt or changed after it was written)")
    return ckpt


def load_train_state(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON of a checkpoint's training state (the tensors' sha256 checked first)."""
    doc = json.loads((ckpt / "train_state.json").read_text())
    return load_tensors_verified(ckpt / "train_state.safetensors", doc["sha256"], "training state"), doc


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

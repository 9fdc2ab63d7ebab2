"""Save and load policies as safetensors weights + a JSON config. Loading never unpickles."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from policies.base import Policy
from policies.registry import policy_class

WEIGHTS = "policy.safetensors"
CONFIG = "policy.json"
FORMAT = "kinodiff.policy"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync, then rename over it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """Write a safetensors file atomically; returns its sha256."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    digest = _sha256(tmp)
    os.replace(tmp, path)
    return digest


def load_tensors_verified(path: Path, sha256: str, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after its sha256 matched ``sha256``.

    Nothing is parsed before the digest matches, and the parser is safetensors' (a JSON header
    and raw bytes, no pickle), so a tampered or foreign file fails with one clear error.

    Args:
        path: The ``.safetensors`` file.
        sha256: The digest recorded when it was written.
        what: What it is, for the message (e.g. ``"policy weights"``).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} are missing")
    digest = _sha256(path)
    if digest != sha256:
        raise ValueError(f"{what} {str(path)!r} have sha256 {digest[:12]}...; expected "
                         f"{str(sha256)[:12]}... (corrupt or mismatched file)")
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(f"{what} {str(path)!r} are not a safetensors file ({exc})") from None


def save_policy(policy: Policy, folder: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``policy.safetensors`` and ``policy.json`` into ``folder``.

    The weights are written first; the JSON (holding their sha256) is renamed into place last, so
    a folder whose JSON loads always has matching weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = save_tensors_atomic(policy.state_dict(), folder / WEIGHTS)
    doc = {
        "format": FORMAT,
        "version": 1,
        "policy": policy.name,
        "config": dataclasses.asdict(policy.config),
        "weights_sha256": digest,
        "metadata": {**policy.extra_metadata(), **(metadata or {})},
    }
    atomic_write_text(folder / CONFIG, json.dumps(doc, indent=2))
    return folder


def read_policy_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a saved policy."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no saved policy at {str(folder)!r}; expected {CONFIG} there")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"policy config {str(path)!r} is not valid JSON: {exc}") from exc
    if doc.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} has format {doc.get('format')!r}; expected {FORMAT!r}")
    return doc


def load_policy(folder: str | os.PathLike) -> tuple[Policy, dict[str, Any]]:
    """Load a saved policy; checks the weights' sha256 before parsing them.

    Returns:
        (policy in eval mode, metadata dict).
    """
    folder = Path(folder)
    doc = read_policy_config(folder)
    tensors = load_tensors_verified(folder / WEIGHTS, doc["weights_sha256"], "policy weights")
    cls = policy_class(doc["policy"])
    policy = cls(cls.config_class(**doc["config"]))
    policy.load_state_dict(tensors)
    policy.eval()
    return policy, doc.get("metadata", {})

"""The JSON sidecar beside an exported ``.onnx`` policy: layout, rates, limits, version, sha256.

Standard library only, so both the exporter (torch) and the runtime (onnxruntime) share it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FORMAT = "kinodiff.onnx-policy"
VERSION = 1
REQUIRED = ("onnx_file", "onnx_sha256", "n_obs_steps", "horizon", "n_action_steps", "control_hz",
            "observation", "action", "inputs", "outputs")


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``policy.onnx`` -> ``policy.onnx.json``."""
    path = Path(onnx_path)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_sidecar(onnx_path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Load and check the sidecar of ``onnx_path``.

    Args:
        onnx_path: The exported ``.onnx`` file.
        verify: Check the ``.onnx`` file's sha256 against the sidecar.

    Raises:
        FileNotFoundError: The model or its sidecar is missing.
        ValueError: The sidecar is malformed, of another format, or the hash differs.
    """
    onnx_path = Path(onnx_path)
    side = sidecar_path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no exported policy at {str(onnx_path)!r}; expected a .onnx file "
                                "written by `kinodiff export`")
    if not side.is_file():
        raise FileNotFoundError(f"sidecar {str(side)!r} is missing; expected it beside the .onnx file")
    try:
        doc = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"sidecar {str(side)!r} is not valid JSON: {exc}") from exc
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"sidecar {str(side)!r} has format {doc.get('format')!r} version "
                         f"{doc.get('version')!r}; expected {FORMAT!r} version {VERSION}")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"sidecar {str(side)!r} lacks fields {missing}")
    if verify:
        digest = file_sha256(onnx_path)
        if digest != doc["onnx_sha256"]:
            raise ValueError(f"{str(onnx_path)!r} has sha256 {digest[:12]}...; the sidecar expects "
                             f"{doc['onnx_sha256'][:12]}... (corrupt or mismatched file)")
    return doc

"""Save and load an uncertainty estimator and its calibration beside a saved policy (no pickle).

Files in the policy folder: ``uncertainty.safetensors`` (heads), ``uncertainty.json`` (head config,
the weights' sha256 and, once calibrated, the calibration).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from policies.base import Policy
from policies.io import atomic_write_text, load_tensors_verified, save_tensors_atomic
from policies.uncertainty.conformal import Calibration
from policies.uncertainty.estimator import UncertaintyConfig, UncertaintyEstimator

WEIGHTS = "uncertainty.safetensors"
CONFIG = "uncertainty.json"


def save_estimator(estimator: UncertaintyEstimator, folder: str | os.PathLike,
                   calibration: Calibration | None = None,
                   metadata: dict[str, Any] | None = None) -> Path:
    """Write the heads and the JSON (calibration included when given) into the policy folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = save_tensors_atomic(estimator.state_dict(), folder / WEIGHTS)
    doc = {"format": "kinodiff.uncertainty", "version": 1, "config": estimator.config_dict(),
           "weights_sha256": digest,
           "calibration": calibration.to_dict() if calibration is not None else None,
           "metadata": metadata or {}}
    atomic_write_text(folder / CONFIG, json.dumps(doc, indent=2))
    return folder / CONFIG


def save_calibration(folder: str | os.PathLike, calibration: Calibration,
                     metadata: dict[str, Any] | None = None) -> Path:
    """Store (or replace) the calibration in an existing ``uncertainty.json``."""
    path = Path(folder) / CONFIG
    doc = read_estimator_config(folder)
    doc["calibration"] = calibration.to_dict()
    doc["metadata"] = {**doc.get("metadata", {}), **(metadata or {})}
    atomic_write_text(path, json.dumps(doc, indent=2))
    return path


def read_estimator_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a saved estimator."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no uncertainty estimator at {str(folder)!r}; expected {CONFIG} "
                                "there (run `kinodiff calibrate` first)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if doc.get("format") != "kinodiff.uncertainty":
        raise ValueError(f"{str(path)!r} has format {doc.get('format')!r}; "
                         "expected 'kinodiff.uncertainty'")
    return doc


def load_estimator(folder: str | os.PathLike, policy: Policy
                   ) -> tuple[UncertaintyEstimator, Calibration | None]:
    """Load the heads for ``policy`` (checking their sha256) and the calibration, if any."""
    folder = Path(folder)
    doc = read_estimator_config(folder)
    tensors = load_tensors_verified(folder / WEIGHTS, doc["weights_sha256"], "uncertainty weights")
    estimator = UncertaintyEstimator(policy, UncertaintyConfig(**doc["config"]))
    estimator.load_state_dict(tensors)
    estimator.eval()
    cal = doc.get("calibration")
    return estimator, Calibration.from_dict(cal) if cal else None

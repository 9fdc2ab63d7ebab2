"""Load stable-baselines3 zips without unpickling anything.

An SB3 zip stores its weights as ``.pth`` files (SB3 reads them with torch in weights-only mode)
and its settings as a JSON ``data`` entry in which every value JSON cannot hold (the policy class,
the spaces, the schedules) is a base64 cloudpickle that ``BaseAlgorithm.load`` unpickles: whoever
wrote the zip chooses the code that runs. Here every such entry is rebuilt from the plain-text facts
SB3 writes beside it (a class's module and name, a Box's shape and bounds, a constant schedule's
value), importing classes only from allow-listed packages, and handed to SB3 as ``custom_objects``,
which SB3 uses instead of unpickling. An entry that cannot be rebuilt is refused, naming it.
"""

from __future__ import annotations

import importlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule

# Classes an SB3 zip may name, by module prefix: SB3's own and kinodiff's SB3 policies.
TRUSTED_MODULES = ("stable_baselines3.", "agents.train.")
_SCHEDULES = ("lr_schedule", "clip_range", "clip_range_vf", "exploration_schedule")
# Rollout state of the last ``learn`` call; SB3 rebuilds it when learning starts again.
_RUNTIME_STATE = ("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer",
                  "ep_success_buffer")


def _refuse(path: Path, key: str, why: str) -> ValueError:
    return ValueError(f"SB3 model {str(path)!r}: entry {key!r} is stored as pickled code and {why}; "
                      "kinodiff never unpickles model files (expected an SB3 zip written by kinodiff "
                      "or one whose entries are plain SB3 classes, Box/Discrete spaces and constant "
                      "schedules)")


def _class(path: Path, key: str, entry: dict[str, Any]) -> type:
    module = str(entry.get("__module__", ""))
    # The class's name, from the repr of any method it defines itself (``__init__`` or another).
    match = next((m for v in entry.values() if (m := re.match(r"<function (\w+)\.\w+ at ", str(v)))), None)
    if not module.startswith(TRUSTED_MODULES) or match is None:
        raise _refuse(path, key, f"names class module {module!r}, outside {TRUSTED_MODULES}")
    cls = getattr(importlib.import_module(module), match.group(1), None)
    if not isinstance(cls, type):
        raise _refuse(path, key, f"names {module}.{match.group(1)}, which does not exist")
    return cls


def _array(text: str, shape: list[int], dtype: str) -> np.ndarray:
    values = text.replace("[", " ").replace("]", " ").split()
    return np.array([float(v) for v in values], dtype=dtype).reshape(shape)


def _space(path: Path, key: str, entry: dict[str, Any]) -> gym.Space:
    kind = str(entry.get(":type:", ""))
    try:
        if kind.endswith("gymnasium.spaces.box.Box'>"):
            shape, dtype = list(entry["_shape"]), str(entry["dtype"])
            if "..." in entry["low"] or "..." in entry["high"]:  # numpy elided a long array
                raise ValueError("bounds elided")
            return gym.spaces.Box(_array(entry["low"], shape, dtype), _array(entry["high"], shape, dtype),
                                  dtype=dtype)
        if kind.endswith("gymnasium.spaces.discrete.Discrete'>"):
            return gym.spaces.Discrete(int(entry["n"]), start=int(entry.get("start", 0)))
    except (KeyError, ValueError, TypeError) as exc:
        raise _refuse(path, key, f"its text form cannot be read back ({exc}); pass the env") from exc
    raise _refuse(path, key, f"is a {kind}, not a Box or Discrete; pass the env")


def _schedule(path: Path, key: str, entry: dict[str, Any], data: dict[str, Any]) -> FloatSchedule:
    match = re.fullmatch(r"ConstantSchedule\(val=([-+0-9.eE]+)\)", str(entry.get("value_schedule", "")))
    if match:
        return FloatSchedule(ConstantSchedule(float(match.group(1))))
    if key == "lr_schedule" and isinstance(data.get("learning_rate"), (int, float)):
        return FloatSchedule(ConstantSchedule(float(data["learning_rate"])))
    raise _refuse(path, key, "is not a constant schedule")


def safe_custom_objects(path: str | Path, env: Any = None) -> dict[str, Any]:
    """``custom_objects`` that replace every pickled entry of the zip at ``path``.

    Args:
        path: An SB3 ``.zip``.
        env: The env the model will act in; its spaces replace the stored ones (SB3 then checks
            that they match the model's).

    Raises:
        ValueError: An entry cannot be rebuilt without unpickling, or the file is not an SB3 zip.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"SB3 model {str(path)!r} is not an SB3 zip with a JSON 'data' entry "
                         f"({exc})") from exc
    custom: dict[str, Any] = {}
    for key, entry in data.items():
        if not (isinstance(entry, dict) and ":serialized:" in entry):
            continue
        if key in ("observation_space", "action_space"):
            custom[key] = getattr(env, key) if env is not None else _space(path, key, entry)
        elif key in ("policy_class", "rollout_buffer_class", "replay_buffer_class"):
            custom[key] = _class(path, key, entry)
        elif key in _RUNTIME_STATE:
            custom[key] = None
        elif key in _SCHEDULES:
            custom[key] = _schedule(path, key, entry, data)
        elif key == "train_freq" and str(entry.get(":type:", "")).endswith("TrainFreq'>"):
            # Only the off-policy training loop reads it; a loaded model acts, so one step is used.
            custom[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
        else:
            raise _refuse(path, key, "has no plain-text form kinodiff can rebuild")
    return custom


def load_sb3(algo_class: type, path: str | Path, env: Any = None, device: str = "cpu") -> Any:
    """``algo_class.load(path)`` with every pickled entry replaced (see ``safe_custom_objects``)."""
    return algo_class.load(str(path), env=env, device=device,
                           custom_objects=safe_custom_objects(path, env))

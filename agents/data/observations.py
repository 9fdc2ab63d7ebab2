"""How observations are laid out in the episode store and handed to policies.

A ``Box`` observation is one store array, ``obs`` ``(T, Do)`` float32. A ``Dict`` observation (e.g.
PushTImage-v0's ``image`` + ``agent_pos``) is one array per key, ``obs.<key>``, in the key's own dtype:
images stay uint8, low-dim features become float32. Policies see the first as a tensor and the
second as a dict keyed like the env's observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

OBS = "obs"
PREFIX = OBS + "."
CHUNK_BYTES = 4 << 20
"""Target bytes of one time chunk of the widest array (images: ~150 steps of 96x96x3)."""


def _dtype(space: gym.spaces.Box) -> str:
    return "uint8" if space.dtype == np.uint8 else "float32"


def obs_specs(space: gym.Space) -> dict[str, tuple[tuple[int, ...], str]]:
    """Store arrays ``key -> (per-step shape, dtype)`` of an observation space.

    Raises:
        ValueError: The space is neither a Box nor a Dict of Boxes.
    """
    if isinstance(space, gym.spaces.Box):
        return {OBS: (tuple(space.shape), "float32")}
    if isinstance(space, gym.spaces.Dict) and all(
            isinstance(s, gym.spaces.Box) for s in space.spaces.values()):
        return {PREFIX + k: (tuple(s.shape), _dtype(s)) for k, s in space.spaces.items()}
    raise ValueError(f"observation space {space} is not supported; expected a Box or a Dict of Boxes")


def chunk_steps_for(specs: Mapping[str, tuple[tuple[int, ...], str]], limit: int = 4096) -> int:
    """Steps per store chunk: ``limit``, fewer when one step of the widest array is large (images)."""
    widest = max(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in specs.values())
    return int(np.clip(CHUNK_BYTES // max(widest, 1), 16, limit))


def stack_observations(obs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Time-major store arrays of one episode's observations (arrays or dicts of arrays)."""
    if obs and isinstance(obs[0], Mapping):
        out = {}
        for key in obs[0]:
            values = np.asarray([o[key] for o in obs])
            out[PREFIX + key] = values if values.dtype == np.uint8 else values.astype(np.float32)
        return out
    return {OBS: np.asarray(obs, dtype=np.float32)}


def obs_keys(store_keys: Sequence[str]) -> list[str]:
    """The store arrays that hold observations: ``["obs"]`` or every ``obs.<key>``."""
    if OBS in store_keys:
        return [OBS]
    keys = sorted(k for k in store_keys if k.startswith(PREFIX))
    if not keys:
        raise ValueError(f"dataset has arrays {sorted(store_keys)}; expected 'obs' or 'obs.<key>' ones")
    return keys


def policy_obs(arrays: Mapping[str, Any]) -> Any:
    """Store arrays -> what a policy takes: the ``obs`` array, or ``{key: obs.<key> array}``."""
    if OBS in arrays:
        return arrays[OBS]
    return {k[len(PREFIX):]: v for k, v in arrays.items() if k.startswith(PREFIX)}


def obs_shapes(store_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Per-step shapes of a Dict observation's keys, from ``obs.<key>`` store shapes."""
    return {k[len(PREFIX):]: tuple(v) for k, v in store_shapes.items() if k.startswith(PREFIX)}

"""Episode seeds and ids as fixed functions of (run seed, index): numpy and hashlib only.

Kept apart from ``agents.utils`` (which imports torch) so a deployed controller can derive the same
evaluation seeds without the training stack.
"""

from __future__ import annotations

import hashlib

import numpy as np


def episode_seed(run_seed: int, index: int) -> int:
    """The env reset seed of episode ``index`` of a run: a fixed function of both."""
    return int(np.random.SeedSequence([int(run_seed), int(index)]).generate_state(1)[0])


def episode_id(run_seed: int, index: int) -> int:
    """A deterministic 63-bit id of episode ``index`` of a run, so retries never duplicate."""
    digest = hashlib.sha256(f"{int(run_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1

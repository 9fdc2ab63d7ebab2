"""The expert protocol the collector drives."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Expert(Protocol):
    """An expert chooses actions from observations.

    ``reset(episode_index, rng)`` starts an episode; ``episode_index`` lets multi-modal experts
    balance their modes exactly over a collection. ``mode`` names the mode it chose (or ``None``).
    """

    name: str

    def reset(self, episode_index: int, rng: np.random.Generator) -> None:
        """Start a new episode."""
        ...

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Return the action for one observation."""
        ...

    @property
    def mode(self) -> str | None:
        """The mode (e.g. side) chosen for the current episode."""
        ...

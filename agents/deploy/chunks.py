"""Compute the next action chunk beside the control loop, in a background thread.

onnxruntime releases the GIL while it runs the graph, so the loop thread keeps its ticks while a
chunk is computed. One request is in flight at a time; a request is tagged by the caller, and its
result comes back with the tag, so a chunk computed for an episode that has since ended is
recognised and dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ChunkResult:
    """A finished request."""

    tag: Any
    """The caller's tag of the request."""
    chunk: np.ndarray | None
    """[H, Da] actions, or ``None`` when the policy raised."""
    error: str | None
    """The policy's error message, if it raised."""
    seconds: float
    """Time from submit to result."""


class ChunkWorker:
    """A thread running ``predict(history) -> chunk`` on request.

    Args:
        predict: [To, Do] observation history -> [H, Da] chunk.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self._predict = predict
        self._cond = threading.Condition()
        self._request: tuple[np.ndarray, Any, float] | None = None
        self._result: ChunkResult | None = None
        self._busy = False
        self._closed = False
        self.submitted_at = 0.0
        """perf_counter time of the last submit."""
        # A daemon: a frozen policy must never keep the process alive.
        self._thread = threading.Thread(target=self._run, name="chunk-worker", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is in flight."""
        return self._busy

    def reset(self, seed: int | None) -> None:
        """Nothing to do: the policy itself is reset by the loop, in the same process."""

    def submit(self, history: np.ndarray, tag: Any) -> None:
        """Start computing a chunk from ``history`` (copied)."""
        with self._cond:
            if self._busy:
                raise RuntimeError("a chunk request is already in flight; wait for its result")
            self._busy = True
            self.submitted_at = time.perf_counter()
            self._request = (np.array(history, copy=True), tag, self.submitted_at)
            self._cond.notify()

    def poll(self) -> ChunkResult | None:
        """The result of the finished request, once; ``None`` while none is ready."""
        if self._result is None:
            return None
        with self._cond:
            result, self._result = self._result, None
            return result

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                history, tag, t0 = self._request
                self._request = None
            try:
                chunk, error = np.asarray(self._predict(history)), None
            except Exception as exc:  # noqa: BLE001 - any policy failure becomes a hold, not a crash
                chunk, error = None, f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._result = ChunkResult(tag, chunk, error, time.perf_counter() - t0)
                self._busy = False

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread (a frozen policy call is abandoned, not waited for)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

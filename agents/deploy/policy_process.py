"""The policy in its own process: chunks computed beside the loop without sharing its GIL.

A thread worker shares the interpreter lock with the control loop: when the machine is loaded and
the OS preempts the worker while it holds the lock, the loop cannot run until the worker is
scheduled again, whatever the loop's priority. A separate process removes that coupling, and it can
be frozen (SIGSTOP) or killed on its own, as a real policy computer can fail.

Run as ``python -m agents.deploy.policy_process --policy FILE``; ``ProcessChunkWorker`` does this
and speaks a binary protocol on the child's stdin/stdout (no pickle). Requests:
``struct "<BIq"`` (op, n, arg) followed by ``n`` float32 values; op 1 = predict a chunk from the
[To, Do] history (arg unused), op 2 = reseed the noise generator with ``arg`` (n = 0). Replies to
op 1: ``struct "<BI"`` (status, n) then ``n`` float32 values of the [H, Da] chunk (status 0) or
``n`` bytes of a UTF-8 error message (status 1). Op 2 has no reply. Once the model is loaded the
child writes one reply with status 2 (ready) and n = 0.
"""

from __future__ import annotations

import argparse
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from agents.deploy.chunks import ChunkResult

REQUEST = struct.Struct("<BIq")
REPLY = struct.Struct("<BI")
PREDICT, RESEED = 1, 2
READY = 2  # reply status sent once, when the model is loaded


class ProcessChunkWorker:
    """Same interface as ``chunks.ChunkWorker``, computing in a child process.

    Args:
        policy_path: Exported ``.onnx`` file.
        chunk_shape: (H, Da) of the chunks.
        threads: onnxruntime threads of the child.
        seed: Seed of the child's noise generator.
        realtime_priority: SCHED_FIFO priority of the child (0: normal scheduling).
        start_timeout: Seconds to wait for the child to load the model.
    """

    def __init__(self, policy_path: str, chunk_shape: tuple[int, int], threads: int = 1, seed: int = 0,
                 realtime_priority: int = 0, start_timeout: float = 60.0) -> None:
        self.chunk_shape = chunk_shape
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agents.deploy.policy_process", "--policy", str(policy_path),
             "--threads", str(threads), "--seed", str(seed), "--realtime-priority", str(realtime_priority)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        self._out = self.process.stdout.fileno()
        self._wait_ready(start_timeout)
        os.set_blocking(self._out, False)  # the loop polls; it never waits on the policy
        self._buf = bytearray()
        self._busy = False
        self._tag: Any = None
        self.submitted_at = 0.0

    def _wait_ready(self, timeout: float) -> None:
        # The child announces itself once the model is loaded, so start-up is not an overrun.
        ready, _, _ = select.select([self._out], [], [], timeout)
        header = os.read(self._out, REPLY.size) if ready else b""
        if len(header) != REPLY.size or REPLY.unpack(header)[0] != READY:
            self.process.kill()
            self.process.wait()
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace").strip()
            last = err.splitlines()[-1] if err else "no output"
            raise ValueError(f"policy process failed to start: {last}")

    @property
    def pid(self) -> int:
        """Process id of the policy process."""
        return self.process.pid

    @property
    def busy(self) -> bool:
        """A request is in flight."""
        return self._busy

    def reset(self, seed: int | None) -> None:
        """Reseed the child's noise generator (``None``: keep it)."""
        if seed is not None:
            self.process.stdin.write(REQUEST.pack(RESEED, 0, int(seed)))

    def submit(self, history: np.ndarray, tag: Any) -> None:
        """Send ``history`` [To, Do] to the policy process."""
        if self._busy:
            raise RuntimeError("a chunk request is already in flight; wait for its result")
        data = np.ascontiguousarray(history, dtype=np.float32)
        self._busy, self._tag, self.submitted_at = True, tag, time.perf_counter()
        self.process.stdin.write(REQUEST.pack(PREDICT, data.size, 0) + data.tobytes())

    def poll(self) -> ChunkResult | None:
        """The finished chunk, once; ``None`` while none is ready (never blocks)."""
        if not self._busy:
            return None
        try:
            while data := os.read(self._out, 65536):
                self._buf += data
        except BlockingIOError:
            pass
        if len(self._buf) < REPLY.size:
            return None
        status, n = REPLY.unpack_from(self._buf)
        size = REPLY.size + (n * 4 if status == 0 else n)
        if len(self._buf) < size:
            return None
        body = bytes(self._buf[REPLY.size:size])
        del self._buf[:size]
        self._busy = False
        seconds = time.perf_counter() - self.submitted_at
        if status == 0:
            return ChunkResult(self._tag, np.frombuffer(body, dtype=np.float32).reshape(self.chunk_shape),
                               None, seconds)
        return ChunkResult(self._tag, None, body.decode(errors="replace"), seconds)

    def close(self, timeout: float = 2.0) -> None:
        """End the policy process (a stopped one is continued first so it can exit)."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._stderr.close()


def _read_exact(stream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            return None
        data += more
    return data


def main(argv: list[str] | None = None) -> int:
    """Serve chunk requests on stdin/stdout until stdin closes."""
    from agents.deploy.runtime import OnnxPolicy

    parser = argparse.ArgumentParser(description="policy process of the deploy loop")
    parser.add_argument("--policy", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realtime-priority", type=int, default=0)
    args = parser.parse_args(argv)
    if args.realtime_priority and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime_priority))
        except OSError:
            pass  # normal scheduling: slower chunks under load, never a wrong one
    policy = OnnxPolicy(args.policy, threads=args.threads, seed=args.seed)
    shape = (policy.n_obs_steps, policy.obs_dim)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(REPLY.pack(READY, 0))
    stdout.flush()
    while (header := _read_exact(stdin, REQUEST.size)) is not None:
        op, n, arg = REQUEST.unpack(header)
        payload = _read_exact(stdin, 4 * n) if n else b""
        if payload is None:
            break
        if op == RESEED:
            policy.reset(arg)
            continue
        try:
            chunk = policy.predict_chunk(np.frombuffer(payload, dtype=np.float32).reshape(shape))
            body, status = np.ascontiguousarray(chunk, dtype=np.float32).tobytes(), 0
            n_out = chunk.size
        except ValueError as exc:
            body, status = str(exc).encode(), 1
            n_out = len(body)
        stdout.write(REPLY.pack(status, n_out) + body)
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

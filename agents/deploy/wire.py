"""The controller <-> robot message format: length-prefixed JSON frames over TCP. No pickle.

A frame is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes of UTF-8 JSON holding
one object with an ``"op"`` field. Numbers are JSON numbers (Python writes float64 exactly as its
shortest round-trip repr); a non-finite observation value travels as ``NaN``/``Infinity``, which
Python's json reads back. Frames above ``MAX_FRAME`` bytes are refused from their header, before
their body is read; a frame that is not a JSON object with a string ``op`` is refused too, and the
receiver closes the connection (a stream that held one bad frame cannot be trusted to be in step).

Controller -> robot (``id`` is echoed in the reply, so a late reply to a timed-out request is
recognised and dropped)::

    {"op": "observe", "id": 7}                  -> observation
    {"op": "reset", "id": 8, "seed": 123}       -> observation of the new episode
    {"op": "command", "action": [0.1, -0.2]}    the robot executes it for one period, then pushes
                                                its new observation with "id": null
    {"op": "hold"}                              no reply; the robot holds still until a command
    {"op": "stop"}                              no reply; e-stop: the robot stops until a command
    {"op": "stats", "id": 9}                    -> stats
    {"op": "close"}                             the robot process exits

Robot -> controller::

    {"op": "observation", "id": 7, "seq": 41, "stamp": 12.5, "obs": [...], "reward": 0.0,
     "done": false, "success": false, "held": false, "stopped": false}
    {"op": "stats", "id": 9, "commands": 40, "holds": 1, "stops": 0, "rejected": 0, ...}
    {"op": "error", "id": 7, "message": "..."}
"""

from __future__ import annotations

import json
import select
import socket
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 20


def encode(message: dict[str, Any]) -> bytes:
    """One frame: length header + compact JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"message of {len(body)} bytes exceeds MAX_FRAME={MAX_FRAME}")
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Reads whole frames from a socket, keeping partial data between calls.

    Args:
        sock: A connected stream socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def _frame(self) -> dict[str, Any] | None:
        if len(self._buf) < HEADER.size:
            return None
        (n,) = HEADER.unpack_from(self._buf)
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes exceeds MAX_FRAME={MAX_FRAME}; the stream is corrupt")
        if len(self._buf) < HEADER.size + n:
            return None
        body = bytes(self._buf[HEADER.size:HEADER.size + n])
        del self._buf[:HEADER.size + n]
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested without end
            raise ValueError(f"frame {body[:80]!r} is not JSON ({type(exc).__name__})") from None
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise ValueError(f"frame {body[:80]!r} is not a JSON object with a string 'op'")
        return message

    def read(self, timeout: float | None) -> dict[str, Any] | None:
        """The next frame, or ``None`` if none completes within ``timeout`` seconds.

        Raises:
            ConnectionError: The peer closed the connection.
        """
        frame = self._frame()
        if frame is not None:
            return frame
        if timeout is not None and timeout <= 0:
            return self._read_nowait()
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the peer closed the connection")
                self._buf += data
                frame = self._frame()
                if frame is not None:
                    return frame
        except (TimeoutError, BlockingIOError):
            return None


    def _read_nowait(self) -> dict[str, Any] | None:
        # select with a zero timeout, not MSG_DONTWAIT: on a socket with a timeout Python waits for
        # readability (up to that timeout) after an EAGAIN, so the flag alone would block.
        while select.select([self.sock], [], [], 0.0)[0]:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the peer closed the connection")
            self._buf += data
            frame = self._frame()
            if frame is not None:
                return frame
        return None


def connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection with Nagle's algorithm off (small frames go out at once)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock

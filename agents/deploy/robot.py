"""The robot interface the control loop drives, and a simulated robot behind a loopback socket."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agents.deploy.wire import FrameReader, connect, encode


@dataclass
class Observation:
    """What a robot reports each control period."""

    values: np.ndarray
    """(Do,) observation features."""
    seq: int
    """Increments whenever the robot's state advances (a stalled robot repeats it)."""
    stamp: float
    """The robot's monotonic clock when the observation was taken, seconds."""
    reward: float = 0.0
    """Task reward of the last period (simulated robots only)."""
    done: bool = False
    """The episode has ended (simulated robots only)."""
    success: bool = False
    """The task reports success (simulated robots only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the robot reported."""


class Robot(Protocol):
    """What the control loop needs from a robot, real or simulated."""

    def read_observation(self, timeout: float) -> Observation | None:
        """The latest observation, or ``None`` if none arrives within ``timeout`` seconds."""
        ...

    def send_command(self, command: np.ndarray) -> None:
        """Execute ``command`` (Da,) for one control period. Must not block for long."""
        ...

    def hold(self) -> None:
        """Hold still (brakes / position hold) until the next command."""
        ...

    def stop(self) -> None:
        """Emergency stop."""
        ...


class EpisodicRobot(Robot, Protocol):
    """A robot whose task can be restarted from a seed (simulated robots)."""

    def reset(self, seed: int) -> Observation:
        """Start an episode; returns its first observation."""
        ...


class SimRobot:
    """Client of ``agents.deploy.sim_server`` running the task in a separate process.

    Args:
        env_id: Task id.
        env_kwargs: Task keyword arguments.
        start_timeout: Seconds to wait for the robot process to come up.
        realtime_priority: SCHED_FIFO priority of the robot process (0: normal scheduling), standing
            in for the real-time controller a real robot has on its own hardware.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None,
                 start_timeout: float = 60.0, realtime_priority: int = 0) -> None:
        self.env_id = env_id
        # stderr goes to a file: a pipe nobody reads could fill up and stall the robot process.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agents.deploy.sim_server", "--env", env_id,
             "--env-kwargs", json.dumps(env_kwargs or {}), "--realtime-priority", str(realtime_priority)],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        line = self._first_line(start_timeout)
        if not line.startswith("PORT "):
            self.process.kill()
            self.process.wait()
            self._stderr.seek(0)
            err = self._stderr.read().strip()
            last = err.splitlines()[-1] if err else line or "no output"
            raise ValueError(f"simulated robot for {env_id!r} failed to start: {last}")
        self.sock = connect("127.0.0.1", int(line.split()[1]))
        self._reader = FrameReader(self.sock)
        self._send_lock = threading.Lock()  # e-stop may come from another thread
        self._next_id = 0
        self._last_seq: int | None = None

    def _first_line(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0].strip() if box else ""

    def _send(self, message: dict[str, Any]) -> None:
        frame = encode(message)
        with self._send_lock:
            self.sock.sendall(frame)

    def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        self._next_id += 1
        rid = self._next_id
        self._send({**message, "id": rid})
        deadline = time.perf_counter() + timeout
        while True:
            reply = self._reader.read(max(deadline - time.perf_counter(), 0.0))
            if reply is None:
                return None
            if reply.get("id") == rid:  # replies to timed-out requests are dropped here
                if reply["op"] == "error":
                    raise ValueError(f"robot refused {message['op']!r}: {reply['message']}")
                return reply

    @staticmethod
    def _observation(reply: dict[str, Any]) -> Observation:
        extra = {k: reply[k] for k in ("held", "stopped") if k in reply}
        return Observation(values=np.asarray(reply["obs"], dtype=np.float64), seq=int(reply["seq"]),
                           stamp=float(reply["stamp"]), reward=float(reply["reward"]),
                           done=bool(reply["done"]), success=bool(reply["success"]), extra=extra)

    def read_observation(self, timeout: float) -> Observation | None:
        """The newest observation the robot pushed since the last read, else ask for one.

        Returns ``None`` when the robot does not answer within ``timeout`` seconds.
        """
        latest = None
        while (frame := self._reader.read(0.0)) is not None:  # drain without waiting
            # Pushes carry no id; a frame with one answers a request that already timed out.
            if frame["op"] == "observation" and frame.get("id") is None:
                latest = frame
        if latest is None or latest["seq"] == self._last_seq:
            latest = self._request({"op": "observe"}, timeout)
            if latest is None:
                return None
        self._last_seq = latest["seq"]
        return self._observation(latest)

    def send_command(self, command: np.ndarray) -> None:
        """Send one command (float64 values as JSON numbers)."""
        self._send({"op": "command", "action": np.asarray(command, dtype=np.float64).tolist()})

    def hold(self) -> None:
        """Ask the robot to hold still."""
        self._send({"op": "hold"})

    def stop(self) -> None:
        """Emergency stop."""
        self._send({"op": "stop"})

    def reset(self, seed: int, timeout: float = 10.0) -> Observation:
        """Start an episode from ``seed``."""
        reply = self._request({"op": "reset", "seed": int(seed)}, timeout)
        if reply is None:
            raise TimeoutError(f"simulated robot did not reset within {timeout} s")
        self._last_seq = reply["seq"]  # what reset returned is not news to the next read
        return self._observation(reply)

    def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """The robot's own counters: commands executed, holds, stops, rejected commands."""
        reply = self._request({"op": "stats"}, timeout)
        if reply is None:
            raise TimeoutError(f"simulated robot did not answer within {timeout} s")
        return {k: v for k, v in reply.items() if k not in ("op", "id")}

    def close(self) -> None:
        """Ask the robot process to exit and wait for it."""
        try:
            self._send({"op": "close"})
            self.sock.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SimRobot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sim(target: str, **options: Any) -> SimRobot:
    if not target:
        raise ValueError("robot URI 'sim://' names no task; expected sim://ENV_ID")
    return SimRobot(target, **options)


ROBOTS = {"sim": _sim}


def make_robot(uri: str, **options: Any) -> Any:
    """A robot from a URI ``SCHEME://TARGET`` (``sim://kinodiff/PointObstacle-v0``) and options."""
    scheme, sep, target = uri.partition("://")
    if not sep or scheme not in ROBOTS:
        raise ValueError(f"robot URI {uri!r} is not supported; expected one of "
                         f"{[s + '://...' for s in ROBOTS]}")
    return ROBOTS[scheme](target, **options)

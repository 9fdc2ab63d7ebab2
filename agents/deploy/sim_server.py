"""A simulated robot: the MuJoCo task in its own process, served over loopback TCP.

Run as ``python -m agents.deploy.sim_server --env ID`` (``SimRobot`` does this): it binds
127.0.0.1 on a free port, prints ``PORT <n>`` on stdout, and serves one controller with the frames
of ``agents.deploy.wire``.

The robot advances in lockstep with its controller: each command is executed for one control period
(one ``env.step``), so the simulated robot sees exactly the policy's control rate whatever the
wall-clock rate of the loop; after each command the new observation is pushed to the controller
unasked (``id`` null). ``hold`` and ``stop`` freeze it in place (the physics does not advance,
as brakes would) until the next command. Commands that are malformed or non-finite are rejected and
counted, never applied: the robot defends itself even from a broken controller.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

import numpy as np

from agents.deploy.wire import FrameReader, encode
from envs import make_env


class SimRobotServer:
    """One env behind the wire protocol.

    Args:
        env_id: Task id.
        env_kwargs: Task keyword arguments.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
        self.env = make_env(env_id, **(env_kwargs or {}))
        self.action_dim = int(np.prod(self.env.action_space.shape))
        self.stats = {"commands": 0, "holds": 0, "stops": 0, "rejected": 0, "ignored_after_done": 0,
                      "resets": 0, "non_finite_received": 0, "malformed_frames": 0}
        self.seq = 0
        self.done = True
        self.success = False
        self.reward = 0.0
        self.held = False
        self.stopped = False
        self.obs = np.zeros(self.env.observation_space.shape, dtype=np.float64)

    def reset(self, seed: int) -> None:
        """Start an episode from ``reset(seed=seed)``."""
        obs, info = self.env.reset(seed=int(seed))
        self.obs, self.reward = np.asarray(obs, dtype=np.float64), 0.0
        self.done, self.success = False, bool(info.get("is_success", False))
        self.held = self.stopped = False
        self.seq += 1
        self.stats["resets"] += 1

    def command(self, action: Any) -> None:
        """Execute one command for one control period (or reject it)."""
        a = np.asarray(action, dtype=np.float64) if isinstance(action, list) else None
        if a is None or a.shape != (self.action_dim,):
            self.stats["rejected"] += 1
            return
        if not np.isfinite(a).all():
            self.stats["non_finite_received"] += 1
            self.stats["rejected"] += 1
            return
        if self.done:
            self.stats["ignored_after_done"] += 1
            return
        self.held = self.stopped = False
        obs, reward, terminated, truncated, info = self.env.step(a.astype(np.float32))
        self.obs, self.reward = np.asarray(obs, dtype=np.float64), float(reward)
        self.done = bool(terminated or truncated)
        self.success = bool(info.get("is_success", False))
        self.seq += 1
        self.stats["commands"] += 1

    def observation(self, request_id: Any) -> dict[str, Any]:
        """The observation frame."""
        return {"op": "observation", "id": request_id, "seq": self.seq, "stamp": time.monotonic(),
                "obs": self.obs.ravel().tolist(), "reward": self.reward, "done": self.done,
                "success": self.success, "held": self.held, "stopped": self.stopped}

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Apply one frame; returns the reply, if the op has one."""
        op = msg["op"]
        if op == "command":
            self.command(msg.get("action"))
            # Stream the new state at once, as a robot publishes its state every period: the
            # controller finds it waiting at its next tick instead of paying a round trip.
            return self.observation(None)
        if op == "observe":
            return self.observation(msg.get("id"))
        if op == "hold":
            self.held = True
            self.stats["holds"] += 1
            return None
        if op == "stop":
            self.stopped = True
            self.stats["stops"] += 1
            return None
        if op == "reset":
            self.reset(int(msg["seed"]))
            return self.observation(msg.get("id"))
        if op == "stats":
            return {"op": "stats", "id": msg.get("id"), **self.stats}
        return {"op": "error", "id": msg.get("id"), "message": f"unknown op {op!r}"}

    def serve(self, sock: socket.socket) -> None:
        """Serve one connection until it closes or sends ``close``."""
        reader = FrameReader(sock)
        while True:
            try:
                msg = reader.read(None)
            except (ConnectionError, OSError):
                return
            except ValueError as exc:  # oversized or malformed: answer once, then hang up
                self.stats["malformed_frames"] += 1
                print(f"sim_server: refused a frame and closed the connection: {exc}", file=sys.stderr)
                try:
                    sock.sendall(encode({"op": "error", "id": None, "message": str(exc)[:500]}))
                except OSError:
                    pass
                return
            if msg is None or msg["op"] == "close":
                return
            try:
                reply = self.handle(msg)
            except (KeyError, ValueError, TypeError) as exc:
                reply = {"op": "error", "id": msg.get("id"), "message": str(exc)}
            if reply is not None:
                sock.sendall(encode(reply))


def main(argv: list[str] | None = None) -> int:
    """Bind, print the port, serve one controller."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="task id")
    parser.add_argument("--env-kwargs", default="{}", help="task keyword arguments as a JSON object")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--realtime-priority", type=int, default=0,
                        help="SCHED_FIFO priority, standing in for a robot's own real-time controller")
    args = parser.parse_args(argv)
    if args.realtime_priority and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime_priority))
        except OSError:
            pass  # normal scheduling: slower answers under load, which the watchdog sees
    server = SimRobotServer(args.env, json.loads(args.env_kwargs))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.close()
    try:
        server.serve(conn)
    finally:
        conn.close()
        server.env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The robot-side socket accepts only its own frames: oversized or malformed ones end the connection."""

import json
import os
import pickle
import socket
import threading

import pytest

from agents.deploy.sim_server import SimRobotServer
from agents.deploy.wire import HEADER, MAX_FRAME, FrameReader, encode

TASK = "kinodiff/PointObstacle-v0"


class _Bomb:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def server():
    s = SimRobotServer(TASK)
    yield s
    s.env.close()


def _serve(server):
    """A connected client socket whose peer is ``server.serve`` in a thread."""
    client, robot_side = socket.socketpair()
    thread = threading.Thread(target=server.serve, args=(robot_side,), daemon=True)
    thread.start()
    return client, thread


def _frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


@pytest.mark.parametrize("name", ["oversized_header", "pickle_body", "not_utf8", "json_array",
                                  "no_op", "op_not_a_string", "nested_without_end"])
def test_a_bad_frame_is_answered_once_and_the_connection_closed(server, tmp_path, name):
    marker = tmp_path / "pwned"
    raw = {
        # The header alone claims more than MAX_FRAME: refused before any body is read.
        "oversized_header": HEADER.pack(MAX_FRAME + 1),
        "pickle_body": _frame(pickle.dumps(_Bomb(marker))),
        "not_utf8": _frame(b"\xff\xfe{"),
        "json_array": _frame(b'["op", "observe"]'),
        "no_op": _frame(b'{"id": 1}'),
        "op_not_a_string": _frame(b'{"op": ["observe"]}'),
        "nested_without_end": _frame(b"[" * 200_000 + b"]" * 200_000),
    }[name]
    before = server.stats["malformed_frames"]
    client, thread = _serve(server)
    try:
        client.sendall(raw)
        reply = FrameReader(client).read(10.0)
        assert reply is not None and reply["op"] == "error" and reply["id"] is None
        thread.join(10.0)
        assert not thread.is_alive()  # the server hung up
        with pytest.raises(ConnectionError):
            FrameReader(client).read(5.0)
    finally:
        client.close()
    assert server.stats["malformed_frames"] == before + 1
    assert not marker.exists()


def test_well_formed_but_wrong_messages_get_errors_and_the_connection_stays(server):
    client, thread = _serve(server)
    reader = FrameReader(client)
    try:
        client.sendall(encode({"op": "reset", "id": 1, "seed": 3}))
        assert reader.read(10.0)["op"] == "observation"
        rejected = server.stats["rejected"]
        client.sendall(encode({"op": "format_disk", "id": 2}))
        assert reader.read(10.0) == {"op": "error", "id": 2, "message": "unknown op 'format_disk'"}
        client.sendall(encode({"op": "reset", "id": 3, "seed": "not a number"}))
        assert reader.read(10.0)["op"] == "error"
        client.sendall(encode({"op": "command", "action": "rm -rf /"}))  # not a list of numbers
        assert reader.read(10.0)["op"] == "observation"
        assert server.stats["rejected"] == rejected + 1
        client.sendall(encode({"op": "observe", "id": 4}))
        assert reader.read(10.0)["id"] == 4  # still serving
        client.sendall(encode({"op": "close"}))
        thread.join(10.0)
        assert not thread.is_alive()
    finally:
        client.close()


def test_a_frame_just_under_the_limit_is_read():
    a, b = socket.socketpair()
    try:
        body = json.dumps({"op": "observe", "pad": "x" * (MAX_FRAME - 40)}).encode()
        assert len(body) <= MAX_FRAME
        sender = threading.Thread(target=a.sendall, args=(_frame(body),))  # > the socket buffer
        sender.start()
        assert FrameReader(b).read(10.0)["op"] == "observe"
        sender.join(10.0)
    finally:
        a.close()
        b.close()

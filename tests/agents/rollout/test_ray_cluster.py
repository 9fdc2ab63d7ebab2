"""``kinodiff collect --ray-address`` on a two-node Ray cluster started here, on loopback.

The cluster is two ``ray start --block`` processes (head, then a second node joining it), each
with one CPU, so two one-CPU workers must land one per node. Token authentication is on with a
token made for this test (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` for both nodes and
the driver; ``~/.ray/auth_token`` is neither read nor written). Everything addresses the cluster
at 127.0.0.1, but Ray 2.60's ``ray start`` swaps ``--node-ip-address 127.0.0.1`` for the
machine's outward address and then listens on every interface (a node joining a cluster refuses
to start with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the switch ``init_ray`` uses to keep an
embedded Ray on loopback), so for the test's half minute the random token is what keeps others out.

Stopping touches only this cluster: ``ray stop`` would end every Ray process of the user (other
people's tests on a shared machine included). Each node runs in a session of its own
(``start_new_session``); teardown sends SIGTERM to its ``ray start --block`` process, which drains
the node and stops the processes it started, then SIGKILLs whatever is still in that session.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agents.data.episode_store import EpisodeStore
from agents.utils import episode_id

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]
RAY = str(Path(sys.executable).with_name("ray"))
REACH = "kinodiff/TinyReach-v0"

# The driver: the `kinodiff` CLI in-process, with every pool's placement recorded before the pool
# closes (the test-only query: which node each worker ran on).
DRIVER = """
import json, sys, time
import ray
from agents.rollout import pool as P
ray.init(address=sys.argv[1])
for _ in range(300):  # the second node may still be registering
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    if len(nodes) == 2:
        break
    time.sleep(0.2)
ray.shutdown()
placements, close = [], P.RolloutPool.close
def recording_close(self):
    placements.append(self.placement())
    close(self)
P.RolloutPool.close = recording_close
from agents.cli.main import main
code = main(sys.argv[2:])
print(json.dumps({"code": code, "nodes": nodes, "placements": placements}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (the node we started and everything it spawned)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the name: state, ppid, pgrp, session
            members.append(int(stat.parent.name))
    return members


def _stop(node: subprocess.Popen) -> None:
    """Stop one node we started, and only it."""
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(45)
        except subprocess.TimeoutExpired:
            pass
    for pid in _session_members(node.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.wait(10)


def _wait_for_port(port: int, node: subprocess.Popen, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"ray start exited with {node.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the head's GCS did not listen on 127.0.0.1:{port} within {seconds} s")


@pytest.fixture()
def cluster():
    """(address, environment) of a two-node loopback Ray cluster, stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix="kdray", dir="/tmp"))  # short: Ray's socket paths live here
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1")
    port = _free_port()
    common = ["--block", "--num-cpus", "1", "--object-store-memory", str(80 * 2**20),
              "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
    nodes = []

    def start(args, log):
        nodes.append(subprocess.Popen([RAY, "start", *args, *common], env=env, cwd=root,
                                      start_new_session=True, stdout=(root / log).open("w"),
                                      stderr=subprocess.STDOUT))
        return nodes[-1]

    try:
        head = start(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                      "--include-dashboard", "false", "--temp-dir", str(root / "t"),
                      "--ray-client-server-port", str(_free_port())], "head.log")
        _wait_for_port(port, head)
        start(["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1"], "node2.log")
        yield f"127.0.0.1:{port}", env, root
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(root, ignore_errors=True)


def test_collect_with_ray_address_places_workers_on_both_nodes_and_stores_each_episode_once(
        cluster, tmp_path):
    address, env, root = cluster
    out, n, seed = tmp_path / "cluster.zarr", 24, 3
    argv = ["collect", "--env", REACH, "--episodes", str(n), "--seed", str(seed), "--out", str(out),
            "--workers", "2", "--ray-address", address]
    run = subprocess.run([sys.executable, "-c", DRIVER, address, *argv], env=env,
                         cwd=Path(__file__).parents[3], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:] + (root / "head.log").read_text()[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and len(report["nodes"]) == 2
    [placement] = report["placements"]
    assert sorted(p["node_id"] for p in placement) == report["nodes"]  # one worker per node
    store = EpisodeStore.open(out)
    ids = store.table()["episode_id"].tolist()
    assert store.n_episodes == n and sorted(ids) == sorted(episode_id(seed, i) for i in range(n))
    assert store.n_steps == int(store.table()["length"].sum())

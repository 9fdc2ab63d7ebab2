"""Embedded Ray listens on 127.0.0.1 only, has no dashboard unless asked, and uses token auth.

Ray runs any code sent to its ports by whoever reaches them when authentication is off
(ShadowRay, CVE-2023-48022), so the Ray that ``init_ray`` starts must not be reachable from the
network. The listening sockets of this process and every process it spawned are read from
``/proc`` (Linux), so the check sees all of Ray's servers (GCS, raylet, workers, agents), whatever
their names.
"""

import importlib.util
import ipaddress
import os
import sys
from pathlib import Path

import pytest

from agents.rollout.pool import init_ray

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parent[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
    return getattr(ip, "ipv4_mapped", None) or ip


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host, port = local.split(":")
                found.append((str(_address(host)), int(port, 16)))
    return found


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only_with_no_dashboard_and_token_auth():
    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode

    ray.shutdown()  # a Ray another test left running would not be ours to judge
    auth_wanted = os.environ.get("RAY_AUTH_MODE", "token") == "token"  # Ray 2.60's local default
    init_ray(num_cpus=1)
    try:
        pids = ray.get([ray.remote(lambda: os.getpid()).remote()])  # a worker process is up and listening
        # Workers run at this process's priority, not Ray's nice 15.
        assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)
        node = ray._private.worker.global_worker.node
        sockets = _listening(_descendants(os.getpid()))
        assert pids and sockets  # GCS, raylet, this driver and the worker listen on something
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in sockets), sockets
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        assert node.address_info["webui_url"] in ("", None)  # no dashboard
        assert (get_authentication_mode() == AuthenticationMode.TOKEN) == auth_wanted
    finally:
        ray.shutdown()


def test_the_dashboard_is_opt_in_and_needs_rays_dashboard_packages():
    import ray

    if importlib.util.find_spec("aiohttp") is not None:
        pytest.skip("ray[default] is installed here; the dashboard would start")
    ray.shutdown()
    with pytest.raises(ValueError, match=r"dashboard=True needs .*ray\[default\]"):
        init_ray(num_cpus=1, dashboard=True)
    assert not ray.is_initialized()

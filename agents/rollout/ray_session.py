"""Starting or joining Ray for the rollout workers: local, loopback-only and dashboard-free by default."""

from __future__ import annotations

import importlib.util
import logging
import os

log = logging.getLogger(__name__)

# On Linux Ray swaps a loopback node address for the machine's outward one (and then listens on
# every interface) unless this, its switch for single-machine "clusters", is off.
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray starts its workers at nice 15, so any other process on the machine (a browser, a training
# run) takes the cores from the rollouts; SubprocVecEnv's workers run at the caller's priority.
# Embedded Ray's workers do too (as Ray Jobs' do), unless the caller set the variable.
_RAY_NICENESS_ENV = "RAY_worker_niceness"


def init_ray(address: str | None = None, num_cpus: int | None = None,
             dashboard: bool = False) -> None:
    """Start Ray embedded or join the cluster at ``address``; no-op if Ray is running already.

    Embedded Ray listens on 127.0.0.1 only, runs no dashboard unless ``dashboard`` (then on
    127.0.0.1 too), runs its workers at this process's priority (Ray's default is nice 15; set
    ``RAY_worker_niceness`` to choose), and uses Ray's token authentication, which Ray turns on
    by default for a local instance (the token lives in ``~/.ray/auth_token``, made on first
    use). Joining a cluster started with token authentication needs ``RAY_AUTH_MODE=token`` and
    the cluster's token in this process's environment (``RAY_AUTH_TOKEN`` or
    ``RAY_AUTH_TOKEN_PATH``): Ray never sends the default token to an address given explicitly.
    """
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    if dashboard and importlib.util.find_spec("aiohttp") is None:
        raise ValueError("dashboard=True needs Ray's dashboard packages; expected "
                         "`pip install 'ray[default]'` first")
    # The children Ray spawns read the switch from the environment, this process from the
    # constant (Ray may have been imported already); both go back once Ray is up.
    saved = os.environ.get(_RAY_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_RAY_LOOPBACK_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    set_niceness = _RAY_NICENESS_ENV not in os.environ
    if set_niceness:
        os.environ[_RAY_NICENESS_ENV] = "0"
    try:
        # Ray gives its raylet a fixed 30 s to register; an overloaded machine can miss that window.
        for attempt in range(3):
            try:
                ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1",
                         num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1",
                         log_to_driver=False)
                return
            except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on this timeout
                ray.shutdown()
                if attempt == 2 or "timed out during startup" not in str(exc):
                    raise
                log.warning("Ray did not start in time (%s); trying again", exc)
    finally:
        if saved[0] is None:
            os.environ.pop(_RAY_LOOPBACK_ENV, None)
        else:
            os.environ[_RAY_LOOPBACK_ENV] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
        if set_niceness:
            os.environ.pop(_RAY_NICENESS_ENV, None)

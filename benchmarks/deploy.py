"""Deployment: ONNX parity, control-loop timing at 50 and 200 Hz, watchdog, e-stop, deployed success.

The policy is the quickstart's diffusion policy (``runs/quickstart/diffusion``; trained here with the
quickstart's settings when that folder is missing), exported to ONNX. The loop drives the simulated
robot (PointObstacle-v0 in its own process, over loopback TCP) with the policy computing chunks in a
thread beside it; every run is reported, and the timing bars take the median of three 200 Hz runs.
The peer of the ONNX runtime is the same policy's PyTorch ``predict_action_chunk``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.deploy.export import ExportConfig, PolicyGraph, export_policy
from agents.deploy.loop import ControlLoop, LoopConfig
from agents.deploy.policy_process import ProcessChunkWorker
from agents.deploy.robot import SimRobot
from agents.deploy.runtime import OnnxPolicy
from agents.deploy.session import safety_filter_for
from agents.evaluate import EvalConfig, evaluate, resolve_policy_dir
from agents.seeds import episode_seed
from policies import load_policy

ENV = "kinodiff/PointObstacle-v0"
QUICKSTART_RUN = Path("runs/quickstart/diffusion")
EVAL_SEED = 1000
# SCHED_FIFO priority of the loop (the policy process gets one less, the sim robot the same), as
# robot controllers run; a run with normal scheduling is reported beside it.
PRIORITY = 50


def _policy_run(tmp: Path, quick: bool) -> Path:
    if (QUICKSTART_RUN / "checkpoints" / "latest.json").is_file():
        return QUICKSTART_RUN
    from agents.collect import CollectConfig, collect
    from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc

    collect(CollectConfig(env=ENV, episodes=10 if quick else 100, out=str(tmp / "d.zarr")), progress=False)
    return train_bc(BcRunConfig(data=str(tmp / "d.zarr"), policy="diffusion", out=str(tmp / "run"),
                                train=BcTrainConfig(steps=50 if quick else 3000, threads=2)), progress=False)


class _Faulty:
    """Wraps a runtime: puts NaN in the first action of every ``nan_every``-th chunk."""

    def __init__(self, inner: OnnxPolicy, nan_every: int) -> None:
        self.inner, self.nan_every = inner, nan_every
        self.n_action_steps, self.horizon = inner.n_action_steps, inner.horizon
        self.calls = 0

    def reset(self, seed=None):
        self.inner.reset(seed)

    def observe(self, obs):
        return self.inner.observe(obs)

    def predict_chunk(self, history):
        self.calls += 1
        chunk = self.inner.predict_chunk(history)
        if self.calls % self.nan_every == 0:
            chunk = chunk.copy()
            chunk[:, 0] = np.nan
        return chunk


class _Recorder:
    """Robot proxy that timestamps every command it forwards."""

    def __init__(self, robot: SimRobot) -> None:
        self.robot, self.sent = robot, []

    def __getattr__(self, name):
        return getattr(self.robot, name)

    def send_command(self, command):
        self.sent.append(time.perf_counter())
        self.robot.send_command(command)


def _run_loop(policy, spec, hz: float, cycles: int | None, seeds: list[int], wrap=None,
              during=None, priority: int = PRIORITY, process: str | None = None
              ) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """One loop run on a fresh sim robot; ``process``: the .onnx to run in a policy process."""
    worker = ProcessChunkWorker(process, (policy.horizon, policy.action_dim), 1, EVAL_SEED,
                                max(priority - 1, 0)) if process else None
    with SimRobot(ENV, realtime_priority=priority) as sim:
        robot = wrap(sim) if wrap else sim
        config = LoopConfig(hz=hz, realtime_priority=priority)
        loop = ControlLoop(robot, policy, safety_filter_for(spec), config, worker)
        if during:
            during(loop)
        try:
            stats = loop.run(cycles=cycles, seeds=seeds)
        finally:
            loop.close()
        return stats, sim.stats(), robot


def _windows(episodes, n_obs_steps: int, limit: int) -> np.ndarray:
    """[N, To, Do] observation histories as the policy saw them (padded with the first)."""
    out = []
    for r in episodes:
        obs = r.steps["obs"]
        for t in range(len(obs)):
            idx = [max(t - k, 0) for k in range(n_obs_steps - 1, -1, -1)]
            out.append(obs[idx])
            if len(out) == limit:
                return np.asarray(out, dtype=np.float32)
    return np.asarray(out, dtype=np.float32)


def _latency(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3)


def run(quick: bool = False):
    """Returns (config, results, bars)."""
    torch.set_num_threads(1)
    episodes = 6 if quick else 50
    cycles = {50.0: 500 if quick else 10_000, 200.0: 1000 if quick else 10_000}
    repeats = {50.0: 1, 200.0: 3}
    results, bars = [], []
    seeds = [episode_seed(EVAL_SEED, i) for i in range(1000)]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run_dir = _policy_run(tmp, quick)
        onnx_path = tmp / "policy.onnx"
        spec = export_policy(ExportConfig(run=str(run_dir), out=str(onnx_path)))
        runtime = OnnxPolicy(onnx_path, threads=1, seed=EVAL_SEED)

        # In-process evaluation (PyTorch); its recorded observations feed the parity check.
        summary, eps = evaluate(EvalConfig(run=str(run_dir), env=ENV, episodes=episodes, seed=EVAL_SEED,
                                           video=False, threads=1), progress=False)
        policy, _ = load_policy(resolve_policy_dir(run_dir))
        graph = PolicyGraph(policy, spec["action"]["low"], spec["action"]["high"]).eval()
        obs = _windows(eps, runtime.n_obs_steps, 1000)
        noise = np.random.default_rng(0).standard_normal((len(obs), runtime.horizon, runtime.action_dim),
                                                         dtype=np.float32)
        with torch.no_grad():
            want = graph(torch.from_numpy(obs), torch.from_numpy(noise)).numpy()
        diff = float(np.abs(runtime.predict_chunk(obs, noise) - want).max())
        results.append({"metric": "onnx_vs_torch_max_abs_diff", "value": diff, "unit": "action units",
                        "config": {"observations": len(obs), "source": "in-process evaluation episodes"}})
        bars.append({"bar": f"ONNX vs PyTorch on {len(obs)} recorded observations, same noise: "
                            "max abs difference <= 1e-5", "value": diff, "threshold": 1e-5,
                     "met": diff <= 1e-5 and len(obs) >= (1000 if not quick else 1)})

        # Chunk latency: onnxruntime vs the PyTorch policy, batch 1, one thread each.
        one = obs[:1]
        ort_ms = _latency(lambda: runtime.predict_chunk(one), 30 if quick else 200)
        torch_ms = _latency(lambda: policy.predict_action_chunk(torch.from_numpy(one)), 30 if quick else 200)
        results.append({"metric": "chunk_latency_ms", "value": ort_ms, "unit": "ms (p50, batch 1, 1 thread)",
                        "config": {"runtime": "onnxruntime"},
                        "peer": {"runtime": "pytorch", "value": torch_ms},
                        "ratio_to_peer": ort_ms / torch_ms})

        # Timing: 10,000 cycles per run with chunks computed beside the loop (in a policy process),
        # episodes back to back; the last run uses normal scheduling, for comparison.
        timing: dict[float, list[dict[str, Any]]] = {}
        plan = [(hz, k, PRIORITY) for hz in cycles for k in range(repeats[hz])] + [(200.0, 0, 0)]
        for hz, k, priority in plan:
            stats, _, _ = _run_loop(runtime, spec, hz, cycles[hz], seeds, priority=priority,
                                    process=str(onnx_path))
            row = {"hz": hz, "run": k, "scheduling": stats["scheduling"], "cycles": stats["cycles"],
                   "load_avg_1m": os.getloadavg()[0],
                   "jitter_us_p50": stats["jitter_us"]["p50"], "jitter_us_p99": stats["jitter_us"]["p99"],
                   "deadline_miss_fraction": stats["deadline_miss_fraction"],
                   "obs_to_command_us_p50": stats["obs_to_command_us"]["p50"],
                   "obs_to_command_us_p99": stats["obs_to_command_us"]["p99"],
                   "action_obs_age_ms_p50": stats["action_obs_age_ms"]["p50"],
                   "chunk_ms_p50": stats["chunk_ms"]["p50"], "chunk_ms_p99": stats["chunk_ms"]["p99"],
                   "watchdog_holds": stats["holds"], "episodes": len(stats["episodes"]),
                   "episode_success": float(np.mean([e["success"] for e in stats["episodes"]] or [0]))}
            timing.setdefault(hz if priority else "200.0 normal scheduling", []).append(row)
            for metric in ("jitter_us_p50", "jitter_us_p99", "deadline_miss_fraction",
                           "obs_to_command_us_p99"):
                unit = "us" if "_us_" in metric else "fraction"
                results.append({"metric": metric, "value": row[metric], "unit": unit, "config": row})
        runs200 = timing[200.0]
        p99 = float(np.median([r["jitter_us_p99"] for r in runs200]))
        miss = float(np.median([r["deadline_miss_fraction"] for r in runs200]))
        every = ", ".join(f"{r['jitter_us_p99']:.0f} us / {100 * r['deadline_miss_fraction']:.2f}%"
                          for r in runs200)
        bars.append({"bar": f"200 Hz, {cycles[200.0]} cycles, policy beside the loop: p99 tick jitter "
                            f"<= 1 ms (median of 3; runs: {every})", "value": p99 / 1e3,
                     "threshold": 1.0, "met": p99 <= 1000.0})
        bars.append({"bar": "200 Hz: deadline misses <= 0.1% (median of 3)", "value": miss,
                     "threshold": 0.001, "met": miss <= 0.001})

        # Frozen policy process: SIGSTOP it 0.5 s into the run; the hold must follow its next request.
        frozen_at: list[float] = []

        def freeze(loop):
            def stop():
                frozen_at.append(time.perf_counter())
                os.kill(loop.worker.pid, signal.SIGSTOP)
            threading.Timer(0.5, stop).start()

        stats, robot_stats, _ = _run_loop(runtime, spec, 200.0, 300, seeds, during=freeze,
                                          process=str(onnx_path))
        hold = next((e for e in stats["events"] if e.get("reason") == "inference_overrun"
                     and frozen_at and e["t"] > frozen_at[0]), None)
        periods = hold["request_age_periods"] if hold else float("inf")
        results.append({"metric": "frozen_policy_hold_after_periods", "value": periods, "unit": "periods",
                        "config": {"hz": 200.0, "how": "SIGSTOP of the policy process",
                                   "periods_from_request_to_hold": periods,
                                   "robot_holds": robot_stats["holds"],
                                   "ticks_from_request_to_hold": hold["tick"] - hold["request_tick"]
                                   if hold else None}})
        bars.append({"bar": "Frozen policy: the robot holds within 3 control periods", "value": periods,
                     "threshold": 3.0, "met": periods <= 3.0 and robot_stats["holds"] >= 1})

        # NaN in every third chunk: the filter refuses it and the robot never receives it.
        # A thread worker (the wrapper runs in this process) needs normal scheduling: a real-time
        # loop thread would starve it of the GIL.
        nan = _Faulty(runtime, nan_every=3)
        stats, robot_stats, _ = _run_loop(nan, spec, 200.0, 200 if quick else 2000, seeds, priority=0)
        got = robot_stats["non_finite_received"]
        results.append({"metric": "non_finite_commands_at_robot", "value": got, "unit": "commands",
                        "config": {"injected_chunks": nan.calls // 3,
                                   "refused_by_filter": stats["safety_filter"]["counts"]["non_finite"]}})
        bars.append({"bar": "A NaN command never reaches the robot", "value": got, "threshold": 0,
                     "met": got == 0 and stats["safety_filter"]["counts"]["non_finite"] > 0})

        # E-stop pressed at 0.5 s, cleared at 1.5 s: no command may leave in between.
        def schedule(loop):
            threading.Timer(0.5, loop.estop, args=("benchmark",)).start()
            threading.Timer(1.5, loop.clear_estop).start()

        stats, robot_stats, rec = _run_loop(runtime, spec, 200.0, 500, seeds, wrap=_Recorder,
                                            during=schedule, process=str(onnx_path))
        t_stop = next(e["t"] for e in stats["events"] if e["kind"] == "estop")
        t_clear = next(e["t"] for e in stats["events"] if e["kind"] == "estop_cleared")
        between = sum(t_stop < t < t_clear for t in rec.sent)
        after = sum(t > t_clear for t in rec.sent)
        results.append({"metric": "commands_between_estop_and_clear", "value": between, "unit": "commands",
                        "config": {"commands_after_clear": after, "robot_stops": robot_stats["stops"]}})
        bars.append({"bar": "After an e-stop no command is sent until it is cleared", "value": between,
                     "threshold": 0, "met": between == 0 and after > 0})

        # Deployed success vs in-process evaluation, same seeds.
        stats, robot_stats, _ = _run_loop(runtime, spec, 200.0, None, seeds[:episodes],
                                          process=str(onnx_path))
        deployed = float(np.mean([e["success"] for e in stats["episodes"]]))
        lo, hi = summary["success_ci95"]
        results.append({"metric": "deployed_success_rate", "value": deployed, "unit": "fraction",
                        "config": {"episodes": episodes, "hz": 200.0, "robot": f"sim://{ENV}",
                                   "watchdog_holds": stats["holds"]},
                        "peer": {"runtime": "in-process PyTorch evaluation",
                                 "value": summary["success_rate"], "ci95": [lo, hi]},
                        "ratio_to_peer": (deployed / summary["success_rate"]) if summary["success_rate"]
                        else None})
        bars.append({"bar": f"Deployed success within the in-process 95% interval over {episodes} episodes "
                            f"(in-process {summary['success_rate']:.2f}, CI {lo:.2f}-{hi:.2f})",
                     "value": deployed, "threshold": [lo, hi],
                     "met": lo - 1e-9 <= deployed <= hi + 1e-9})  # Wilson's bound can round to 0.999...
    config = {"env": ENV, "policy_run": str(run_dir), "episodes": episodes, "cycles": cycles,
              "repeats": repeats, "robot": "sim robot process over loopback TCP (lockstep)",
              "policy": {k: spec[k] for k in ("policy", "horizon", "n_action_steps", "control_hz")},
              "sampler": spec["source"]["policy_config"]["sampler"],
              "load_avg_at_end": os.getloadavg(), "timing_runs": {str(k): v for k, v in timing.items()}}
    return config, results, bars

"""The planners' speed bars alone (no training): sampling-MPC control rate and rollout-thread scaling.

``kinodiff bench planners`` also trains trajectory-diffusion models and runs 50-episode planner
evaluations, which takes long enough that the machine's load changes under it; this module re-runs
only its two timing measurements, with the same code (``control_rates``, ``rollout_speedup``).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from benchmarks.planners import MPC, control_rates, rollout_speedup

VARIANTS = {("coarse", "predictive_sampling"): ("predictive_sampling", {"substeps": 1}),
            ("exact", "predictive_sampling"): ("predictive_sampling", {})}
MODELS = {"coarse": "planning model at the control timestep",
          "exact": "the task's exact model, 5 physics steps per control step"}


def run(quick: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Returns (config, results, bars)."""
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    rounds = 3 if quick else 10
    results: list[dict[str, Any]] = []
    bars: list[dict[str, Any]] = []
    for (label, planner), r in control_rates(VARIANTS, rounds=rounds, steps=20).items():
        results.append({"metric": "mpc_control_rate", "value": r["hz"], "unit": "Hz",
                        "config": {"env": "kinodiff/Maze-v0", "layout": "large", "planner": planner,
                                   "planning_model": label, **MPC, **VARIANTS[(label, planner)][1], **r}})
        bars.append({"bar": f"sampling MPC 64 samples x horizon 32 on Maze-v0 with 2 threads >= 50 Hz "
                            f"({MODELS[label]})", "value": r["hz"], "threshold": 50.0,
                     "met": r["hz"] >= 50.0})
    one, two, ratio = rollout_speedup(3 if quick else 15)
    results.append({"metric": "rollout_steps_per_s", "value": two, "unit": "steps/s",
                    "config": {"threads": 2, "batch": [64, 32, 5]},
                    "peer": {"name": "mujoco.rollout, 1 thread", "value": one}, "ratio_to_peer": ratio})
    bars.append({"bar": "mujoco.rollout with 2 threads >= 1.8x the single-thread rollout rate",
                 "value": ratio, "threshold": 1.8, "met": ratio >= 1.8})
    config = {"rounds": rounds, "load_average_1min_at_start": load0,
              "load_average_1min_at_end": os.getloadavg()[0]}
    return config, results, bars

"""Benchmarks: each module measures speed or quality side by side with a peer, in one run.

``kinodiff bench NAME --json OUT`` runs ``BENCHMARKS[NAME]`` and writes one JSON shape for all::

    {"benchmark", "machine", "config", "results": [{"metric", "value", "unit", "config",
     "peer"?, "ratio_to_peer"?}], "bars": [{"bar", "value", "threshold", "met"}]}
"""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any

BENCHMARKS = {"quickstart": "benchmarks.quickstart", "env-step": "benchmarks.env_step",
              "experts": "benchmarks.experts", "policy-latency": "benchmarks.policy_latency",
              "pusht-few-step": "benchmarks.pusht_few_step",
              "planners": "benchmarks.planners", "rollouts": "benchmarks.rollouts",
              "constraints": "benchmarks.constraints",
              "uncertainty": "benchmarks.uncertainty", "deploy": "benchmarks.deploy",
              "rl": "benchmarks.rl", "soak": "benchmarks.soak", "planner-timing": "benchmarks.planner_timing"}


def machine() -> dict[str, Any]:
    """CPU, cores, torch threads and versions of the pinned stack."""
    import torch

    from agents.utils import versions

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "versions": versions()}


def run_benchmark(name: str, json_path: Path, quick: bool = False) -> Path:
    """Run benchmark ``name`` and write its JSON document to ``json_path``."""
    from agents.utils import write_json_atomic

    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    module = importlib.import_module(BENCHMARKS[name])
    config, results, bars = module.run(quick=quick)
    doc = {"benchmark": name, "machine": machine(), "config": config, "results": results,
           "bars": bars}
    return write_json_atomic(json_path, doc)

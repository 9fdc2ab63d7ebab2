"""Soak: collection + training + evaluation in a loop for an hour; memory, throughput drift, lost episodes.

Every round does the same work in this one process, as a long session of a researcher would: it
collects ``EPISODES_PER_ROUND`` expert episodes into a new store in two halves (the second through
``--resume``), checks that every episode id is there exactly once, trains a fresh run for
``STEPS_PER_ROUND`` steps on it (with a checkpoint and a ``--resume`` halfway), evaluates it on
``EVAL_EPISODES`` episodes, and deletes the round's files. The resident set size and the three
throughputs are recorded per round; growth and drift compare the median of the last fifth of the
rounds with the median of the first fifth after warm-up. Because the work per round is constant, a
leak or a slowdown shows as growth or drift, not as bigger data.

Duration: ``KINODIFF_SOAK_SECONDS`` (default 3600; ``--quick`` 60). Not part of CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.collect import CollectConfig, collect
from agents.data.episode_store import EpisodeStore
from agents.evaluate import EvalConfig, evaluate
from agents.seeds import episode_id
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc

ENV = "kinodiff/PointObstacle-v0"
EPISODES_PER_ROUND = 20
STEPS_PER_ROUND = 100
EVAL_EPISODES = 5
SEED = 0
WARMUP_ROUNDS = 2  # allocator pools, torch kernels and caches fill in the first rounds


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS in /proc/self/status; expected Linux")


def _round(tmp: Path, k: int) -> dict[str, float]:
    """One round (k = 1, 2, ...): returns throughputs, the RSS after it and the episodes lost."""
    data, run = tmp / f"round_{k}.zarr", tmp / f"run_{k}"
    t0 = time.perf_counter()
    half = EPISODES_PER_ROUND // 2
    # keep_failed: every episode the round asks for is stored, so "lost" is exact.
    collect(CollectConfig(env=ENV, episodes=half, seed=k, out=str(data), keep_failed=True), progress=False)
    summary = collect(CollectConfig(env=ENV, episodes=EPISODES_PER_ROUND, seed=k, out=str(data),
                                    resume=True, keep_failed=True), progress=False)
    t1 = time.perf_counter()
    ids = EpisodeStore.open(data).table()["episode_id"].tolist()
    wanted = {episode_id(k, i) for i in range(EPISODES_PER_ROUND)}
    lost, duplicates = len(wanted - set(ids)), len(ids) - len(set(ids))
    for steps, resume in ((STEPS_PER_ROUND // 2, False), (STEPS_PER_ROUND, True)):
        train_bc(BcRunConfig(data=str(data), policy="diffusion", out=str(run),
                             train=BcTrainConfig(steps=steps, threads=1,
                                                 checkpoint_every=STEPS_PER_ROUND // 2)),
                 resume=resume, progress=False)
    t2 = time.perf_counter()
    evaluate(EvalConfig(run=str(run), env=ENV, episodes=EVAL_EPISODES, seed=1000, video=False, threads=1),
             progress=False)
    t3 = time.perf_counter()
    shutil.rmtree(data)
    shutil.rmtree(run)
    return {"round": k, "collect_steps_per_s": summary["steps"] / (t1 - t0),
            "train_steps_per_s": STEPS_PER_ROUND / (t2 - t1),
            "eval_episodes_per_s": EVAL_EPISODES / (t3 - t2),
            "rss_mib": _rss_mib(), "load1": os.getloadavg()[0], "lost": lost, "duplicates": duplicates}


def _drift(rows: list[dict[str, float]], key: str) -> tuple[float, float, float]:
    """(first, last, last/first - 1) of the medians of ``key`` over the first and last rounds."""
    usable = rows[WARMUP_ROUNDS:] or rows
    n = max(1, len(usable) // 5)
    first = float(np.median([r[key] for r in usable[:n]]))
    last = float(np.median([r[key] for r in usable[-n:]]))
    return first, last, last / first - 1.0


def run(quick: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Returns (config, results, bars)."""
    torch.set_num_threads(1)
    seconds = 60.0 if quick else float(os.environ.get("KINODIFF_SOAK_SECONDS", "3600"))
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(rows) < WARMUP_ROUNDS + 2:
            rows.append(_round(tmp, len(rows) + 1))
    lost = sum(r["lost"] for r in rows)
    duplicates = sum(r["duplicates"] for r in rows)
    committed = EPISODES_PER_ROUND * len(rows) - lost
    config = {"env": ENV, "seconds": seconds, "rounds": len(rows), "episodes_per_round": EPISODES_PER_ROUND,
              "train_steps_per_round": STEPS_PER_ROUND, "eval_episodes_per_round": EVAL_EPISODES,
              "warmup_rounds": WARMUP_ROUNDS, "per_round": rows,
              "command": "KINODIFF_SOAK_SECONDS=3600 kinodiff bench soak --json benchmarks/results/soak.json"}
    results: list[dict[str, Any]] = []
    bars: list[dict[str, Any]] = []
    first, last, growth = _drift(rows, "rss_mib")
    results.append({"metric": "rss_growth", "value": growth, "unit": "fraction",
                    "config": {"first_mib": first, "last_mib": last}})
    bars.append({"bar": "memory growth < 5%", "value": growth, "threshold": 0.05, "met": growth < 0.05})
    for key in ("collect_steps_per_s", "train_steps_per_s", "eval_episodes_per_s"):
        first, last, drift = _drift(rows, key)
        results.append({"metric": f"{key}_drift", "value": drift, "unit": "fraction",
                        "config": {"first": first, "last": last}})
        bars.append({"bar": f"throughput drift < 10% ({key})", "value": abs(drift), "threshold": 0.10,
                     "met": abs(drift) < 0.10})
    results.append({"metric": "lost_episodes", "value": lost, "unit": "episodes",
                    "config": {"committed": committed, "duplicates": duplicates}})
    bars.append({"bar": "zero lost episodes (and none duplicated)", "value": lost + duplicates,
                 "threshold": 0, "met": lost == 0 and duplicates == 0})
    return config, results, bars


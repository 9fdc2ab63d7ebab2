"""The few-step bar on PushT-v0: a one-step student vs its 100-step DDPM teacher, success and latency.

The teacher is the README's PushT policy (relative actions, H=8, Ta=2, 60k steps), read from
``TEACHER_RUN`` when present (training it takes the README's recipe, ~1 h on this machine). In
this run a warm one-step student is distilled from it (``kinodiff train distill --warm-start 0.3
--rounds 3 --round-episodes 300`` from the teacher with ``warm_pad=extrapolate``, 100k pairs,
8,000 steps per student); then the teacher's
DDPM-100 and DDIM-10 (cold and warm-started: the student's own targets) and the student run the
same ``EPISODES`` seeded episodes, and their chunk latency is measured at batch 1 with 1 and 2
torch threads on observations of a real episode (random observations put a relative-action
policy's condition far off its data: DDPM-100 costs 36 ms there instead of ~6).

500 episodes: the 95% interval of a success rate near 0.75 is +-4 points there (+-12 at 50), and
the bar is 5.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agents.collect import CollectConfig, collect
from agents.evaluate import EvalConfig, evaluate, resolve_policy_dir
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.train.distill import DistillConfig, distill, distill_train_defaults
from benchmarks.policy_latency import interleaved_ratio
from envs import make_env
from policies import load_policy, save_policy

ENV = "kinodiff/PushT-v0"
TEACHER_RUN = "runs/pusht4/R7_relq03_h8ta2_60k"
"""The README's PushT-v0 recipe's run (``kinodiff train bc ... --out runs/pusht4/R7_relq03_h8ta2_60k``)."""
EPISODES, SEED = 500, 1000
ROUNDS, ROUND_EPISODES = 3, 300
"""On-policy distillation rounds (DAgger, ``kinodiff train distill --rounds``) of the student."""
WARM_START = 0.3
"""Warm start of the student and the teacher's warm variant: R7 warm-started at 0.3 scores 0.83 (at
0.5, 0.77) over 500 episodes, and its students at least as well as at 0.5 (NOTES)."""
WARM = {"warm_start": WARM_START, "warm_pad": "extrapolate"}
# name -> (run, config overrides at inference)
VARIANTS = {
    "ddpm-100 (teacher)": ("teacher", {"sampler": "ddpm", "num_inference_steps": 100}),
    "ddim-10": ("teacher", {"sampler": "ddim", "num_inference_steps": 10}),
    f"ddim-10 warm {WARM_START}": ("teacher", {"sampler": "ddim", "num_inference_steps": 10, **WARM}),
    "onestep-warm-student": ("student", {}),
}


def _teacher(tmp: Path, quick: bool) -> Path:
    if Path(TEACHER_RUN).exists():
        return resolve_policy_dir(TEACHER_RUN)
    if not quick:
        raise FileNotFoundError(f"teacher run {TEACHER_RUN!r} is missing; expected the README's "
                                "PushT-v0 recipe trained there first")
    collect(CollectConfig(env=ENV, expert="feedback", episodes=3, out=str(tmp / "d.zarr")), progress=False)
    return resolve_policy_dir(train_bc(BcRunConfig(
        data=str(tmp / "d.zarr"), policy="diffusion", out=str(tmp / "teacher"),
        policy_config={"relative_action_origin": (0, 1), "n_action_steps": 2},
        train=BcTrainConfig(steps=20, threads=2)), progress=False))


def _variant(run: Path, overrides: dict, folder: Path) -> Path:
    policy, meta = load_policy(run)
    policy.config = dataclasses.replace(policy.config, **overrides)
    return save_policy(policy, folder, meta)


def _observations(policy, n: int) -> torch.Tensor:
    """[n, 1, To, Do] observations along one seeded episode of ``policy``."""
    env = make_env(ENV)
    obs, _ = env.reset(seed=0)
    policy.reset(seed=0)
    out = []
    for _ in range(n):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(policy.select_action(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    steps = policy.config.n_obs_steps
    return torch.as_tensor(np.stack(out)[:, None, None].repeat(steps, axis=2), dtype=torch.float32)


def _latency_ms(policies: dict, obs: torch.Tensor, threads: int, calls: dict) -> dict[str, float]:
    """Median ms per chunk at batch 1, the policies measured in turn over the same observations."""
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {name: [] for name in policies}
    for name, policy in policies.items():
        policy.reset(seed=0)
        for i in range(calls[name] + 10):
            o = obs[i % len(obs)]
            t0 = time.perf_counter()
            policy.predict_action_chunk(o)
            if i >= 10:  # warm-up
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t) * 1e3) for name, t in times.items()}


def run(quick: bool = False):
    """Returns (config, results, bars)."""
    episodes = 4 if quick else EPISODES
    pairs, steps = (500, 10) if quick else (100_000, 8000)
    results, success = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"teacher": _teacher(tmp, quick)}
        extrapolating = _variant(runs["teacher"], {"warm_pad": "extrapolate"}, tmp / "teacher-extrap")
        train = dataclasses.replace(distill_train_defaults(), steps=steps, threads=2)
        runs["student"] = resolve_policy_dir(distill(DistillConfig(
            teacher=str(extrapolating), out=str(tmp / "student"), pairs=pairs, warm_start=WARM_START,
            warm_fraction=0.8, rounds=1 if quick else ROUNDS, round_episodes=2 if quick else ROUND_EPISODES,
            train=train), progress=False))
        policies = {}
        for variant, (run_name, overrides) in VARIANTS.items():
            folder = _variant(runs[run_name], overrides, tmp / "variants" / variant)
            # Two Ray workers, one thread each: the same seeded episodes as in-process, in half the time.
            summary, _ = evaluate(EvalConfig(run=str(folder), env=ENV, episodes=episodes, seed=SEED,
                                             video=False, threads=1, workers=0 if quick else 2),
                                  progress=False)
            success[variant] = summary["success_rate"]
            results.append({"metric": "success_rate", "value": summary["success_rate"], "unit": "fraction",
                            "config": {"variant": variant, "episodes": episodes, "seed": SEED,
                                       "mean_max_coverage": summary["max_coverage_mean"],
                                       **overrides}})
            policies[variant] = load_policy(folder)[0]
        obs = _observations(policies["onestep-warm-student"], 200)
        teacher, student = "ddpm-100 (teacher)", "onestep-warm-student"
        calls = {name: (5 if quick else 300) if name == teacher else (20 if quick else 3000)
                 for name in (teacher, student)}
        latency = {}
        for threads in (1, 2):
            ms = _latency_ms({k: policies[k] for k in (teacher, student)}, obs, threads, calls)
            for name, value in ms.items():
                results.append({"metric": "chunk_latency_ms", "value": value, "unit": "ms (p50)",
                                "config": {"variant": name, "batch": 1, "threads": threads}})
            # The bar's ratio: the two timed in alternating blocks, so both see the same machine.
            latency[threads] = interleaved_ratio(policies[teacher], policies[student], 5 if quick else 40,
                                                  obs=obs, threads=threads)
            results.append({"metric": "teacher_over_student_latency", "value": latency[threads],
                            "unit": "x", "config": {"batch": 1, "threads": threads, "interleaved": True}})
    torch.set_num_threads(2)
    gap = success[teacher] - success[student]
    bars = [
        {"bar": "one-step warm student success within 5 points of the 100-step DDPM teacher (PushT-v0, "
                f"{episodes} episodes)", "value": gap, "threshold": 0.05, "met": gap <= 0.05},
        {"bar": "that student >= 30x lower chunk latency than the teacher's DDPM-100 (batch 1, 2 threads)",
         "value": latency[2], "threshold": 30, "met": latency[2] >= 30},
        {"bar": "the same with 1 thread", "value": latency[1], "threshold": 30, "met": latency[1] >= 30},
    ]
    return {"env": ENV, "teacher_run": TEACHER_RUN, "episodes": episodes, "seed": SEED,
            "distill": {"pairs": pairs, "steps": steps, "warm_start": WARM_START, "warm_fraction": 0.8,
                        "rounds": 1 if quick else ROUNDS, "round_episodes": 2 if quick else ROUND_EPISODES},
            "calls": calls}, results, bars

"""Python overhead of ``env.step`` above raw MuJoCo physics, side by side with Gymnasium's own envs.

Overhead = time of ``env.step`` (made with ``gymnasium.make``, wrappers included) minus the time of
the same number of raw ``mj_step(model, data, nstep=frame_skip)`` calls on the same model, from the
same states with the same controls. Rounds are interleaved across envs and the median is kept, so
load from other processes hits every env alike.
"""

from __future__ import annotations

import time

import gymnasium as gym
import mujoco
import numpy as np

import envs  # noqa: F401 - registers kinodiff/*
from envs import ENV_SPECS

PEERS = ("Pusher-v5", "Hopper-v5")


def _is_image(env: gym.Env) -> bool:
    space = env.observation_space
    return isinstance(space, gym.spaces.Dict) or space.dtype == np.uint8


def _round(env: gym.Env, actions: np.ndarray, seed: int) -> tuple[float, float]:
    """Seconds per env.step and per raw physics step over the same controls and states."""
    u = env.unwrapped
    model, frame_skip = u.model, u.frame_skip
    raw = mujoco.MjData(model)
    env.reset(seed=seed)
    mujoco.mj_copyData(raw, model, u.data)
    t_env = t_raw = 0.0
    for a in actions:
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(a)
        t1 = time.perf_counter()
        raw.ctrl[:] = a
        mujoco.mj_step(model, raw, nstep=frame_skip)
        t2 = time.perf_counter()
        t_env += t1 - t0
        t_raw += t2 - t1
        if terminated or truncated:
            env.reset()
            mujoco.mj_copyData(raw, model, u.data)
    return t_env / len(actions), t_raw / len(actions)


def measure(env_ids, steps: int, rounds: int, kwargs: dict | None = None) -> dict[str, dict]:
    """Median per-step env time, raw time and overhead (seconds) for each id."""
    kwargs = kwargs or {}
    made = {i: gym.make(i, **kwargs.get(i, {})) for i in env_ids}
    acts = {i: np.random.default_rng(0).uniform(e.action_space.low, e.action_space.high,
                                                (steps, *e.action_space.shape)).astype(np.float32)
            for i, e in made.items()}
    samples = {i: [] for i in env_ids}
    for r in range(rounds + 1):
        for i, env in made.items():
            t_env, t_raw = _round(env, acts[i], seed=r)
            if r:  # round 0 warms caches up
                samples[i].append((t_env, t_raw))
    out = {}
    for i, rows in samples.items():
        env_t, raw_t = np.median(np.array(rows), axis=0)
        over = np.median([e - w for e, w in rows])
        out[i] = {"env_us": env_t * 1e6, "raw_us": raw_t * 1e6, "overhead_us": over * 1e6}
    return out


def run(quick: bool = False):
    """Returns (config, results, bars)."""
    steps, rounds = (200, 2) if quick else (2000, 7)
    ours = []
    for env_id in sorted(ENV_SPECS):
        env = gym.make(env_id)
        if not _is_image(env):
            ours.append(env_id)
        env.close()
    m = measure([*ours, *PEERS], steps, rounds)
    results, bars = [], []
    for i, r in m.items():
        results.append({"metric": "env_step_us", "value": r["env_us"], "unit": "us",
                        "config": {"env": i}})
        results.append({"metric": "raw_physics_us", "value": r["raw_us"], "unit": "us",
                        "config": {"env": i}})
    for i in ours:
        for peer in PEERS:
            ratio = m[i]["overhead_us"] / m[peer]["overhead_us"]
            results.append({"metric": "step_overhead_us", "value": m[i]["overhead_us"], "unit": "us",
                            "config": {"env": i}, "peer": {"name": peer, "value": m[peer]["overhead_us"]},
                            "ratio_to_peer": ratio})
            bars.append({"bar": f"{i} step overhead <= 0.5x {peer}'s", "value": ratio,
                         "threshold": 0.5, "met": ratio <= 0.5})
    if "kinodiff/MultiRobotArena-v0" in ENV_SPECS:
        arena = measure(["kinodiff/MultiRobotArena-v0"], steps // 4, rounds,
                        {"kinodiff/MultiRobotArena-v0": {"n_robots": 64}})["kinodiff/MultiRobotArena-v0"]
        rate = arena["raw_us"] / arena["env_us"]
        results.append({"metric": "arena64_step_rate_vs_raw_physics", "value": rate, "unit": "x",
                        "config": {"n_robots": 64, **arena}})
        bars.append({"bar": "MultiRobotArena with 64 robots steps at >= 0.8x raw physics rate",
                     "value": rate, "threshold": 0.8, "met": rate >= 0.8})
    for peer in PEERS:
        results.append({"metric": "peer_step_over_raw", "value": m[peer]["env_us"] / m[peer]["raw_us"],
                        "unit": "x", "config": {"env": peer}})
    return {"steps_per_round": steps, "rounds": rounds, "envs": ours, "peers": list(PEERS)}, results, bars

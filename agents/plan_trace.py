"""Plan-trace plot: what a planner planned against what the robot did, drawn over the maze."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from planners.base import env_state  # noqa: E402


def trace_episode(env, planner, goal_fn, seed: int, every: int = 10) -> dict[str, Any]:
    """Run one episode, keeping the executed path and every ``every``-th plan.

    Args:
        env: The task (its position is ``qpos[:2]``).
        planner: A planner; its plans' ``states`` are ``(T, nq)`` qpos.
        goal_fn: ``(unwrapped env, obs) -> goal``.
        seed: Reset seed.
        every: Keep the planned path of one control step in this many.

    Returns:
        ``executed`` (N, 2), ``planned`` list of (T, 2), ``subgoals`` (M, 2), ``roadmap_path``
        (first high-level path or None), ``goals`` (G, 2) and ``success``.
    """
    obs, info = env.reset(seed=seed)
    planner.reset(seed)
    executed, planned, subgoals, goals = [env.unwrapped.data.qpos[:2].copy()], [], [], []
    roadmap_path, step, done = None, 0, False
    while not done:
        goal = goal_fn(env.unwrapped, obs)
        plan = planner.plan(env_state(env), goal)
        if goals == [] or not np.array_equal(goals[-1], goal):
            goals.append(np.array(goal, dtype=np.float64))
        if roadmap_path is None and "path" in plan.diagnostics:
            roadmap_path = plan.diagnostics["path"]
        if "subgoal" in plan.diagnostics and (not subgoals or not np.array_equal(
                subgoals[-1], plan.diagnostics["subgoal"])):
            subgoals.append(plan.diagnostics["subgoal"])
        if step % every == 0 and plan.states is not None:
            planned.append(plan.states[:, :2].copy())
        obs, _, terminated, truncated, info = env.step(plan.actions[0].astype(np.float32))
        executed.append(env.unwrapped.data.qpos[:2].copy())
        step, done = step + 1, terminated or truncated
    return {"executed": np.array(executed), "planned": planned, "subgoals": np.array(subgoals).reshape(-1, 2),
            "roadmap_path": roadmap_path, "goals": np.array(goals).reshape(-1, 2),
            "success": bool(info.get("is_success", False))}


def plot_trace(trace: dict[str, Any], layout, path: Path, title: str = "") -> Path:
    """Draw the maze (``layout.free``), the executed path, planned paths, subgoals and goals."""
    width, height = layout.extent
    fig, ax = plt.subplots(figsize=(0.9 * width + 1.5, 0.9 * height + 0.8))
    ax.imshow(~np.asarray(layout.free), cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest",
              extent=(-width / 2, width / 2, -height / 2, height / 2))
    if trace["roadmap_path"] is not None:
        rp = np.asarray(trace["roadmap_path"])
        ax.plot(rp[:, 0], rp[:, 1], "--", color="tab:gray", lw=1, label="first roadmap path")
    for k, p in enumerate(trace["planned"]):
        ax.plot(p[:, 0], p[:, 1], color="tab:orange", alpha=0.6, lw=0.8, label="planned" if k == 0 else None)
    ex = trace["executed"]
    ax.plot(ex[:, 0], ex[:, 1], color="tab:blue", lw=1.8, label="executed")
    if len(trace["subgoals"]):
        ax.scatter(*trace["subgoals"].T, s=12, color="tab:purple", zorder=3, label="subgoals")
    ax.scatter(*trace["goals"].T, s=120, marker="*", color="tab:green", zorder=4, label="goals")
    ax.set_title(f"{title} ({'success' if trace['success'] else 'failure'})", fontsize=8)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

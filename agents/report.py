"""Evaluation reports: report.json, report.md, a success-rate chart, executed paths and a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

from agents.rollout.worker import EpisodeResult  # noqa: E402
from agents.utils import write_json_atomic  # noqa: E402

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red"]


def plot_success(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Bar chart of success rates with their Wilson 95% intervals."""
    names = list(summaries)
    rates = [summaries[n]["success_rate"] for n in names]
    # max(0, .) absorbs rounding where the interval touches the estimate (p = 0 or 1).
    lo = [max(0.0, r - summaries[n]["success_ci95"][0]) for n, r in zip(names, rates, strict=True)]
    hi = [max(0.0, summaries[n]["success_ci95"][1] - r) for n, r in zip(names, rates, strict=True)]
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(names, rates, yerr=[lo, hi], capsize=6, color=COLORS[: len(names)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_paths(episodes: dict[str, list[EpisodeResult]], layout: Any, path: Path) -> Path:
    """Executed xy paths of each policy over the scene (obstacle box and goal, when known)."""
    fig, axes = plt.subplots(1, len(episodes), figsize=(3.2 * len(episodes), 3.8), squeeze=False)
    for ax, (name, results), color in zip(axes[0], episodes.items(), COLORS, strict=False):
        if layout is not None and hasattr(layout, "obstacle_center"):
            c, h = layout.obstacle_center, layout.obstacle_half
            ax.add_patch(Rectangle((c[0] - h[0], c[1] - h[1]), 2 * h[0], 2 * h[1], color="0.5"))
            ax.add_patch(Circle(tuple(layout.goal), 0.1, color="tab:green", alpha=0.4))
        for r in results:
            if len(r.positions):
                ax.plot(r.positions[:, 0], r.positions[:, 1], color=color, alpha=0.35, lw=1,
                        ls="-" if r.success else ":")
        ax.set_title(f"{name} ({sum(r.success for r in results)}/{len(results)} ok)")
        ax.set_aspect("equal")
        if layout is not None and hasattr(layout, "obstacle_center"):  # PointObstacle's arena
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1.1, 1.1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_video(frames: list, path: Path, fps: int) -> Path | None:
    """Write an mp4 (ffmpeg from imageio-ffmpeg); falls back to a GIF when ffmpeg fails."""
    if not frames:
        return None
    try:
        imageio.mimsave(path, frames, fps=fps, macro_block_size=8)
        return path
    except Exception:  # noqa: BLE001 - any ffmpeg failure: a GIF needs no external binary
        gif = path.with_suffix(".gif")
        imageio.mimsave(gif, frames, duration=1.0 / fps, loop=0)
        return gif


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(
    out: Path,
    summaries: dict[str, dict[str, Any]],
    episodes: dict[str, list[EpisodeResult]],
    layout: Any,
    video_policy: str | None,
    fps: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.json, report.md, plots and a video of ``video_policy`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "success_plot": plot_success(summaries, out / "success.png"),
        "paths_plot": plot_paths(episodes, layout, out / "paths.png"),
    }
    if video_policy is not None:
        video = write_video(episodes[video_policy][0].frames, out / f"{video_policy}.mp4", fps)
        if video is not None:
            files["video"] = video
    doc = {"policies": summaries, "files": {k: v.name for k, v in files.items()}, **(extra or {})}
    write_json_atomic(out / "report.json", doc)
    lines = ["# Evaluation report", ""]
    if extra and "env_id" in extra:
        lines += [f"Task: `{extra['env_id']}`", ""]
    lines += ["| policy | success (95% CI) | return | length | latency p50 / p99 (ms) | modes | "
              "mean max coverage |",
              "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lo, hi = s["success_ci95"]
        modes = ", ".join(f"{m} {v:.0%}" for m, v in s["mode_coverage"].items()) or "n/a"
        lines.append(f"| {name} | {s['success_rate']:.2f} ({lo:.2f}-{hi:.2f}) | "
                     f"{s['return_mean']:.2f} | {s['length_mean']:.1f} | "
                     f"{_fmt(s['latency_ms_p50'])} / {_fmt(s['latency_ms_p99'])} | {modes} | "
                     f"{_fmt(s.get('max_coverage_mean'))} |")
    n = next(iter(summaries.values()))["episodes"]
    lines += ["", f"{n} episodes per policy, seeds listed in report.json. Modes: share of successful "
              "episodes passing on each side.", "",
              "![success rate](success.png)", "", "![executed paths](paths.png)", ""]
    if "video" in files:
        lines += [f"Video of {video_policy}: [{files['video'].name}]({files['video'].name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    files.update(json=out / "report.json", md=out / "report.md")
    return files

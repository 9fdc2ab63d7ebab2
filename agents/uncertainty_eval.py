"""Evaluation of uncertainty under shift: failure prediction, false alarms, lead time, fallback.

For a calibrated policy, ``evaluate_uncertainty`` runs nominal episodes and episodes under each
shift preset twice: the bare policy (scores and alarms recorded, the policy keeps control) and the
monitored policy that hands over to a fallback on the alarm. It reports, per score and for the
combined alarm: AUROC and AUPRC of the episode score for episode failure, the true-positive rate at
the calibrated threshold, the empirical false-alarm rate on successful nominal episodes, the
detection lead time in steps, and a reliability table and plot of the conformal failure score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from agents.evaluate import check_fallback_spec, check_policy_fits_env, resolve_policy_dir
from agents.monitored import MonitoredEpisode, load_monitored, run_monitored_episodes
from agents.rollout.env_factory import EnvFactory
from agents.utils import episode_seed, write_json_atomic
from envs.wrappers.domain_randomization import shift_spec
from policies.uncertainty import Calibration

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); None without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the precision-recall curve (average precision, ties broken pessimistically)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if y.sum() == 0 or y.size == y.sum():
        return None
    # Among equal scores negatives come first, so ties never flatter the score.
    order = np.lexsort((y, -s))
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float((precision * hits).sum() / hits.sum())


def reliability(predicted: np.ndarray, failed: np.ndarray, bins: int = 5) -> dict[str, Any]:
    """Binned predicted failure score vs observed failure rate, and the expected calibration error."""
    p, y = np.asarray(predicted, dtype=np.float64), np.asarray(failed, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(mask.sum()),
                         "predicted": float(p[mask].mean()), "observed": float(y[mask].mean())})
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return {"bins": rows, "ece": float(ece)}


def score_metrics(episodes: list[MonitoredEpisode], cal: Calibration) -> dict[str, Any]:
    """Per-score and combined failure-prediction metrics over a set of episodes."""
    failed = np.array([not e.success for e in episodes])
    ep_scores = [cal.episode_scores(e.trace) for e in episodes]
    out: dict[str, Any] = {"episodes": len(episodes), "failures": int(failed.sum()), "scores": {}}
    for name in (*cal.names, "combined"):
        values = np.array([s[name] for s in ep_scores])
        thr = cal.combined_threshold if name == "combined" else cal.thresholds[name]
        alarm = values > thr
        out["scores"][name] = {
            "auroc": auroc(values, failed), "auprc": average_precision(values, failed),
            "tpr_at_threshold": float(alarm[failed].mean()) if failed.any() else None,
            "false_alarm_rate": float(alarm[~failed].mean()) if (~failed).any() else None,
        }
    leads = [e.length - e.alarm_step for e in episodes if not e.success and e.alarm_step is not None]
    out["lead_time_steps"] = {"mean": float(np.mean(leads)) if leads else None,
                              "median": float(np.median(leads)) if leads else None,
                              "detected_failures": len(leads)}
    predicted = np.array([1.0 - cal.p_value(s["combined"]) for s in ep_scores])
    out["reliability"] = reliability(predicted, failed)
    out["predicted_failure"] = predicted.tolist()
    return out


def best_score(metrics: dict[str, Any]) -> tuple[str | None, float | None]:
    """The score with the highest AUROC (None when no AUROC is defined)."""
    rated = [(v["auroc"], k) for k, v in metrics["scores"].items() if v["auroc"] is not None]
    if not rated:
        return None, None
    value, name = max(rated)
    return name, value


@dataclass(kw_only=True)
class UncertaintyEvalConfig:
    """Uncertainty evaluation of a calibrated policy under shift."""

    run: str
    """Run folder or saved policy folder (calibrated with ``kinodiff calibrate``)."""
    env: str = "kinodiff/PointObstacle-v0"
    """Task id."""
    shifts: tuple[str, ...] = ("all",)
    """Shift presets to evaluate besides nominal."""
    episodes: int = 50
    """Episodes per condition."""
    seed: int = 1000
    """Evaluation seed (the calibration used its own)."""
    fallback: str = "stop"
    """Fallback on the alarm: ``stop`` (zero action), ``planner:NAME`` (a registered planner) or
    ``expert:NAME``."""
    compare_fallbacks: tuple[str, ...] = ()
    """Further fallbacks run on the same alarmed episodes (e.g. ``stop`` beside a planner); their
    success rates are reported per condition in ``success_by_fallback``."""
    threads: int = 1
    """torch threads."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""

    def __post_init__(self) -> None:
        self.shifts = tuple(self.shifts)
        for s in self.shifts:
            shift_spec(s)
        self.compare_fallbacks = tuple(self.compare_fallbacks)
        for spec in (self.fallback, *self.compare_fallbacks):
            check_fallback_spec(spec)
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes}; expected >= 1")


def evaluate_uncertainty(config: UncertaintyEvalConfig, progress: bool = True) -> dict[str, Any]:
    """Bare and fallback rollouts, nominal and under every shift; returns the report document."""
    policy_dir = resolve_policy_dir(config.run)
    check_policy_fits_env(policy_dir, config.env)
    estimator, cal = load_monitored(policy_dir, config.threads)
    if cal is None:
        raise ValueError(f"policy {str(policy_dir)!r} has no calibration; run `kinodiff calibrate "
                         f"--run {config.run}` first")
    seeds = [episode_seed(config.seed, i) for i in range(config.episodes)]
    jobs = list(enumerate(seeds))
    doc: dict[str, Any] = {"policy_dir": str(policy_dir), "env_id": config.env, "alpha": cal.alpha,
                           "fallback": config.fallback, "seeds": seeds, "conditions": {}}
    nominal: list[MonitoredEpisode] = []
    for shift in ("nominal", *config.shifts):
        factory = EnvFactory(config.env, config.env_kwargs, None if shift == "nominal" else shift)
        bare = run_monitored_episodes(factory, estimator, cal, jobs, fallback=config.fallback,
                                      enabled=False, progress=progress, desc=f"{shift} bare")
        # Seeded env and policy: a monitored episode is the bare one up to its first alarm, so only
        # the episodes that raised the alarm are run again with the fallback in control.
        alarmed = [(e.index, e.seed) for e in bare if e.alarm_step is not None]
        success_by_fallback, handed = {}, []
        for spec in dict.fromkeys((config.fallback, *config.compare_fallbacks)):
            runs = run_monitored_episodes(factory, estimator, cal, alarmed, fallback=spec,
                                          enabled=True, progress=progress, desc=f"{shift} {spec}")
            by_index = {e.index: e for e in runs}
            success_by_fallback[spec] = float(np.mean([by_index.get(e.index, e).success
                                                       for e in bare]))
            handed = runs if spec == config.fallback else handed
        nominal = bare if shift == "nominal" else nominal
        metrics = score_metrics(bare, cal)
        pooled = score_metrics(nominal + bare, cal) if shift != "nominal" else metrics
        lat = np.array([t for e in bare for t in e.latencies]) * 1e3
        doc["conditions"][shift] = {
            "success_bare": float(np.mean([e.success for e in bare])),
            "success_fallback": success_by_fallback[config.fallback],
            "success_by_fallback": success_by_fallback,
            "handover_rate": len(alarmed) / len(bare),
            "scored_chunk_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "metrics": metrics, "best_score": best_score(metrics),
            "pooled_with_nominal": {k: {"auroc": v["auroc"], "auprc": v["auprc"]}
                                    for k, v in pooled["scores"].items()},
            "best_score_pooled": best_score(pooled),
            "handovers": [{"index": e.index, **h} for e in handed for h in e.handovers],
            "episodes": [e.to_dict() for e in bare],
        }
    return doc


def write_uncertainty_report(out: Path, doc: dict[str, Any]) -> dict[str, Path]:
    """Write ``uncertainty.json``, ``uncertainty.md`` and ``reliability.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    for name, cond in doc["conditions"].items():
        rows = cond["metrics"]["reliability"]["bins"]
        ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o", label=name)
    ax.set_xlabel("predicted failure (1 - conformal p-value)")
    ax.set_ylabel("observed failure rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=120)
    plt.close(fig)
    write_json_atomic(out / "uncertainty.json", doc)
    lines = [f"# Uncertainty under shift: `{doc['env_id']}`", "",
             f"alpha {doc['alpha']}, fallback `{doc['fallback']}`, {len(doc['seeds'])} episodes "
             "per condition.", "",
             "| condition | success bare | success fallback | hand-overs | best score (AUROC) | "
             "best with nominal pooled (AUROC) | combined AUROC / AUPRC | TPR at threshold | "
             "false alarms on successes | lead time (steps) |", "|---" * 10 + "|"]
    for name, c in doc["conditions"].items():
        m, comb = c["metrics"], c["metrics"]["scores"]["combined"]
        best, value = c["best_score"]
        pbest, pvalue = c["best_score_pooled"]
        lines.append(f"| {name} | {c['success_bare']:.2f} | {c['success_fallback']:.2f} | "
                     f"{c['handover_rate']:.2f} | {best or 'n/a'} ({_fmt(value)}) | "
                     f"{pbest or 'n/a'} ({_fmt(pvalue)}) | "
                     f"{_fmt(comb['auroc'])} / {_fmt(comb['auprc'])} | {_fmt(comb['tpr_at_threshold'])} | "
                     f"{_fmt(comb['false_alarm_rate'])} | {_fmt(m['lead_time_steps']['mean'], 1)} |")
    lines += ["", "Per score (AUROC for failure):", "",
              "| condition | " + " | ".join(next(iter(doc["conditions"].values()))["metrics"]["scores"])
              + " |", "|---" * (1 + len(next(iter(doc["conditions"].values()))["metrics"]["scores"]))
              + "|"]
    for name, c in doc["conditions"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(v["auroc"]) for v in
                                                  c["metrics"]["scores"].values()) + " |")
    if any(len(c.get("success_by_fallback", {})) > 1 for c in doc["conditions"].values()):
        specs = list(next(iter(doc["conditions"].values()))["success_by_fallback"])
        lines += ["", "Success by fallback (alarmed episodes re-run with each):", "",
                  "| condition | bare | " + " | ".join(f"`{f}`" for f in specs) + " |",
                  "|---" * (2 + len(specs)) + "|"]
        for name, c in doc["conditions"].items():
            lines.append(f"| {name} | {c['success_bare']:.2f} | " + " | ".join(
                f"{c['success_by_fallback'][f]:.2f}" for f in specs) + " |")
    lines += ["", f"Hand-overs to `{doc['fallback']}` (first {_HANDOVER_ROWS} per condition):", "",
              "| condition | episode | step | combined score | threshold | fallback steps |",
              "|---" * 6 + "|"]
    for name, c in doc["conditions"].items():
        for h in c["handovers"][:_HANDOVER_ROWS]:
            lines.append(f"| {name} | {h['index']} | {h['step']} | {h['combined']:.3f} | "
                         f"{h['threshold']:.3f} | {h['fallback_steps']} |")
    lines += ["", "AUROC within a condition needs failures and successes in it; the pooled column "
              "adds the nominal episodes (failures under shift vs every success).",
              "", "![reliability](reliability.png)", ""]
    (out / "uncertainty.md").write_text("\n".join(lines))
    return {"json": out / "uncertainty.json", "md": out / "uncertainty.md",
            "plot": out / "reliability.png"}


_HANDOVER_ROWS = 10


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def evaluate_uncertainty_for(config: Any, out: Path) -> Path:
    """The uncertainty part of ``kinodiff eval --uncertainty``: nominal plus ``config.shift``.

    Args:
        config: An ``agents.evaluate.EvalConfig``.
        out: The report folder.

    Returns:
        The path of ``uncertainty.md``.
    """
    doc = evaluate_uncertainty(UncertaintyEvalConfig(
        run=config.run, env=config.env, shifts=(config.shift,) if config.shift else (),
        episodes=config.episodes, seed=config.seed, fallback=config.fallback,
        threads=config.threads, env_kwargs=config.env_kwargs))
    return write_uncertainty_report(out, doc)["md"]

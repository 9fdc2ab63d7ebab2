"""The quickstart's quality gap over three training seeds and two start spreads.

Diffusion policy vs the MLP behaviour-cloning baseline (the peer), trained on the same
demonstrations of PointObstacle-v0 and evaluated on the same 50 seeds.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from agents.quickstart import QuickstartConfig, quickstart

SPREADS = (0.05, 0.3)
SEEDS = (0, 1, 2)


def run(quick: bool = False):
    """Returns (config, results, bars)."""
    import json

    seeds = SEEDS[:1] if quick else SEEDS
    spreads = SPREADS[:1] if quick else SPREADS
    base = QuickstartConfig(episodes=10 if quick else 100, eval_episodes=4 if quick else 50,
                            diffusion_steps=20 if quick else 3000, mlp_steps=20 if quick else 3000)
    results, per_spread = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for spread in spreads:
            rates = {"diffusion": [], "mlp": []}
            for seed in seeds:
                cfg = QuickstartConfig(**{**asdict(base), "seed": seed,
                                          "out": str(Path(tmp) / f"s{spread}_{seed}"),
                                          "env_kwargs": {"start_spread": spread}})
                report = json.loads(quickstart(cfg, progress=False).with_suffix(".json").read_text())
                for name, s in report["policies"].items():
                    rates[name].append(s["success_rate"])
                    results.append({"metric": f"success_rate_{name}", "value": s["success_rate"],
                                    "unit": "fraction", "config": {"seed": seed,
                                                                   "start_spread": spread,
                                                                   "mode_coverage":
                                                                       s["mode_coverage"]}})
            d, m = float(np.mean(rates["diffusion"])), float(np.mean(rates["mlp"]))
            per_spread[spread] = (d, m)
            results.append({"metric": "success_rate_diffusion_mean", "value": d, "unit": "fraction",
                            "config": {"start_spread": spread, "seeds": list(seeds)},
                            "peer": {"name": "mlp-bc", "value": m},
                            "ratio_to_peer": d / m if m > 0 else None})
    d, m = per_spread[spreads[0]]
    bars = [
        {"bar": "diffusion success_rate >= 0.9 (mean over training seeds)", "value": d,
         "threshold": 0.9, "met": d >= 0.9},
        {"bar": "MLP-BC lower than diffusion by at least 0.25 (mean over training seeds)",
         "value": d - m, "threshold": 0.25, "met": d - m >= 0.25},
    ]
    config = {**asdict(base), "seeds": list(seeds), "start_spreads": list(spreads), "quick": quick}
    return config, results, bars

"""Fit the uncertainty heads beside a trained policy and calibrate its alarm on nominal rollouts.

``kinodiff calibrate --run RUN --env ID`` (1) trains the denoiser ensemble and the RND predictor on
the run's own demonstrations (the policy itself is frozen), (2) rolls the policy out on nominal
episodes with every score recorded, and (3) fits split-conformal thresholds on the successful
episodes only. Heads and thresholds are saved as ``uncertainty.safetensors`` + ``uncertainty.json``
in the policy folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.data.episode_store import EpisodeStore
from agents.data.sampler import SequenceSampler
from agents.evaluate import check_policy_fits_env, resolve_policy_dir
from agents.monitored import run_monitored_episodes
from agents.rollout.env_factory import EnvFactory
from agents.utils import episode_seed, seed_everything
from envs.registry import check_env_id
from policies import Policy, load_policy
from policies.uncertainty import (
    SCORES,
    UncertaintyConfig,
    UncertaintyEstimator,
    fit_calibration,
    load_estimator,
    save_calibration,
    save_estimator,
)
from policies.uncertainty.io import WEIGHTS


@dataclass(kw_only=True)
class CalibrateConfig:
    """Uncertainty heads and conformal calibration of a trained policy."""

    run: str
    """Run folder (its latest checkpoint) or a saved policy folder."""
    env: str | None = None
    """Task id (default: the one the policy was trained on)."""
    data: str | None = None
    """Demonstrations for the heads (default: the policy's training data)."""
    episodes: int = 100
    """Nominal calibration rollouts; only the successful ones are used."""
    alpha: float = 0.05
    """Target false-alarm rate per successful nominal episode."""
    window: int = 2
    """Chunks in the trailing mean of each score before thresholding."""
    seed: int = 5000
    """Seed of the calibration episodes (kept apart from evaluation's default 1000)."""
    head_steps: int = 800
    """Gradient steps of the heads."""
    head_batch: int = 256
    """Windows per head batch."""
    head_lr: float = 1e-3
    """Adam learning rate of the heads."""
    num_samples: int = 8
    """K: chunks sampled per call for the dispersion and temporal scores."""
    ensemble_hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of each denoiser-ensemble member."""
    retrain: bool = False
    """Train the heads again even when the policy folder already has them."""
    threads: int = 1
    """torch threads."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes={self.episodes}; expected >= 1")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha}; expected 0 < alpha < 1")
        for name in ("window", "head_steps", "head_batch", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")


def train_heads(estimator: UncertaintyEstimator, data: str, steps: int, batch_size: int,
                lr: float, seed: int, progress: bool = True) -> list[dict[str, float]]:
    """Train the estimator's heads on the windows of an episode store; returns the loss log."""
    policy: Policy = estimator.policy
    store = EpisodeStore.open(data)
    arrays = store.load(["obs", "action"])
    obs, act = torch.as_tensor(arrays["obs"]), torch.as_tensor(arrays["action"])
    c = policy.config
    sampler = SequenceSampler(store.episode_ends, np.arange(store.n_episodes), c.n_obs_steps,
                              c.horizon)
    rng = np.random.default_rng(seed)
    seed_everything(seed)
    params = [p for p in estimator.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    estimator.train()
    log = []
    for step in tqdm(range(steps), desc="uncertainty heads", disable=not progress, leave=False):
        obs_idx, act_idx = sampler.indices(rng.integers(0, len(sampler), batch_size))
        loss, metrics = estimator.compute_loss({"obs": obs[torch.as_tensor(obs_idx)],
                                                "action": act[torch.as_tensor(act_idx)]})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log.append({"step": step + 1, **metrics})
    estimator.eval()
    return log


def _training_data(policy_dir: Path, run: str) -> str:
    meta = json.loads((policy_dir / "policy.json").read_text()).get("metadata", {})
    if meta.get("data"):
        return str(meta["data"])
    cfg = Path(run) / "config.json"
    if cfg.is_file():
        return str(json.loads(cfg.read_text())["data"])
    raise ValueError(f"cannot tell which data policy {str(policy_dir)!r} was trained on; "
                     "expected --data DATA.zarr")


def calibrate(config: CalibrateConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) the heads, roll out nominal episodes, fit and store the calibration.

    Returns:
        A summary: thresholds, episode counts, seeds, nominal success rate and timings.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    policy_dir = resolve_policy_dir(config.run)
    policy, meta = load_policy(policy_dir)
    policy.require_vector_observations("calibration")
    env_id = check_env_id(config.env or meta.get("env_id", ""))
    check_policy_fits_env(policy_dir, env_id)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    head_log: list[dict[str, float]] = []
    if config.retrain or not (policy_dir / WEIGHTS).is_file():
        estimator = UncertaintyEstimator(policy, UncertaintyConfig(
            num_samples=config.num_samples, ensemble_hidden=config.ensemble_hidden))
        data = config.data or _training_data(policy_dir, config.run)
        head_log = train_heads(estimator, data, config.head_steps, config.head_batch,
                               config.head_lr, config.seed, progress)
        save_estimator(estimator, policy_dir, metadata={"data": data, "head_log": head_log[-1:]})
    else:
        estimator, _ = load_estimator(policy_dir, policy)
    timings["heads_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seeds = [episode_seed(config.seed, i) for i in range(config.episodes)]
    episodes = run_monitored_episodes(EnvFactory(env_id, config.env_kwargs), estimator, None,
                                      list(enumerate(seeds)), progress=progress, desc="calibrate")
    timings["rollouts_s"] = time.perf_counter() - t0
    traces = [e.trace for e in episodes if e.success]
    cal = fit_calibration(traces, SCORES, config.alpha, config.window, config.seed)
    summary = {"policy_dir": str(policy_dir), "env_id": env_id, "alpha": config.alpha,
               "episodes": len(episodes), "successes": len(traces),
               "nominal_success_rate": len(traces) / len(episodes), "seeds": seeds,
               "thresholds": cal.thresholds, "scales": cal.scales,
               "combined_threshold": cal.combined_threshold, "timings": timings,
               "config": {k: v for k, v in asdict(config).items() if k != "env_kwargs"},
               "env_kwargs": config.env_kwargs}
    save_calibration(policy_dir, cal, metadata={"calibration": summary})
    return summary

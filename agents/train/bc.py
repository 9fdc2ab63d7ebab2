"""One readable behaviour-cloning loop for every registered policy.

AdamW, warmup + cosine learning rate, EMA weights, validation loss, JSONL + TensorBoard logs,
atomic checkpoints and ``resume``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from agents.data.episode_store import EpisodeStore
from agents.data.observations import OBS, obs_keys, obs_shapes, policy_obs
from agents.data.sampler import SequenceSampler, split_episodes
from agents.train.checkpoint import latest_checkpoint, restore, save_checkpoint
from agents.utils import seed_everything, versions, write_json_atomic
from policies import Policy, make_policy
from policies.base import tree_map
from policies.registry import policy_class


@dataclass(kw_only=True)
class BcTrainConfig:
    """Behaviour-cloning optimisation settings."""

    steps: int = 3000
    """Gradient steps."""
    batch_size: int = 256
    """Windows per batch."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warmup before the cosine decay."""
    ema_decay: float = 0.995
    """Decay of the exponential moving average of the weights (the EMA weights are saved)."""
    val_fraction: float = 0.1
    """Share of episodes held out for the validation loss."""
    val_every: int = 500
    """Steps between validation losses."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (one is always written at the end)."""
    log_every: int = 50
    """Steps between log lines."""
    seed: int = 0
    """Seed of weights, batches, noise and the split."""
    threads: int = 0
    """torch CPU threads (0 leaves torch's default)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay}; expected 0 < decay < 1")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}; expected > 0")


@dataclass(kw_only=True)
class BcRunConfig:
    """A behaviour-cloning run: data, policy and optimisation."""

    data: str
    """Episode store to learn from."""
    policy: str = "diffusion"
    """Registered policy name."""
    out: str = "runs/bc"
    """Run folder."""
    policy_config: dict[str, Any] = field(default_factory=dict)
    """Overrides of the policy's config fields (shapes come from the data)."""
    train: BcTrainConfig = field(default_factory=BcTrainConfig)
    """Optimisation settings."""


def _lr_lambda(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return fn


class Batches:
    """What the loop draws from: seeded random rows for training, fixed rows for validation.

    Subclasses give ``__len__`` and ``take``; ``draw`` is shared, so every source draws its rows
    the same way from ``rng``, whose state is checkpointed (a resume is exact).
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The given rows, in order."""
        raise NotImplementedError

    def draw(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` random rows."""
        return self.take(self.rng.integers(0, len(self), batch_size))


class _Batches(Batches):
    """Random windows of an episode store's arrays, held in memory.

    ``batch["obs"]`` is [B, To, Do] for an ``obs`` array, or a dict ``{key: [B, To, ...]}`` for the
    ``obs.<key>`` arrays of a Dict observation (images stay uint8; the policy scales them).
    """

    def __init__(self, data: dict[str, np.ndarray], sampler: SequenceSampler, seed: int) -> None:
        super().__init__(seed)
        self.obs = tree_map(torch.as_tensor, policy_obs(data))
        self.action = torch.as_tensor(data["action"])
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def take(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The windows starting at the given sampler rows."""
        obs_idx, act_idx = (torch.as_tensor(i) for i in self.sampler.indices(rows))
        return {"obs": tree_map(lambda a: a[obs_idx], self.obs), "action": self.action[act_idx]}


def _validation_loss(model: Policy, batches: Batches | None, seed: int) -> float | None:
    if batches is None or len(batches) == 0:
        return None
    rows = np.arange(min(len(batches), 4096))
    # Fixed diffusion noise, so validation losses are comparable across steps.
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        loss, _ = model.compute_loss(batches.take(rows))
    model.train()
    torch.set_rng_state(state)
    return float(loss)


def build_policy(run: BcRunConfig, store: EpisodeStore) -> Policy:
    """A fresh policy whose shapes come from the store's arrays (``obs`` or ``obs.<key>`` ones)."""
    keys = obs_keys(store.keys)
    shapes = (store.step_shape(OBS) if keys == [OBS]
              else obs_shapes({k: store.step_shape(k) for k in keys}))
    overrides = dict(run.policy_config)
    overrides.update(policy_class(run.policy).config_class.observation_fields(shapes),
                     action_dim=int(np.prod(store.step_shape("action"))))
    overrides.setdefault("seed", run.train.seed)
    return make_policy(run.policy, **overrides)


def train_bc(run: BcRunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train ``run.policy`` on ``run.data`` into ``run.out``; returns the run folder.

    Raises:
        FileExistsError: The run folder holds a run and ``resume`` is False.
        ValueError: Malformed data, unknown policy or config values (named in the message).
    """
    policy_class(run.policy)
    out = Path(run.out)
    if (out / "config.json").exists() and not resume:
        raise FileExistsError(f"run folder {str(out)!r} already holds a run; pass --resume to "
                              "continue it or choose a new --out")
    store = EpisodeStore.open(run.data)
    if store.n_episodes < 2 and run.train.val_fraction > 0:
        raise ValueError(f"dataset {run.data!r} has {store.n_episodes} episodes; expected >= 2")
    if "action" not in store.keys:
        raise ValueError(f"dataset {run.data!r} lacks the array 'action'; it has {store.keys}")
    keys = obs_keys(store.keys)
    cfg = run.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    model = build_policy(run, store)
    data = store.load([*keys, "action"])
    model.fit_normalizers(policy_obs(data), data["action"], store.episode_ends)
    c = model.config
    train_eps, val_eps = split_episodes(store.n_episodes, cfg.val_fraction, cfg.seed)
    train_batches = _Batches(data, SequenceSampler(store.episode_ends, train_eps, c.n_obs_steps,
                                                   c.horizon), cfg.seed)
    val_batches = _Batches(data, SequenceSampler(store.episode_ends, val_eps, c.n_obs_steps,
                                                 c.horizon), cfg.seed) if val_eps.size else None
    resolved = {"policy": run.policy, "data": str(run.data), "out": str(out),
                "env_id": store.env_id, "policy_config": dataclasses.asdict(c),
                "train": dataclasses.asdict(cfg), "versions": versions()}
    metadata = {"env_id": store.env_id, "data": str(run.data)}
    return fit(model, train_batches, val_batches, cfg, out, resolved, metadata, resume, progress)


def fit(model: Policy, train_batches: Batches, val_batches: Batches | None, cfg: BcTrainConfig,
        out: Path, resolved: dict[str, Any], metadata: dict[str, Any], resume: bool = False,
        progress: bool = True) -> Path:
    """The optimisation loop shared by behaviour cloning and distillation; returns ``out``.

    ``resolved`` is written as ``config.json``; a resumed run must have the same ``policy_config``.
    """
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
        use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, cfg.steps))
    step = 0
    ckpt_dir = out / "checkpoints"
    if resume and (ckpt := latest_checkpoint(ckpt_dir)) is not None:
        saved = json.loads((out / "config.json").read_text())
        if saved["policy_config"] != json.loads(json.dumps(resolved["policy_config"])):
            raise ValueError(f"run {str(out)!r} was trained with another policy config; "
                             "expected the same config to resume")
        doc = restore(ckpt, model, ema.module, optimizer, scheduler)
        ema.n_averaged.fill_(doc["ema_n_averaged"])
        train_batches.rng.bit_generator.state = doc["batch_rng"]
        step = int(doc["step"])
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", resolved)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    writer = SummaryWriter(str(logs / "tensorboard"))
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {resolved['policy']}", disable=not progress,
               leave=False)
    t_start = time.perf_counter()
    with open(logs / "metrics.jsonl", "a") as log:
        while step < cfg.steps:
            loss, metrics = model.compute_loss(train_batches.draw(cfg.batch_size))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            step += 1
            bar.update()
            row: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                row.update(loss=float(loss.detach()), lr=scheduler.get_last_lr()[0], **metrics)
            if step % cfg.val_every == 0 or step == cfg.steps:
                val = _validation_loss(ema.module, val_batches, cfg.seed)
                if val is not None:
                    row["val_loss"] = val
            if row:
                row.update(step=step, wall_s=round(time.perf_counter() - t_start, 3))
                log.write(json.dumps(row) + "\n")
                log.flush()
                for key, value in row.items():
                    if key not in ("step",):
                        writer.add_scalar(f"train/{key}", value, step)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(ckpt_dir, step, model, ema.module, optimizer, scheduler,
                                {"ema_n_averaged": int(ema.n_averaged),
                                 "batch_rng": train_batches.rng.bit_generator.state},
                                metadata)
    bar.close()
    writer.close()
    return out

"""Distil a trained diffusion policy's sampler into a one-step student (``kinodiff train distill``).

Pairs ``(observation window, noise) -> teacher sample`` are drawn once from the teacher's own
training data in batched calls (``policies.diffusion.distill.teacher_samples``), then the student,
initialized with the teacher's weights, regresses them in the same loop as behaviour cloning
(``agents.train.bc.fit``): EMA, validation on held-out pairs, checkpoints, resume. Optional
on-policy rounds (``agents.train.on_policy``) add pairs on the states the student itself reaches.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.data.episode_store import EpisodeStore
from agents.data.sampler import SequenceSampler
from agents.evaluate import resolve_policy_dir
from agents.rollout.env_factory import EnvFactory
from agents.train.bc import Batches, BcTrainConfig, fit
from agents.train.on_policy import on_policy_round, round_seed
from agents.utils import seed_everything, versions
from policies import load_policy
from policies.diffusion.distill import student_from_teacher, teacher_samples, warm_pairs
from policies.diffusion.policy import DiffusionPolicy


def distill_train_defaults() -> BcTrainConfig:
    """The optimisation defaults of distillation (4000 steps, batch 512, lr 3e-4, no warmup)."""
    # Regression onto fixed targets from a warm start: a gentler peak rate and bigger batches than
    # behaviour cloning from scratch.
    return BcTrainConfig(steps=4000, batch_size=512, lr=3e-4, warmup_steps=0, val_every=1000)


@dataclass(kw_only=True)
class DistillConfig:
    """A distillation run."""

    teacher: str
    """Run folder (its latest checkpoint) or policy folder of a trained diffusion policy."""
    out: str
    """Run folder of the student."""
    data: str = ""
    """Episode store whose observation windows condition the pairs (default: the teacher's data)."""
    pairs: int = 50_000
    """Training pairs drawn from the teacher (2,048 more are held out for validation)."""
    warm_start: float = 0.0
    """0: the student maps pure noise to the teacher's sample. f > 0: the student also learns the
    teacher's warm-started chunk (the last chunk's tail noised after this fraction of the
    teacher's steps -> the teacher's remaining steps) and samples that way: one call per chunk
    that keeps the last chunk's mode (``policies.diffusion.distill.warm_pairs``)."""
    warm_fraction: float = 0.8
    """With ``warm_start``: the share of pairs that are warm pairs (the rest teach the first chunk
    of an episode, from pure noise). Only an episode's first chunk is cold, so most pairs are
    warm: on PointObstacle-v0 (DDIM-10 teacher, 100k pairs, 8,000 steps) 0.8 reached 0.97 / 0.95 /
    0.99 success on three 100-episode seed sets, 0.5 reached 0.94 / 0.96 / 0.98."""
    rounds: int = 0
    """On-policy rounds (DAgger, ``agents.train.on_policy``): each runs the last student in the
    teacher's task, has the teacher label every chunk input it met, and trains a new student on
    all pairs so far. Round r's student is in ``OUT/rounds/r`` (r < rounds), the last one in ``OUT``."""
    round_episodes: int = 200
    """Episodes the student runs in each on-policy round."""
    train: BcTrainConfig = field(default_factory=distill_train_defaults)
    """Optimisation settings (the BC loop's)."""

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise ValueError(f"pairs={self.pairs}; expected >= 1")
        if not 0.0 <= self.warm_start < 1.0:
            raise ValueError(f"warm_start={self.warm_start}; expected 0 <= fraction < 1 (0 = off)")
        if not 0.0 < self.warm_fraction < 1.0:
            raise ValueError(f"warm_fraction={self.warm_fraction}; expected 0 < fraction < 1")
        if self.rounds < 0:
            raise ValueError(f"rounds={self.rounds}; expected >= 0 (0 = no on-policy rounds)")
        if self.round_episodes < 1:
            raise ValueError(f"round_episodes={self.round_episodes}; expected >= 1")


class _PairBatches(Batches):
    """Precomputed (obs, action, noise, teacher_sample) rows."""

    def __init__(self, rows: dict[str, torch.Tensor], seed: int) -> None:
        super().__init__(seed)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows["obs"])

    def take(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The given pair rows, in order."""
        index = torch.as_tensor(rows)
        return {k: v[index] for k, v in self.rows.items()}


VAL_PAIRS = 2048


def _check_resumable(config: DistillConfig, saved: dict) -> None:
    """Refuse to resume a run whose pairs were drawn otherwise.

    The last student's pairs depend on every round before it, so all of these must be the same.
    """
    for key in ("pairs", "warm_start", "warm_fraction", "rounds", "round_episodes"):
        if saved.get(key, 0 if key == "rounds" else getattr(config, key)) != getattr(config, key):
            raise ValueError(f"run {config.out!r} was distilled with {key}={saved.get(key)}; "
                             f"expected the same to resume (got {getattr(config, key)})")


def _demonstration_pairs(teacher: DiffusionPolicy, store: EpisodeStore, data_path: str,
                         config: DistillConfig) -> dict[str, torch.Tensor]:
    """``pairs + VAL_PAIRS`` rows on random windows of the store, labelled by the teacher."""
    c = teacher.config
    if store.step_shape("obs") != (c.obs_dim,) or store.step_shape("action") != (c.action_dim,):
        raise ValueError(f"dataset {data_path!r} has obs {store.step_shape('obs')} and action "
                         f"{store.step_shape('action')}; the teacher expects ({c.obs_dim},) and "
                         f"({c.action_dim},)")
    data = store.load(["obs", "action"])
    sampler = SequenceSampler(store.episode_ends, np.arange(store.n_episodes), c.n_obs_steps, c.horizon)
    rng = np.random.default_rng(config.train.seed)
    obs_idx, act_idx = sampler.indices(rng.integers(0, len(sampler), config.pairs + VAL_PAIRS))
    obs = torch.as_tensor(data["obs"][obs_idx])
    noise = torch.randn((len(obs), c.horizon, c.action_dim),
                        generator=torch.Generator().manual_seed(config.train.seed))
    actions = torch.as_tensor(data["action"][act_idx])
    rows = {"obs": obs, "action": actions, "noise": noise.clone(),
            "timestep": torch.full((len(obs),), c.num_train_timesteps - 1, dtype=torch.long),
            "teacher_sample": torch.empty_like(noise)}
    warm = (torch.as_tensor(rng.random(len(obs)) < config.warm_fraction) if config.warm_start > 0
            else torch.zeros(len(obs), dtype=torch.bool))
    rows["teacher_sample"][~warm] = teacher_samples(teacher, obs[~warm], noise[~warm])
    if warm.any():
        rows["noise"][warm], rows["timestep"][warm], rows["teacher_sample"][warm] = warm_pairs(
            teacher, obs[warm], actions[warm], noise[warm], config.warm_start)
    return rows


def distill(config: DistillConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a one-step student of ``config.teacher`` into ``config.out``; returns the run folder.

    Raises:
        FileExistsError: The run folder holds a run and ``resume`` is False.
        ValueError: The teacher is not a multi-step diffusion policy, or the data do not fit it.
    """
    out = Path(config.out)
    if ((out / "config.json").exists() or (out / "rounds").exists()) and not resume:
        raise FileExistsError(f"run folder {str(out)!r} already holds a run; pass --resume to "
                              "continue it or choose a new --out")
    if resume and (out / "config.json").exists():
        _check_resumable(config, json.loads((out / "config.json").read_text()))
    teacher_dir = resolve_policy_dir(config.teacher)
    teacher, meta = load_policy(teacher_dir)
    if not isinstance(teacher, DiffusionPolicy) or teacher.config.sampler == "onestep":
        raise ValueError(f"teacher {config.teacher!r} is a {teacher.name} policy with sampler "
                         f"{getattr(teacher.config, 'sampler', '-')!r}; expected a multi-step "
                         "diffusion policy")
    teacher.require_vector_observations("distillation")
    data_path = config.data or meta.get("data", "")
    if not data_path:
        raise ValueError(f"teacher {config.teacher!r} records no training data; pass --data")
    cfg = config.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    store = EpisodeStore.open(data_path)
    rows = _demonstration_pairs(teacher, store, data_path, config)
    train_rows = {k: v[:config.pairs] for k, v in rows.items()}
    val_rows = {k: v[config.pairs:] for k, v in rows.items()}
    env_id = meta.get("env_id", store.env_id)
    if config.rounds and not env_id:
        raise ValueError(f"teacher {config.teacher!r} and dataset {data_path!r} record no task; "
                         "expected an env id for on-policy rounds")
    metadata = {"env_id": env_id, "data": str(data_path), "teacher": str(teacher_dir)}
    folders = [out / "rounds" / str(r) for r in range(config.rounds)] + [out]
    history: list[dict] = []
    for r, folder in enumerate(folders):
        if r:  # DAgger: the last student acts; the teacher labels what it met
            last, _ = load_policy(resolve_policy_dir(folders[r - 1]))
            visited, results = on_policy_round(last, teacher, EnvFactory(env_id), config.round_episodes,
                                               round_seed(cfg.seed, r - 1))
            train_rows = {k: torch.cat([v, visited[k]]) for k, v in train_rows.items()}
            coverage = [e.max_coverage for e in results if e.max_coverage is not None]
            history.append({"round": r - 1, "episodes": len(results), "pairs": len(visited["obs"]),
                            "success": float(np.mean([e.success for e in results])),
                            "mean_max_coverage": float(np.mean(coverage)) if coverage else None})
        student = student_from_teacher(teacher, str(teacher_dir), seed=cfg.seed,
                                       warm_start=config.warm_start)
        resolved = {"policy": student.name, "data": str(data_path), "out": str(folder), "env_id": env_id,
                    "teacher": str(teacher_dir), "pairs": config.pairs,
                    "warm_start": config.warm_start, "warm_fraction": config.warm_fraction,
                    "rounds": config.rounds, "round_episodes": config.round_episodes,
                    "on_policy": list(history), "policy_config": dataclasses.asdict(student.config),
                    "train": dataclasses.asdict(cfg), "versions": versions()}
        fit(student, _PairBatches(train_rows, cfg.seed), _PairBatches(val_rows, cfg.seed), cfg,
            folder, resolved, metadata, resume, progress)
    return out

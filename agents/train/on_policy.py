"""On-policy rounds of distillation (DAgger, Ross et al. 2011): where the student goes, the teacher labels.

A student distilled on demonstration states meets states off them once it acts, and there its
warm start's tail is its own last chunk rather than the demonstration's plan. A round runs the
student in its task, records every chunk input it sampled from (``DiffusionPolicy.sampling_log``)
and has the teacher label them (``policies.diffusion.distill.visited_pairs``); the next student
trains on the demonstration pairs and every round's visited pairs together.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import torch

from agents.rollout.actors import PolicyActor
from agents.rollout.worker import EpisodeResult, RolloutWorker
from agents.seeds import episode_seed
from policies.diffusion.distill import visited_pairs
from policies.diffusion.policy import DiffusionPolicy

ROUND_SEED_STRIDE = 1_000_003
"""Round r's episodes use the run seed ``seed + (r + 1) * ROUND_SEED_STRIDE`` (``episode_seed``
mixes it with the episode index), so they are not an evaluation's seed sets 1000, 2000, ..."""


def round_seed(seed: int, round_index: int) -> int:
    """The run seed of the episodes of on-policy round ``round_index`` (0-based)."""
    return int(seed) + (int(round_index) + 1) * ROUND_SEED_STRIDE


def on_policy_round(student: DiffusionPolicy, teacher: DiffusionPolicy,
                    env_factory: Callable[[], gym.Env], episodes: int,
                    seed: int) -> tuple[dict[str, torch.Tensor], list[EpisodeResult]]:
    """Run ``student`` for ``episodes`` seeded episodes and label every chunk input it met.

    Args:
        student: A one-step student (its ``sampling_log`` is used and cleared).
        teacher: Its teacher, which labels the inputs.
        env_factory: Builds the task's env.
        episodes: Episodes to run (>= 1).
        seed: Run seed of the episodes (``episode_seed(seed, i)`` is episode i's reset seed).

    Returns:
        (distillation pair rows, as ``visited_pairs``; the episodes' results, in index order).
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}; expected >= 1")
    student.eval()
    student.sampling_log = []
    worker = RolloutWorker(env_factory, lambda env: PolicyActor(student, "student"))
    try:
        results = worker.run_episodes([(i, episode_seed(seed, i)) for i in range(episodes)])
        chunks = student.sampling_log
    finally:
        student.sampling_log = None
        worker.close()
    return visited_pairs(teacher, chunks), sorted(results, key=lambda r: r.index)

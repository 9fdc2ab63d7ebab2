"""Sampler distillation (Luhman & Luhman 2021): a one-step student learns a teacher's noise -> sample map.

The teacher's deterministic sampler (DDIM, or Euler/Heun for flow matching) is a fixed function of
its initial noise, so ``(observation, noise) -> teacher sample`` pairs are plain regression targets.
Drawing them once, in large batched calls, and regressing a student initialized with the teacher's
own weights costs a quarter of drawing them afresh for every batch, which matters on a CPU: on
PointObstacle-v0 it lifted a one-step student from 0.40 to 0.84+ success at the same wall time
(BENCHMARKS.md, policy-latency).
"""

from __future__ import annotations

import dataclasses

import torch

from policies.diffusion.policy import DiffusionConfig, DiffusionPolicy
from policies.diffusion.sampling_log import SampledChunk
from policies.diffusion.schedule import add_noise
from policies.diffusion.warm import demo_tail

DETERMINISTIC = {"ddpm": "ddim"}
"""A teacher's stochastic sampler -> the deterministic one that shares its network."""


def deterministic_sampler(teacher: DiffusionPolicy) -> str:
    """The sampler whose output is a fixed function of the initial noise (DDPM -> DDIM)."""
    return DETERMINISTIC.get(teacher.config.sampler, teacher.config.sampler)


@torch.no_grad()
def teacher_samples(teacher: DiffusionPolicy, obs: torch.Tensor, noise: torch.Tensor,
                    chunk: int = 4096) -> torch.Tensor:
    """The teacher's deterministic samples for raw observations and given noise.

    Args:
        teacher: A trained diffusion policy (not a one-step student).
        obs: [N, To, Do] raw observations.
        noise: [N, H, Da] initial noise.
        chunk: Rows per batched call (bounds memory; the loop is over chunks, not rows).

    Returns:
        [N, H, Da] normalized chunks, the student's regression targets.
    """
    if teacher.config.sampler == "onestep":
        raise ValueError("the teacher is a one-step student; expected a multi-step diffusion policy")
    if obs.shape[0] != noise.shape[0]:
        raise ValueError(f"obs has {obs.shape[0]} rows and noise {noise.shape[0]}; expected equal")
    return deterministic_chunks(teacher, teacher.obs_normalizer.normalize(obs), noise, chunk)


@torch.no_grad()
def deterministic_chunks(teacher: DiffusionPolicy, obs: torch.Tensor, noise: torch.Tensor,
                         chunk: int = 4096) -> torch.Tensor:
    """``teacher_samples`` for normalized observations [N, To, Do] (no checks)."""
    was_training = teacher.training
    teacher.eval()
    sampler = deterministic_sampler(teacher)
    out = torch.cat([teacher.predict_normalized_chunk(obs[i:i + chunk], noise=noise[i:i + chunk],
                                                      sampler=sampler)
                     for i in range(0, obs.shape[0], chunk)])
    teacher.train(was_training)
    return out


@torch.no_grad()
def warm_pairs(teacher: DiffusionPolicy, obs: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
               warm_start: float, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs that teach a student the teacher's warm-started chunk in one call.

    A warm-started chunk (``DiffusionConfig.warm_start``) begins at the last chunk's tail noised to
    the level ``x_t`` after a fraction of the teacher's steps; from there the teacher's remaining
    deterministic steps are a fixed function of ``(observation, x_t)``, regressed like Luhman &
    Luhman's noise -> sample map. The tail already holds the mode the last chunk chose, so this map
    is close to unimodal and a one-step student fits it far better than the map from pure noise,
    whose averages between modes stop the robot in front of an obstacle. The demonstration's own
    plan stands in for the last chunk (``demo_tail``).

    Args:
        teacher: A trained multi-step diffusion policy (objective ddpm).
        obs: [N, To, Do] raw observations.
        actions: [N, H, Da] raw demonstrated actions from the observation's last step.
        noise: [N, H, Da] the noise added to the tail.
        warm_start: Fraction of the teacher's K steps skipped (as ``DiffusionConfig.warm_start``).
        chunk: Rows per batched call.

    Returns:
        ``(x_t [N, H, Da], timestep [N], target [N, H, Da])``: the student's input, its timestep
        and the teacher's chunk from ``x_t`` (normalized).
    """
    c = teacher.config
    if c.objective != "ddpm":
        raise ValueError(f"teacher objective {c.objective!r} has no warm one-step student; expected 'ddpm'")
    probe = dataclasses.replace(c, warm_start=warm_start)  # validates the fraction against K
    start = int(round(probe.warm_start * c.num_inference_steps))
    tail = demo_tail(teacher.normalized_batch({"obs": obs, "action": actions})[1], c.n_action_steps,
                     c.warm_pad)
    return warm_targets(teacher, teacher.obs_normalizer.normalize(obs), tail, noise, start, chunk)


@torch.no_grad()
def warm_targets(teacher: DiffusionPolicy, obs: torch.Tensor, tail: torch.Tensor, noise: torch.Tensor,
                 start: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's input ``x_t`` and timestep, and the teacher's chunk, for tails warm-started at ``start``.

    Args:
        teacher: A trained multi-step diffusion policy (objective ddpm).
        obs: [N, To, Do] normalized observations.
        tail: [N, H, Da] the last chunks' tails (normalized, from each chunk's own origin).
        noise: [N, H, Da] the noise added to the tail.
        start: Steps of the teacher's K-step schedule skipped.
        chunk: Rows per batched call.

    Returns:
        ``(x_t, timestep [N], target)`` as ``warm_pairs``.
    """
    sampler = deterministic_sampler(teacher)
    step = teacher._steps(teacher.config.num_inference_steps, sampler)[start]
    timestep = torch.full((obs.shape[0],), step.t, dtype=torch.long)
    # The forward process the teacher's own warm start applies to the tail (``_denoise``).
    x_t = add_noise(tail, noise, timestep, teacher.alphas_cumprod)
    was_training = teacher.training
    teacher.eval()
    target = torch.cat([teacher._denoise(noise[i:i + chunk], teacher.encode(obs[i:i + chunk]), sampler,
                                         start, tail[i:i + chunk])
                        for i in range(0, obs.shape[0], chunk)])
    teacher.train(was_training)
    return x_t, timestep, target


@torch.no_grad()
def visited_pairs(teacher: DiffusionPolicy, chunks: list[SampledChunk]) -> dict[str, torch.Tensor]:
    """Pairs on the inputs a student met while acting (DAgger, Ross et al. 2011).

    Behaviour cloning and distillation from demonstrations train on the teacher's state
    distribution; the student's own small errors take it elsewhere, and there its warm start's
    tail is its own last chunk. Each recorded chunk input is labelled with the teacher's
    deterministic sample from the same noise (and tail). On PushT-v0 a few rounds moved a warm
    one-step student from 0.69-0.71 to 0.71-0.74 success over 500 episodes (BENCHMARKS.md): some
    of its gap to the teacher (0.79) is drift, not all of it.

    Args:
        teacher: The student's teacher (the normalizers they share).
        chunks: A student's ``sampling_log`` (vector observations).

    Returns:
        Rows as distillation's pairs: ``obs`` [N, To, Do] raw, ``action`` [N, H, Da] the teacher's
        chunk in raw env actions, ``noise`` the student's input (a warm chunk's noised tail),
        ``timestep`` [N] and ``teacher_sample`` [N, H, Da] normalized.
    """
    if not chunks:
        raise ValueError("no recorded chunks; expected a sampling_log with at least one chunk")
    if isinstance(chunks[0].obs, dict):
        raise ValueError("recorded observations are dicts; expected vector observations")
    groups: dict[int | None, list[SampledChunk]] = {}  # cold (None), or warm from step ``start``
    for record in chunks:
        groups.setdefault(None if record.tail is None else record.start, []).append(record)
    parts = []
    for start, group in groups.items():
        obs, noise = torch.cat([r.obs for r in group]), torch.cat([r.noise for r in group])
        if start is None:
            timestep = torch.full((len(obs),), teacher.config.num_train_timesteps - 1, dtype=torch.long)
            parts.append((obs, noise, timestep, deterministic_chunks(teacher, obs, noise)))
        else:
            parts.append((obs, *warm_targets(teacher, obs, torch.cat([r.tail for r in group]), noise, start)))
    obs, noise, timestep, target = (torch.cat(p) for p in zip(*parts, strict=True))
    raw = teacher.obs_normalizer.unnormalize(obs)
    action = teacher.absolute_actions(teacher.action_normalizer.unnormalize(target), raw)
    return {"obs": raw, "action": action, "noise": noise, "timestep": timestep, "teacher_sample": target}


def student_from_teacher(teacher: DiffusionPolicy, teacher_dir: str, **overrides) -> DiffusionPolicy:
    """A one-step student with the teacher's shapes, normalizers and (warm-start) denoiser weights.

    Starting from the teacher's weights (as progressive distillation does, Salimans & Ho 2022) gives
    the student the teacher's features for free; it only has to learn the jump from noise.
    """
    fields = dataclasses.asdict(teacher.config)
    fields.update(sampler="onestep", teacher=str(teacher_dir), warm_start=0.0, adaptive_tol=0.0)
    fields.update(overrides)
    student = DiffusionPolicy(DiffusionConfig(**fields))
    student.obs_normalizer.load_state_dict(teacher.obs_normalizer.state_dict())
    student.action_normalizer.load_state_dict(teacher.action_normalizer.state_dict())
    theirs, ours = teacher.denoiser.state_dict(), student.denoiser.state_dict()
    if theirs.keys() == ours.keys() and all(theirs[k].shape == ours[k].shape for k in ours):
        student.denoiser.load_state_dict(theirs)
    return student

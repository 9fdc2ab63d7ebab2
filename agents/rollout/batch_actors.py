"""Actors over a batch of env slots: one network call per control step for every robot of every env.

A rollout worker holds M envs (slots). Its batch actor chooses the actions of all the slots that are
running an episode, at once:

- :class:`PolicyBatchActor` keeps each slot's observation history and action queue itself and
  serves every slot whose queue ran dry with ONE ``predict_action_chunk`` call on the stacked
  batch ``[sum over those slots of N robots, To, Do]``. A multi-robot env's flat observation
  ``(N * Do,)`` is split into N rows of the policy's ``Do`` (the shared policy serves every robot).
- :class:`PerSlotBatchActor` runs one single-env :class:`~agents.rollout.actors.Actor` per slot
  (experts keep per-episode state such as the chosen mode, so each slot needs its own).
- :class:`Sb3BatchActor` stacks the slots for one ``model.predict`` call.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np

from policies import Policy


class BatchActor(Protocol):
    """Chooses the actions of several env slots in one call."""

    source: str

    def reset(self, slot: int, episode_index: int, seed: int) -> None:
        """Start an episode in ``slot``."""
        ...

    def act(self, obs: Sequence[np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """Actions ``[B, Da]`` for the B observations of ``slots``."""
        ...

    def pop_latencies(self, slot: int) -> list[float]:
        """Seconds of each network call ``slot`` took part in since its last pop."""
        ...


class PerSlotBatchActor:
    """One single-env actor per slot, each built by ``actor_factory(env)``."""

    def __init__(self, actor_factory: Callable, envs: Sequence[gym.Env]) -> None:
        self.actors = [actor_factory(env) for env in envs]
        self.source = self.actors[0].source

    def reset(self, slot: int, episode_index: int, seed: int) -> None:
        """Reset the slot's actor."""
        self.actors[slot].reset(episode_index, seed)
        self.actors[slot].pop_latencies()

    def act(self, obs: Sequence[np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """Each slot's actor on its own observation."""
        return np.stack([np.asarray(self.actors[s].act(o), dtype=np.float32)
                         for o, s in zip(obs, slots, strict=True)])

    def pop_latencies(self, slot: int) -> list[float]:
        """The slot actor's latencies."""
        return self.actors[slot].pop_latencies()


class Sb3BatchActor:
    """A deterministic stable-baselines3 model over all slots in one ``predict`` call."""

    def __init__(self, model, source: str, normalize=None) -> None:
        # normalize: obs -> obs with the VecNormalize statistics the model was trained under.
        self.model, self.source, self.normalize = model, source, normalize

    def reset(self, slot: int, episode_index: int, seed: int) -> None:
        """Deterministic models keep no episode state."""

    def act(self, obs: Sequence[np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """One batched ``predict``."""
        batch = np.stack(obs)
        if self.normalize is not None:
            batch = self.normalize(batch)
        action, _ = self.model.predict(batch, deterministic=True)
        return np.asarray(action, dtype=np.float32)

    def pop_latencies(self, slot: int) -> list[float]:
        """Experts are not timed."""
        return []


def robots_per_env(policy_obs_dim: int, policy_action_dim: int, env: gym.Env) -> int:
    """N, the robots of ``env`` one policy serves: the env's flat sizes are N times the policy's.

    A Dict observation (images) is one robot's; only its action size is checked here.
    """
    act_dim = int(np.prod(env.action_space.shape))
    if isinstance(env.observation_space, gym.spaces.Dict):
        if act_dim != policy_action_dim:
            raise ValueError(f"policy with action_dim={policy_action_dim} cannot serve an env with "
                             f"action_dim={act_dim}; expected the same")
        return 1
    obs_dim = int(np.prod(env.observation_space.shape))
    n, rest = divmod(obs_dim, policy_obs_dim)
    if rest or n < 1 or act_dim != n * policy_action_dim:
        raise ValueError(
            f"policy with obs_dim={policy_obs_dim}, action_dim={policy_action_dim} cannot serve an "
            f"env with obs_dim={obs_dim}, action_dim={act_dim}; expected N robots of both")
    return n


class PolicyBatchActor:
    """One shared policy over every robot of every slot: at most one network call per step.

    Receding-horizon chunk execution per slot: a slot predicts a chunk of Ta actions when its queue
    is empty, and all the slots that need one in the same step share the call. Each slot starts
    from its own padded history, so slots resetting at different times stay independent except for
    the policy's shared sampling generator, which is reseeded with each episode's seed when the
    episode starts (with one slot, an episode is therefore a function of its seed alone).

    Args:
        policy: The policy (its own ``select_action`` state is not used).
        n_slots: Env slots M.
        n_robots: Robots N per env (1 for single-robot tasks).
        source: Label of the episodes it produces.
    """

    def __init__(self, policy: Policy, n_slots: int, n_robots: int, source: str) -> None:
        c = policy.config
        if c.temporal_ensemble > 0 or getattr(c, "warm_start", 0.0) > 0:
            raise ValueError("PolicyBatchActor runs receding-horizon chunks only; expected "
                             "temporal_ensemble=0 and warm_start=0 (use PerSlotBatchActor)")
        self.policy, self.n_robots, self.source = policy, n_robots, source
        self._to, self._do = c.n_obs_steps, c.obs_dim
        self._history = [deque(maxlen=self._to) for _ in range(n_slots)]
        self._queue: list[deque[np.ndarray]] = [deque() for _ in range(n_slots)]
        self._latencies: list[list[float]] = [[] for _ in range(n_slots)]
        self.calls = 0
        """Network calls made (the multi-robot test counts them)."""

    def reset(self, slot: int, episode_index: int, seed: int) -> None:
        """Clear the slot's history and queue; reseed the sampler with the episode seed."""
        self._history[slot].clear()
        self._queue[slot].clear()
        self._latencies[slot] = []
        self.policy.generator.manual_seed(int(seed))

    def act(self, obs: Sequence[np.ndarray], slots: Sequence[int]) -> np.ndarray:
        """Actions ``[B, N * Da]`` for ``obs`` ``[B, N * Do]``; one network call at most."""
        for o, s in zip(obs, slots, strict=True):
            # A dict observation (images) is one robot's: each value gains a robot axis of 1.
            rows = ({k: np.asarray(v)[None] for k, v in o.items()} if isinstance(o, Mapping)
                    else np.asarray(o, dtype=np.float32).reshape(self.n_robots, self._do))
            hist = self._history[s]
            hist.extend([rows] * (self._to if not hist else 1))  # pad a new episode's history
        need = [s for s in slots if not self._queue[s]]
        if need:
            # [len(need) * N, To, ...]: slot-major, robots within a slot, oldest step first.
            def window(key=None):
                frames = [[h if key is None else h[key] for h in self._history[s]] for s in need]
                stacked = np.stack([np.stack(f, axis=1) for f in frames])
                return stacked.reshape(len(need) * self.n_robots, self._to, *stacked.shape[3:])

            first = self._history[need[0]][0]
            batch = ({k: window(k) for k in first} if isinstance(first, Mapping) else window())
            t0 = time.perf_counter()
            chunk = self.policy.predict_action_chunk(batch).numpy()  # [B', Ta, Da]
            dt = time.perf_counter() - t0
            self.calls += 1
            chunk = chunk.reshape(len(need), self.n_robots, *chunk.shape[1:])
            for k, s in enumerate(need):
                self._queue[s].extend(chunk[k].transpose(1, 0, 2))  # Ta entries of [N, Da]
                self._latencies[s].append(dt)
        return np.stack([self._queue[s].popleft().reshape(-1) for s in slots])

    def pop_latencies(self, slot: int) -> list[float]:
        """Latencies of the calls the slot took part in."""
        out, self._latencies[slot] = self._latencies[slot], []
        return out

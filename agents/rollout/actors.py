"""What acts in a rollout: a task expert or a saved policy, both behind one small protocol.

Every factory here also has ``batch(envs)``, which builds the batch actor a rollout worker uses for
all its env slots (``agents.rollout.batch_actors``).
"""

from __future__ import annotations

import time
from typing import Protocol

import gymnasium as gym
import numpy as np

from agents.rollout.batch_actors import (
    PerSlotBatchActor,
    PolicyBatchActor,
    Sb3BatchActor,
    robots_per_env,
)
from agents.rollout.guarded_actor import GuardedActor
from envs import make_expert
from policies import Policy, load_policy


class Actor(Protocol):
    """Chooses actions for one env, episode by episode."""

    source: str

    def reset(self, episode_index: int, seed: int) -> None:
        """Start an episode."""
        ...

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Return one action."""
        ...

    def pop_latencies(self) -> list[float]:
        """Seconds spent in each network call since the last pop (empty for experts)."""
        ...


class ExpertActor:
    """Wraps a task expert (scripted, MPC, ...)."""

    def __init__(self, env_id: str, name: str, env: gym.Env) -> None:
        self.expert = make_expert(env_id, name, env)
        self.source = f"expert:{name}"

    def reset(self, episode_index: int, seed: int) -> None:
        """Reset the expert; ``episode_index`` balances multi-modal experts."""
        self.expert.reset(episode_index, np.random.default_rng(seed))

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The expert's action."""
        return self.expert.act(obs)

    def pop_latencies(self) -> list[float]:
        """Experts are not timed."""
        return []


class PolicyActor:
    """Runs a policy through ``select_action`` and times each chunk prediction."""

    def __init__(self, policy: Policy, source: str = "policy") -> None:
        self.policy = policy
        self.source = source
        self._latencies: list[float] = []

    def reset(self, episode_index: int, seed: int) -> None:
        """Clear the policy's queues and reseed its sampler with the episode seed."""
        self.policy.reset(seed=seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One action; the time of a call that runs the network is recorded."""
        if self.policy.chunk_pending:
            t0 = time.perf_counter()
            action = self.policy.select_action(obs)
            self._latencies.append(time.perf_counter() - t0)
            return action
        return self.policy.select_action(obs)

    def pop_latencies(self) -> list[float]:
        """Chunk latencies since the last pop, seconds."""
        out, self._latencies = self._latencies, []
        return out


class Sb3ExpertActor:
    """A trained stable-baselines3 model acting deterministically (``--expert sb3:PATH``).

    The zip is loaded without unpickling (``agents.train.sb3_safe``): SB3 would otherwise run the
    cloudpickled entries of its ``data`` file, whoever wrote them.
    """

    ALGOS = ("PPO", "SAC", "TD3", "A2C", "DDPG")

    def __init__(self, path: str) -> None:
        import json
        import zipfile
        from pathlib import Path

        import stable_baselines3

        algo, _, file = path.rpartition(":") if path.count(":") else ("", "", path)
        if not Path(file).is_file() and Path(file + ".zip").is_file():
            file += ".zip"
        if not Path(file).is_file():
            raise FileNotFoundError(f"SB3 model {file!r} not found; expected a .zip saved by SB3")
        if not algo:
            # The policy class's module names the algorithm; actor-critic policies are PPO's. The
            # entry is read as plain text; load_sb3 below refuses a module outside SB3.
            try:
                entry = json.loads(zipfile.ZipFile(file).read("data"))["policy_class"]
                parts = str(entry.get("__module__", "")).split(".")
            except (zipfile.BadZipFile, KeyError, ValueError, AttributeError) as exc:
                raise ValueError(f"SB3 model {file!r} is not an SB3 zip ({exc})") from None
            algo = parts[1] if len(parts) > 2 and parts[0] == "stable_baselines3" else "ppo"
            algo = "ppo" if algo == "common" else algo
        if algo.upper() not in self.ALGOS:
            raise ValueError(f"SB3 algorithm {algo!r} is not supported; expected one of {self.ALGOS}")
        from agents.train.sb3_safe import load_sb3

        self.model = load_sb3(getattr(stable_baselines3, algo.upper()), file)
        self.source = f"sb3:{Path(file).name}"
        from agents.train.rl import load_obs_stats

        # A model trained under VecNormalize acts on normalized observations (stats saved beside it).
        self.normalize = load_obs_stats(file)

    def reset(self, episode_index: int, seed: int) -> None:
        """Deterministic models keep no episode state."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The model's deterministic action."""
        if self.normalize is not None:
            obs = self.normalize(obs)
        action, _ = self.model.predict(obs, deterministic=True)
        return action

    def pop_latencies(self) -> list[float]:
        """Experts are not timed."""
        return []


def expert_actor_factory(env_id: str, name: str):
    """A picklable factory ``env -> Actor`` for a task expert or ``sb3:[ALGO:]PATH``."""
    if name.startswith("sb3:"):
        return _Sb3Factory(name[4:])
    return _ExpertFactory(env_id, name)


class _Sb3Factory:
    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, env: gym.Env) -> Sb3ExpertActor:
        return Sb3ExpertActor(self.path)

    def batch(self, envs: list[gym.Env]) -> Sb3BatchActor:
        """One model, one ``predict`` over every slot."""
        actor = Sb3ExpertActor(self.path)
        return Sb3BatchActor(actor.model, actor.source, actor.normalize)


class _ExpertFactory:
    def __init__(self, env_id: str, name: str) -> None:
        self.env_id, self.name = env_id, name

    def __call__(self, env: gym.Env) -> ExpertActor:
        return ExpertActor(self.env_id, self.name, env)

    def batch(self, envs: list[gym.Env]) -> PerSlotBatchActor:
        """One expert per slot: experts keep per-episode state (the chosen mode, detours)."""
        return PerSlotBatchActor(self, envs)


class PolicyActorFactory:
    """A picklable factory ``env -> PolicyActor`` that loads a saved policy in each worker."""

    def __init__(self, policy_dir: str, source: str, threads: int = 1,
                 constraint_method: str = "none") -> None:
        self.policy_dir, self.source, self.threads = policy_dir, source, threads
        self.constraint_method = constraint_method

    def __call__(self, env: gym.Env) -> PolicyActor | GuardedActor:
        """Load the policy (with ``threads`` torch threads) for this worker.

        With a constraint method, the policy enforces the task's ``constraint_spec`` as it samples
        and its actions pass the runtime dynamics guard (``GuardedActor``) before the env steps them.
        """
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        policy, _ = load_policy(self.policy_dir)
        if self.constraint_method != "none":
            policy.set_constraints(env.unwrapped.constraint_spec.to_dict(), method=self.constraint_method)
            return GuardedActor(PolicyActor(policy, self.source), env)
        return PolicyActor(policy, self.source)

    def batch(self, envs: list[gym.Env]) -> PolicyBatchActor | PerSlotBatchActor:
        """One policy copy serving every robot of every slot in one call per step.

        Temporal ensembling and warm starts keep batch-wide state inside the policy, so those run
        one policy copy per slot instead.
        """
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        policy, _ = load_policy(self.policy_dir)
        c = policy.config
        # Constraint enforcement keeps per-episode state too (the last executed action).
        if c.temporal_ensemble > 0 or getattr(c, "warm_start", 0.0) > 0 or self.constraint_method != "none":
            return PerSlotBatchActor(self, envs)
        n = robots_per_env(c.obs_dim, c.action_dim, envs[0])
        return PolicyBatchActor(policy, len(envs), n, self.source)

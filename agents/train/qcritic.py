"""``kinodiff train qcritic``: fit the critic of Q-guided sampling from rollouts of the base policy.

The critic regresses Monte-Carlo returns of executed chunks, ``Q(s, a) ~ sum_j gamma^j r_j`` over
the chunk decisions of the base policy's own (stochastic) episodes: the Q-function of the base
policy, so picking the best of K proposals is one step of policy improvement (Brandfonbrener et
al. 2021, "Offline RL without off-policy evaluation"). The run folder holds ``config.json`` and
``critic/`` (safetensors + JSON).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.train.sb3_common import ChunkedEnvFactory, load_base_policy, make_vec_env
from agents.utils import seed_everything, versions, write_json_atomic
from policies import Policy
from policies.critic import ChunkCritic, ChunkCriticConfig, save_critic
from policies.diffusion.relative import require_absolute_actions


@dataclass(kw_only=True)
class QCriticConfig:
    """Fitting a chunk critic for Q-guided sampling."""

    base: str
    """Run folder or policy folder of the proposal policy."""
    env: str = ""
    """Task id (default: the base policy's)."""
    out: str = "runs/qcritic"
    """Run folder."""
    env_steps: int = 50_000
    """Environment steps of base-policy rollouts to learn from."""
    n_envs: int = 16
    """Parallel envs (one batched policy call per decision)."""
    gamma: float = 0.99
    """Discount per chunk decision."""
    steps: int = 3_000
    """Gradient steps."""
    batch_size: int = 256
    """Minibatch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Critic MLP widths."""
    seed: int = 0
    """Seed of the envs, the policy's noise and the critic."""
    threads: int = 1
    """torch CPU threads."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments."""

    def __post_init__(self) -> None:
        for name in ("env_steps", "n_envs", "steps", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma}; expected 0 < gamma <= 1")
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)


def run_chunked(policy: Policy, venv, episodes: int | None = None, env_steps: int | None = None,
                gamma: float = 0.99) -> dict[str, Any]:
    """Run a chunked policy batched over a chunked vec env until enough episodes or steps.

    Returns:
        dict with ``cond`` [N, To*Do] and ``chunk`` [N, Ta, Da] (normalized), ``ret`` [N]
        (discounted return-to-go per decision, finished episodes only), ``success`` and
        ``returns`` per finished episode, and ``env_steps``.
    """
    obs = venv.reset()
    n = venv.num_envs
    traj: list[list[tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in range(n)]
    out: dict[str, Any] = {"cond": [], "chunk": [], "ret": [], "success": [], "returns": [],
                           "env_steps": 0}
    while True:
        if episodes is not None and len(out["success"]) >= episodes:
            break
        if env_steps is not None and out["env_steps"] >= env_steps:
            break
        with torch.no_grad():
            raw = policy.predict_action_chunk(torch.as_tensor(obs, dtype=torch.float32))
            cond = policy.obs_normalizer.normalize(torch.as_tensor(obs, dtype=torch.float32)).flatten(1)
            chunk = policy.action_normalizer.normalize(raw)
        next_obs, rewards, dones, infos = venv.step(raw.numpy())
        for i in range(n):
            traj[i].append((cond[i].numpy(), chunk[i].numpy(), float(rewards[i])))
            out["env_steps"] += int(infos[i].get("executed_steps", 1))
            if dones[i]:
                g, rets = 0.0, []
                for _, _, r in reversed(traj[i]):
                    g = r + gamma * g
                    rets.append(g)
                for (c, a, _), ret in zip(traj[i], reversed(rets), strict=True):
                    out["cond"].append(c)
                    out["chunk"].append(a)
                    out["ret"].append(ret)
                out["success"].append(bool(infos[i].get("is_success", False)))
                out["returns"].append(float(infos[i]["episode"]["r"]) if "episode" in infos[i] else rets[-1])
                traj[i] = []
        obs = next_obs
    for key in ("cond", "chunk", "ret"):
        out[key] = np.asarray(out[key], dtype=np.float32)
    return out


def fit_critic(data: dict[str, np.ndarray], config: QCriticConfig) -> ChunkCritic:
    """Regress ``ret`` on (``cond``, ``chunk``) with Adam and MSE."""
    cond, chunk, ret = (torch.from_numpy(data[k]) for k in ("cond", "chunk", "ret"))
    if len(ret) == 0:
        raise ValueError("no finished episode in the rollouts; expected a larger env_steps budget")
    critic = ChunkCritic(ChunkCriticConfig(cond_dim=cond.shape[1], chunk_dim=chunk[0].numel(),
                                           hidden_dims=config.hidden_dims))
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    for _ in range(config.steps):
        rows = torch.from_numpy(rng.integers(0, len(ret), config.batch_size))
        loss = torch.nn.functional.mse_loss(critic(cond[rows], chunk[rows]), ret[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return critic.eval()


def train_qcritic(config: QCriticConfig, progress: bool = True) -> Path:
    """Roll out the base policy, fit the critic, save it into ``config.out/critic``."""
    out = Path(config.out)
    if (out / "config.json").exists():
        raise FileExistsError(f"run folder {str(out)!r} already holds a run; choose a new --out")
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    base, meta, base_path = load_base_policy(config.base)
    base.require_vector_observations("the Q-critic")
    require_absolute_actions(base, "the Q-critic")
    env_id = config.env or meta.get("env_id", "")
    if not env_id:
        raise ValueError(f"base policy {str(base_path)!r} records no env id; pass --env")
    c = base.config
    base.reset(seed=config.seed)
    venv = make_vec_env(ChunkedEnvFactory(env_id, c.n_obs_steps, c.n_action_steps, dict(config.env_kwargs)),
                        config.n_envs, config.seed)
    data = run_chunked(base, venv, env_steps=config.env_steps, gamma=config.gamma)
    venv.close()
    critic = fit_critic(data, config)
    summary = {"rollout_env_steps": data["env_steps"], "episodes": len(data["success"]),
               "base_success_rate": float(np.mean(data["success"])), "decisions": len(data["ret"])}
    save_critic(critic, out / "critic", metadata={"env_id": env_id, "base_policy": str(base_path), **summary})
    write_json_atomic(out / "config.json", {"trainer": "qcritic", **dataclasses.asdict(config),
                                            "env_id": env_id, "base_policy": str(base_path),
                                            **summary, "versions": versions()})
    (out / "logs").mkdir(exist_ok=True)
    write_json_atomic(out / "logs" / "summary.json", summary)
    return out

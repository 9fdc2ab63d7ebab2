"""Export a trained policy to one ONNX graph plus a JSON sidecar.

The graph holds the whole policy: observation normalization, the fixed-step sampler unrolled
(DDIM, Euler, Heun or the one-step student; a single forward pass for MLP-BC), unnormalization and
clipping to the task's action limits. The initial noise is a graph input, so a deployed policy is
reproducible bit for bit from its inputs (and the runtime owns the random numbers).

Inputs ``obs`` [B, To, Do] (raw, oldest first) and, for sampling policies, ``noise`` [B, H, Da]
(standard normal); output ``actions`` [B, H, Da] (raw, clipped). Execute the first Ta (receding
horizon); the tail is a fallback when the next chunk is late.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.deploy.sidecar import FORMAT, VERSION, file_sha256, sidecar_path
from agents.evaluate import check_policy_fits_env, resolve_policy_dir
from agents.utils import write_json_atomic
from envs import make_env
from policies import Policy, load_policy

# Inference settings that may be changed at export (the weights do not depend on them).
INFERENCE_FIELDS = ("sampler", "num_inference_steps", "clip_sample")
FORMATS = ("onnx",)


@dataclass(kw_only=True)
class ExportConfig:
    """Export of a saved policy."""

    run: str
    """Run folder (its latest checkpoint) or a saved policy folder."""
    out: str
    """Path of the ``.onnx`` file; the sidecar is written beside it as ``<out>.json``."""
    format: str = "onnx"
    """Export format (only ``onnx``)."""
    env: str | None = None
    """Task whose action limits and control rate go into the graph and sidecar (default: the task
    the policy was trained on)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Inference settings to change before export (``sampler``, ``num_inference_steps``,
    ``clip_sample``), e.g. ``sampler=ddim`` for a policy trained with DDPM sampling."""
    opset: int = 17
    """ONNX opset."""
    check_inputs: int = 64
    """Random inputs on which the exported graph is compared with torch right after export."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format!r} is not supported; expected one of {FORMATS}")
        if not str(self.out).endswith(".onnx"):
            raise ValueError(f"out={self.out!r}; expected a path ending in .onnx")
        bad = sorted(set(self.overrides) - set(INFERENCE_FIELDS))
        if bad:
            raise ValueError(f"overrides {bad} cannot change at export; expected a subset of "
                             f"{list(INFERENCE_FIELDS)}")
        if self.opset < 14:
            raise ValueError(f"opset={self.opset}; expected >= 14")


def _check_common(policy: Policy) -> None:
    if policy.config.temporal_ensemble > 0:
        raise ValueError(f"temporal_ensemble={policy.config.temporal_ensemble}: the exported runtime "
                         "executes receding-horizon chunks; expected temporal_ensemble=0")


def _check_diffusion(policy: Policy) -> None:
    _check_common(policy)
    c = policy.config
    fixed = ("ddim", "euler", "heun", "onestep")
    if c.sampler not in fixed:
        raise ValueError(f"sampler={c.sampler!r} draws fresh noise at every step; export needs a fixed "
                         f"noise input, expected one of {fixed} (e.g. --set sampler=ddim)")
    if c.adaptive_tol > 0:
        raise ValueError(f"adaptive_tol={c.adaptive_tol} stops on the data; a fixed graph needs "
                         "adaptive_tol=0")
    if c.warm_start > 0:
        raise ValueError(f"warm_start={c.warm_start} carries state between chunks; expected 0")


@dataclass(frozen=True)
class ChunkExport:
    """How one policy type becomes a graph."""

    uses_noise: bool
    """The graph takes a ``noise`` [B, H, Da] input."""
    check: Callable[[Policy], None]
    """Raises ValueError when the policy's settings cannot be a fixed graph."""
    chunk: Callable[[Policy, torch.Tensor, torch.Tensor], torch.Tensor]
    """(policy, normalized obs [B, To, Do], noise [B, H, Da]) -> normalized chunk [B, H, Da]."""


EXPORTERS: dict[str, ChunkExport] = {
    # Tracing unrolls the sampler's Python loop: its coefficients become graph constants.
    "diffusion": ChunkExport(True, _check_diffusion,
                             lambda p, obs, noise: p.predict_normalized_chunk(obs, noise=noise)),
    "mlp": ChunkExport(False, _check_common, lambda p, obs, noise: p.predict_normalized_chunk(obs)),
}


def chunk_exporter(policy: Policy) -> ChunkExport:
    """The exporter of ``policy``'s type, or a ValueError naming the exportable ones."""
    if policy.name not in EXPORTERS:
        raise ValueError(f"policy {policy.name!r} has no ONNX export; expected one of {sorted(EXPORTERS)}")
    return EXPORTERS[policy.name]


class PolicyGraph(nn.Module):
    """The whole policy as one module: normalize -> sample -> unnormalize -> clip.

    Args:
        policy: A loaded policy (eval mode).
        low: (Da,) lowest action.
        high: (Da,) highest action.
    """

    def __init__(self, policy: Policy, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.policy = policy
        self.exporter = chunk_exporter(policy)
        self.exporter.check(policy)
        self.register_buffer("low", torch.as_tensor(np.asarray(low, dtype=np.float32)))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, dtype=np.float32)))

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Map obs [B, To, Do] raw and noise [B, H, Da] to actions [B, H, Da] raw, inside [low, high]."""
        p = self.policy
        chunk = self.exporter.chunk(p, p.obs_normalizer.normalize(obs), noise)
        actions = p.absolute_actions(p.action_normalizer.unnormalize(chunk), obs)
        return torch.minimum(torch.maximum(actions, self.low), self.high)


def _task_facts(env_id: str) -> dict[str, Any]:
    env = make_env(env_id)
    try:
        inner = env.unwrapped
        spec = getattr(inner, "constraint_spec", None)
        rate = getattr(spec, "action_rate_limit", None)
        dt = float(getattr(inner, "dt", 1.0 / env.metadata.get("render_fps", 20)))
        return {
            "env_id": env_id,
            "obs_shape": list(env.observation_space.shape),
            "obs_low": np.asarray(env.observation_space.low, dtype=np.float64).ravel().tolist(),
            "obs_high": np.asarray(env.observation_space.high, dtype=np.float64).ravel().tolist(),
            "act_low": np.asarray(env.action_space.low, dtype=np.float64).ravel(),
            "act_high": np.asarray(env.action_space.high, dtype=np.float64).ravel(),
            "rate_limit": None if rate is None else np.asarray(rate, dtype=np.float64).tolist(),
            "actuators": list(getattr(spec, "actuator_names", ())) or None,
            "dt": dt,
        }
    finally:
        env.close()


def _sample_inputs(policy: Policy, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations spread over the training range (raw units) and standard-normal noise."""
    c = policy.config
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, c.n_obs_steps, c.obs_dim, generator=g) * 2 - 1
    obs = policy.obs_normalizer.unnormalize(u * 1.2)  # a little outside the data range too
    return obs, torch.randn(batch, c.horizon, c.action_dim, generator=g)


def _max_diff(graph: PolicyGraph, onnx_path: Path, batch: int) -> float:
    import onnxruntime as ort

    obs, noise = _sample_inputs(graph.policy, batch, seed=1)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"obs": obs.numpy()}
    if graph.exporter.uses_noise:
        feeds["noise"] = noise.numpy()
    (got,) = session.run(["actions"], feeds)
    with torch.no_grad():
        want = graph(obs, noise).numpy()
    return float(np.abs(got - want).max())


def export_policy(config: ExportConfig) -> dict[str, Any]:
    """Write ``config.out`` (.onnx) and its sidecar; returns the sidecar document.

    Raises:
        FileNotFoundError: No policy in ``config.run``.
        ValueError: Settings that cannot be a fixed graph, or a policy/task mismatch (named).
    """
    policy_dir = resolve_policy_dir(config.run)
    policy, meta = load_policy(policy_dir)
    policy.require_vector_observations("export")
    if config.overrides:
        known = {f.name for f in dataclasses.fields(policy.config)}
        if set(config.overrides) - known:
            raise ValueError(f"overrides {sorted(set(config.overrides) - known)} do not apply to a "
                             f"{policy.name} policy; its settings are {sorted(known)}")
        policy.config = dataclasses.replace(policy.config, **config.overrides)
    env_id = config.env or meta.get("env_id")
    if not env_id:
        raise ValueError(f"policy {str(policy_dir)!r} records no env_id; pass --env ID")
    check_policy_fits_env(policy_dir, env_id)
    task = _task_facts(env_id)
    graph = PolicyGraph(policy, task["act_low"], task["act_high"]).eval()
    c = policy.config
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = ["obs", "noise"] if graph.exporter.uses_noise else ["obs"]
    obs, noise = _sample_inputs(policy, 1, seed=0)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp) / out.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python floats becoming constants
            torch.onnx.export(graph, (obs, noise), str(tmp_path), dynamo=False, input_names=names,
                              output_names=["actions"], opset_version=config.opset,
                              dynamic_axes={n: {0: "B"} for n in [*names, "actions"]})
        check = _max_diff(graph, tmp_path, config.check_inputs)
        digest = file_sha256(tmp_path)
        os.replace(tmp_path, out)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "kinodiff_version": importlib.metadata.version("kinodiff"),
        "onnx_file": out.name,
        "onnx_sha256": digest,
        "opset": config.opset,
        "policy": policy.name,
        "source": {"run": str(config.run), "policy_dir": str(policy_dir),
                   "step": meta.get("step"), "policy_config": dataclasses.asdict(c)},
        "env_id": env_id,
        "n_obs_steps": c.n_obs_steps,
        "horizon": c.horizon,
        "n_action_steps": c.n_action_steps,
        "control_hz": 1.0 / task["dt"],
        "dt": task["dt"],
        "observation": {"dim": c.obs_dim, "shape": task["obs_shape"], "low": task["obs_low"],
                        "high": task["obs_high"], "dtype": "float32"},
        "action": {"dim": c.action_dim, "low": task["act_low"].tolist(), "high": task["act_high"].tolist(),
                   "rate_limit": task["rate_limit"], "names": task["actuators"], "dtype": "float32"},
        "inputs": {"obs": {"shape": ["B", c.n_obs_steps, c.obs_dim], "dtype": "float32",
                           "meaning": "raw observations, oldest first"},
                   **({"noise": {"shape": ["B", c.horizon, c.action_dim], "dtype": "float32",
                                 "meaning": "standard normal initial noise"}}
                      if graph.exporter.uses_noise else {})},
        "outputs": {"actions": {"shape": ["B", c.horizon, c.action_dim], "dtype": "float32",
                                "meaning": "raw actions clipped to [low, high]; execute the first "
                                           "n_action_steps"}},
        "export_check": {"inputs": config.check_inputs, "max_abs_diff_vs_torch": check},
    }
    write_json_atomic(sidecar_path(out), doc)
    return doc

"""The main job end to end: demonstrations -> diffusion policy and MLP baseline -> report."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.collect import CollectConfig, collect
from agents.evaluate import EvalConfig, evaluate
from agents.report import write_report
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.utils import versions, write_json_atomic
from envs import make_env

MARKER = "quickstart.json"


@dataclass(kw_only=True)
class QuickstartConfig:
    """The quickstart on local defaults (about 3-4 minutes on 2 CPU cores)."""

    out: str = "runs/quickstart"
    """Folder for data, runs and the report (a previous quickstart there is replaced)."""
    env: str = "kinodiff/PointObstacle-v0"
    """Task id."""
    episodes: int = 100
    """Demonstrations to collect."""
    eval_episodes: int = 50
    """Evaluation episodes per policy."""
    seed: int = 0
    """Seed of collection and training (evaluation uses its own seeds)."""
    diffusion_steps: int = 3000
    """Gradient steps of the diffusion policy."""
    mlp_steps: int = 3000
    """Gradient steps of the MLP baseline."""
    workers: int = 0
    """0 runs rollouts in this process; W > 0 uses W Ray actors."""
    threads: int = 2
    """torch threads for training."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Task keyword arguments (e.g. ``start_spread``)."""


def _prepare_out(out: Path) -> None:
    """Replace an earlier quickstart; refuse to touch a folder the quickstart did not make."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"folder {str(out)!r} exists and was not made by the quickstart; "
                                  "expected a new or quickstart --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def quickstart(config: QuickstartConfig, progress: bool = True) -> Path:
    """Run the whole job; returns the path of ``report.md``."""
    out = Path(config.out)
    _prepare_out(out)
    write_json_atomic(out / MARKER, {"config": asdict(config), "versions": versions()})
    timings = {}
    t0 = time.perf_counter()
    collect(CollectConfig(env=config.env, expert="scripted", episodes=config.episodes,
                          out=str(out / "data.zarr"), seed=config.seed, workers=config.workers,
                          env_kwargs=config.env_kwargs), progress=progress)
    timings["collect_s"] = time.perf_counter() - t0
    summaries, episodes = {}, {}
    for name, steps in (("diffusion", config.diffusion_steps), ("mlp", config.mlp_steps)):
        t0 = time.perf_counter()
        train = BcTrainConfig(steps=steps, seed=config.seed, threads=config.threads)
        train_bc(BcRunConfig(data=str(out / "data.zarr"), policy=name, out=str(out / name),
                             train=train), progress=progress)
        timings[f"train_{name}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        summaries[name], episodes[name] = evaluate(
            EvalConfig(run=str(out / name), env=config.env, episodes=config.eval_episodes,
                       workers=config.workers, video=name == "diffusion",
                       env_kwargs=config.env_kwargs), progress=progress)
        timings[f"eval_{name}_s"] = time.perf_counter() - t0
    env = make_env(config.env, **config.env_kwargs)
    files = write_report(out, summaries, episodes, getattr(env.unwrapped, "layout", None),
                         "diffusion", env.metadata.get("render_fps", 20),
                         extra={"env_id": config.env, "timings": timings,
                                "config": asdict(config)})
    env.close()
    return files["md"]

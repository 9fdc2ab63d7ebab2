import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.train.checkpoint import latest_checkpoint
from agents.utils import write_json_atomic
from policies import load_policy

SMALL = {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4}


def _run(data, out, steps=40, **kw):
    train = BcTrainConfig(steps=steps, batch_size=32, val_every=10, checkpoint_every=20,
                          log_every=5, **kw)
    return BcRunConfig(data=str(data), policy="diffusion", out=str(out), policy_config=SMALL,
                       train=train)


def test_training_writes_logs_checkpoints_and_a_loadable_policy(tiny_store, tmp_path):
    out = train_bc(_run(tiny_store, tmp_path / "run"), progress=False)
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 40 and "val_loss" in rows[-1]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert list((out / "logs" / "tensorboard").iterdir())
    config = json.loads((out / "config.json").read_text())
    assert config["env_id"] == "kinodiff/PointObstacle-v0" and config["train"]["steps"] == 40
    policy, meta = load_policy(latest_checkpoint(out / "checkpoints"))
    assert meta["env_id"] == "kinodiff/PointObstacle-v0" and meta["step"] == 40
    assert policy.obs_normalizer.half_range.min() > 0


def test_resume_after_a_kill_matches_an_uninterrupted_run_bitwise(tiny_store, tmp_path):
    straight = train_bc(_run(tiny_store, tmp_path / "a"), progress=False)
    # Simulate a kill right after the step-20 checkpoint: drop what came later, then resume.
    shutil.copytree(straight, tmp_path / "b")
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.rmtree(ckpts / "step_0000040")
    write_json_atomic(ckpts / "latest.json", {"step": 20, "path": "step_0000020"})
    resumed = train_bc(_run(tiny_store, tmp_path / "b"), resume=True, progress=False)
    a = load_file(str(straight / "checkpoints" / "step_0000040" / "train_state.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_0000040" / "train_state.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten_without_resume(tiny_store, tmp_path):
    out = train_bc(_run(tiny_store, tmp_path / "run", steps=5), progress=False)
    before = (out / "config.json").read_text()
    with pytest.raises(FileExistsError, match="--resume"):
        train_bc(_run(tiny_store, tmp_path / "run", steps=5), progress=False)
    assert (out / "config.json").read_text() == before


def test_bad_training_values_are_named():
    with pytest.raises(ValueError, match="ema_decay=1.5"):
        BcTrainConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match="steps=0"):
        BcTrainConfig(steps=0)

"""Fault injection on training checkpoints: kills during save, bitwise resume, flipped bytes, wrong task."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agents.evaluate import check_policy_fits_env
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.train.checkpoint import latest_checkpoint, load_train_state
from policies import load_policy

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4}
STEPS, EVERY = 16, 2  # N = 8 steps each side of a kill; a checkpoint every 2 steps: saves dominate


def _run(data, out):
    return BcRunConfig(data=str(data), policy="diffusion", out=str(out), policy_config=SMALL,
                       train=BcTrainConfig(steps=STEPS, batch_size=16, val_every=STEPS,
                                           checkpoint_every=EVERY, log_every=4))


# The file operations a save is made of; the child SIGKILLs itself at the K-th one (before it runs).
_KILLED_TRAINING = textwrap.dedent("""
    import os, shutil, signal, sys
    import policies.io
    from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc

    kill_at, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ops = [0]
    def counted(fn):
        def wrapper(*args, **kwargs):
            ops[0] += 1
            if ops[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapper
    os.replace, os.fsync, shutil.rmtree = counted(os.replace), counted(os.fsync), counted(shutil.rmtree)
    policies.io.save_file = counted(policies.io.save_file)
    config = BcRunConfig(data=data, policy="diffusion", out=out, policy_config={small},
                         train=BcTrainConfig(steps={steps}, batch_size=16, val_every={steps},
                                             checkpoint_every={every}, log_every=4))
    train_bc(config, progress=False)
""").format(small=SMALL, steps=STEPS, every=EVERY)


def _count_ops(monkeypatch, config):
    import os
    import shutil

    import policies.io

    ops = [0]

    def counted(fn):
        def wrapper(*args, **kwargs):
            ops[0] += 1
            return fn(*args, **kwargs)
        return wrapper

    for owner, name in ((os, "replace"), (os, "fsync"), (shutil, "rmtree"), (policies.io, "save_file")):
        monkeypatch.setattr(owner, name, counted(getattr(owner, name)))
    out = train_bc(config, progress=False)
    monkeypatch.undo()
    return out, ops[0]


def _next_actions(run, obs):
    """100 actions of the run's latest policy on fixed observations, with a fixed sampling seed."""
    policy, _ = load_policy(latest_checkpoint(Path(run) / "checkpoints"))
    torch.manual_seed(123)
    with torch.no_grad():
        return policy.predict_action_chunk(obs)[:, 0]


@pytest.mark.slow
def test_kill_at_20_points_during_saves_latest_loads_and_resume_is_bitwise(tiny_store, tmp_path,
                                                                           monkeypatch):
    straight, total_ops = _count_ops(monkeypatch, _run(tiny_store, tmp_path / "straight"))
    want = load_file(str(straight / "checkpoints" / f"step_{STEPS:07d}" / "train_state.safetensors"))
    policy, _ = load_policy(latest_checkpoint(straight / "checkpoints"))
    obs = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (100, policy.config.n_obs_steps,
                                                                    policy.config.obs_dim))
                           .astype(np.float32))
    want_actions = _next_actions(straight, obs)
    kill_points = sorted(np.random.default_rng(1).choice(np.arange(1, total_ops), 20, replace=False))
    steps_at_kill = []
    for k in kill_points:
        out = tmp_path / f"killed_{k}"
        child = subprocess.run([sys.executable, "-c", _KILLED_TRAINING, str(k), str(tiny_store),
                                str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
        ckpt = latest_checkpoint(out / "checkpoints")
        if ckpt is not None:  # the latest checkpoint always loads, whole
            load_policy(ckpt)
            _, doc = load_train_state(ckpt)
            steps_at_kill.append(doc["step"])
        else:
            steps_at_kill.append(0)
        resumed = train_bc(_run(tiny_store, out), resume=True, progress=False)
        got = load_file(str(resumed / "checkpoints" / f"step_{STEPS:07d}" / "train_state.safetensors"))
        assert got.keys() == want.keys()
        assert all(torch.equal(got[key], want[key]) for key in want), f"kill at op {k}"
        assert torch.equal(_next_actions(resumed, obs), want_actions), f"kill at op {k}"
    # The kills fell all along the run, not only before the first checkpoint.
    assert min(steps_at_kill) < STEPS // 2 <= max(steps_at_kill)


def test_a_flipped_byte_fails_the_sha256_check_before_anything_is_parsed(tiny_store, tmp_path,
                                                                         monkeypatch):
    import policies.io

    run = train_bc(_run(tiny_store, tmp_path / "run"), progress=False)
    ckpt = latest_checkpoint(run / "checkpoints")

    def must_not_parse(*args, **kwargs):
        raise AssertionError("a corrupt file was parsed")

    for name in ("policy.safetensors", "train_state.safetensors", "policy.json", "train_state.json"):
        path = ckpt / name
        good = path.read_bytes()
        raw = bytearray(good)
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
        monkeypatch.setattr(policies.io, "load_file", must_not_parse)  # the one safetensors parser
        with pytest.raises(ValueError, match=rf"{name}.*sha256"):
            latest_checkpoint(run / "checkpoints")
        if name.endswith(".safetensors"):  # the loaders check on their own too
            loader = load_policy if name.startswith("policy") else load_train_state
            with pytest.raises(ValueError, match="sha256"):
                loader(ckpt)
        monkeypatch.undo()
        path.write_bytes(good)
    load_policy(latest_checkpoint(run / "checkpoints"))  # restored bytes load again


def test_a_corrupt_or_escaping_pointer_is_named(tiny_store, tmp_path):
    run = train_bc(_run(tiny_store, tmp_path / "run"), progress=False)
    pointer = run / "checkpoints" / "latest.json"
    pointer.write_text("{trunc")
    with pytest.raises(ValueError, match="latest.json.*corrupt"):
        latest_checkpoint(run / "checkpoints")
    pointer.write_text(json.dumps({"step": 1, "path": "../../elsewhere"}))
    with pytest.raises(ValueError, match="inside the checkpoints folder"):
        latest_checkpoint(run / "checkpoints")


def test_loading_into_a_task_with_other_spaces_fails_naming_both(tiny_store, tmp_path):
    run = train_bc(_run(tiny_store, tmp_path / "run"), progress=False)
    ckpt = latest_checkpoint(run / "checkpoints")
    check_policy_fits_env(ckpt, "kinodiff/PointObstacle-v0")  # its own task fits
    with pytest.raises(ValueError) as info:
        check_policy_fits_env(ckpt, "kinodiff/ArmReach-v0")
    message = str(info.value)
    assert "ArmReach" in message and "PointObstacle" in message  # the task and where it trained
    import gymnasium as gym

    arm = gym.make("kinodiff/ArmReach-v0")
    policy, _ = load_policy(ckpt)
    # Both shapes are named: the policy's and the task's.
    assert str(policy.config.obs_dim) in message and str(arm.observation_space.shape[0]) in message

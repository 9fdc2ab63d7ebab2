import json

import pytest
import torch

from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.train.checkpoint import latest_checkpoint
from agents.train.distill import DistillConfig, distill
from policies import load_policy
from policies.diffusion.distill import student_from_teacher, teacher_samples

SMALL = {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4}


@pytest.fixture
def teacher_run(tiny_store, tmp_path):
    train = BcTrainConfig(steps=20, batch_size=32, val_every=10, checkpoint_every=20, log_every=5)
    return train_bc(BcRunConfig(data=str(tiny_store), policy="diffusion", out=str(tmp_path / "teacher"),
                                policy_config=SMALL, train=train), progress=False)


def test_teacher_samples_are_the_deterministic_ddim_chunks(teacher_run):
    teacher, _ = load_policy(latest_checkpoint(teacher_run / "checkpoints"))
    obs = torch.randn(5, 2, 4)
    noise = torch.randn(5, teacher.config.horizon, 2)
    # chunk=2 splits the rows into three calls; the result must not depend on the split.
    got = teacher_samples(teacher, obs, noise, chunk=2)
    want = teacher.predict_normalized_chunk(teacher.obs_normalizer.normalize(obs), noise=noise,
                                            sampler="ddim")
    assert torch.allclose(got, want, atol=1e-6)


def test_student_starts_from_the_teachers_weights_and_normalizers(teacher_run):
    teacher, _ = load_policy(latest_checkpoint(teacher_run / "checkpoints"))
    student = student_from_teacher(teacher, "teacher-dir")
    assert student.config.sampler == "onestep" and student.config.teacher == "teacher-dir"
    for key, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[key], value), key


def test_distill_trains_a_loadable_one_step_student(teacher_run, tmp_path):
    train = BcTrainConfig(steps=10, batch_size=32, val_every=5, checkpoint_every=10, log_every=5,
                          warmup_steps=0)
    out = distill(DistillConfig(teacher=str(teacher_run), out=str(tmp_path / "student"), pairs=64,
                                train=train), progress=False)
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 10 and rows[-1]["val_loss"] >= 0.0
    student, meta = load_policy(latest_checkpoint(out / "checkpoints"))
    assert student.config.sampler == "onestep" and meta["env_id"] == "kinodiff/PointObstacle-v0"
    student.reset(seed=0)
    chunk = student.predict_action_chunk(torch.zeros(3, 2, 4))
    assert chunk.shape == (3, student.config.n_action_steps, 2) and torch.isfinite(chunk).all()


def test_distill_refuses_a_teacher_that_is_not_a_multi_step_diffusion_policy(tiny_store, tmp_path):
    train = BcTrainConfig(steps=2, batch_size=8, checkpoint_every=2, log_every=1)
    mlp = train_bc(BcRunConfig(data=str(tiny_store), policy="mlp", out=str(tmp_path / "mlp"),
                               train=train), progress=False)
    with pytest.raises(ValueError, match="expected a multi-step diffusion policy"):
        distill(DistillConfig(teacher=str(mlp), out=str(tmp_path / "student")), progress=False)
    assert not (tmp_path / "student").exists()


def test_cli_distill_keeps_distillation_defaults_for_unset_options(teacher_run, tmp_path):
    from agents.cli.main import main

    out = tmp_path / "student"
    assert main(["train", "distill", "--teacher", str(teacher_run), "--out", str(out), "--pairs", "64",
                 "--steps", "3", "--batch-size", "16", "--checkpoint-every", "3"]) == 0
    config = json.loads((out / "config.json").read_text())
    # --steps given; lr and warmup unset, so distillation's (3e-4, 0), not behaviour cloning's.
    assert config["train"]["steps"] == 3 and config["train"]["lr"] == 3e-4
    assert config["train"]["warmup_steps"] == 0 and config["policy_config"]["sampler"] == "onestep"

import dataclasses
import json

import pytest
import torch

from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.train.checkpoint import latest_checkpoint
from agents.train.distill import DistillConfig, distill
from policies import load_policy
from policies.diffusion.distill import student_from_teacher, teacher_samples, visited_pairs, warm_pairs
from policies.diffusion.warm import demo_tail, warm_tail

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


def test_warm_pairs_targets_are_the_teachers_warm_started_chunks(teacher_run):
    teacher, _ = load_policy(latest_checkpoint(teacher_run / "checkpoints"))
    c = teacher.config
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(3, 2, 4, generator=g)
    actions = torch.rand(3, c.horizon, 2, generator=g) * 2 - 1
    noise = torch.randn(3, c.horizon, 2, generator=torch.Generator().manual_seed(5))
    x_t, t, target = warm_pairs(teacher, obs, actions, noise, 0.5, chunk=2)
    # The same chunk through the policy's own warm start: a last chunk whose tail is the demo's.
    normalized = teacher.action_normalizer.normalize(actions)
    teacher.config = dataclasses.replace(c, warm_start=0.5)
    last = torch.cat([torch.zeros(3, c.n_action_steps, 2), normalized[:, :-c.n_action_steps]], 1)
    teacher._last_chunk.chunk = last
    assert torch.equal(warm_tail(last, c.n_action_steps), demo_tail(normalized, c.n_action_steps))
    teacher.generator.manual_seed(5)
    want = teacher.predict_normalized_chunk(teacher.obs_normalizer.normalize(obs))
    assert torch.allclose(target, want, atol=1e-5)
    step = teacher._steps(c.num_inference_steps, "ddim")[2]
    assert t.tolist() == [step.t] * 3
    assert torch.allclose(x_t, demo_tail(normalized, c.n_action_steps) * step.sqrt_ab
                          + noise * step.sqrt_one_minus_ab, atol=1e-6)


def test_distill_with_warm_start_trains_a_warm_one_step_student(teacher_run, tmp_path):
    train = BcTrainConfig(steps=4, batch_size=16, val_every=4, checkpoint_every=4, log_every=2,
                          warmup_steps=0)
    out = distill(DistillConfig(teacher=str(teacher_run), out=str(tmp_path / "student"), pairs=64,
                                warm_start=0.5, train=train), progress=False)
    student, _ = load_policy(latest_checkpoint(out / "checkpoints"))
    assert student.config.sampler == "onestep" and student.config.warm_start == 0.5
    assert json.loads((out / "config.json").read_text())["warm_start"] == 0.5
    student.reset(seed=0)
    for _ in range(2):  # a cold chunk, then a warm one
        chunk = student.predict_action_chunk(torch.zeros(3, 2, 4))
        assert chunk.shape == (3, student.config.n_action_steps, 2) and torch.isfinite(chunk).all()


@pytest.mark.parametrize("kw,match", [({"warm_start": 1.0}, "warm_start=1.0"),
                                      ({"warm_fraction": 0.0}, "warm_fraction=0.0"),
                                      ({"rounds": -1}, "rounds=-1"),
                                      ({"round_episodes": 0}, "round_episodes=0")])
def test_distill_config_refuses_bad_warm_options(kw, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig(teacher="t", out="o", **kw)


def test_visited_pairs_are_the_students_own_chunk_inputs_labelled_by_the_teacher(teacher_run):
    teacher, _ = load_policy(latest_checkpoint(teacher_run / "checkpoints"))
    c = teacher.config
    student = student_from_teacher(teacher, str(teacher_run), warm_start=0.5)
    student.eval()
    obs = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1))
    student.reset(seed=0)
    student.sampling_log = []
    with torch.no_grad():
        first = student.predict_normalized_chunk(student.obs_normalizer.normalize(obs))
        state = student.generator.get_state()
        second = student.predict_normalized_chunk(student.obs_normalizer.normalize(obs))
    assert [r.tail is None for r in student.sampling_log] == [True, False]
    rows = visited_pairs(teacher, student.sampling_log)
    assert rows["obs"].shape == (6, 2, 4) and torch.allclose(rows["obs"], torch.cat([obs, obs]), atol=1e-5)
    # The student's own input: its denoiser on the recorded (noise, timestep) gives its chunks.
    with torch.no_grad():
        again = student.denoiser(rows["noise"], rows["timestep"],
                                 student.encode(student.obs_normalizer.normalize(rows["obs"])))
    assert torch.allclose(again.clamp(-1, 1), torch.cat([first, second]), atol=1e-5)
    # The labels: the teacher's DDIM chunk from the same noise, and its own warm start from the
    # student's last chunk with the same noise.
    cold = teacher.predict_normalized_chunk(teacher.obs_normalizer.normalize(obs),
                                            noise=student.sampling_log[0].noise, sampler="ddim")
    assert torch.allclose(rows["teacher_sample"][:3], cold, atol=1e-5)
    teacher.config = dataclasses.replace(c, warm_start=0.5, sampler="ddim")
    teacher._last_chunk.chunk, teacher._last_chunk.origin = first, None
    teacher.generator.set_state(state)
    warm = teacher.predict_normalized_chunk(teacher.obs_normalizer.normalize(obs))
    assert torch.allclose(rows["teacher_sample"][3:], warm, atol=1e-5)
    assert torch.allclose(rows["action"], teacher.action_normalizer.unnormalize(rows["teacher_sample"]),
                          atol=1e-5)


def test_visited_pairs_refuse_an_empty_log(teacher_run):
    teacher, _ = load_policy(latest_checkpoint(teacher_run / "checkpoints"))
    with pytest.raises(ValueError, match="no recorded chunks"):
        visited_pairs(teacher, [])


def test_distill_with_an_on_policy_round_adds_the_students_visited_pairs(teacher_run, tmp_path):
    train = BcTrainConfig(steps=4, batch_size=16, val_every=4, checkpoint_every=4, log_every=2,
                          warmup_steps=0)
    config = DistillConfig(teacher=str(teacher_run), out=str(tmp_path / "student"), pairs=64,
                           warm_start=0.5, rounds=1, round_episodes=2, train=train)
    out = distill(config, progress=False)
    first = json.loads((out / "rounds" / "0" / "config.json").read_text())
    final = json.loads((out / "config.json").read_text())
    assert first["on_policy"] == [] and len(final["on_policy"]) == 1
    record = final["on_policy"][0]
    assert record["episodes"] == 2 and record["pairs"] > 2 and 0.0 <= record["success"] <= 1.0
    student, _ = load_policy(latest_checkpoint(out / "checkpoints"))
    assert student.config.sampler == "onestep" and student.sampling_log is None
    # The run folder holds a run now: a second start without --resume is refused.
    with pytest.raises(FileExistsError, match="already holds a run"):
        distill(config, progress=False)


def test_resume_with_other_rounds_is_refused_in_one_line(teacher_run, tmp_path):
    train = BcTrainConfig(steps=2, batch_size=8, val_every=2, checkpoint_every=2, log_every=1,
                          warmup_steps=0)
    config = DistillConfig(teacher=str(teacher_run), out=str(tmp_path / "student"), pairs=16, train=train)
    distill(config, progress=False)
    with pytest.raises(ValueError, match="distilled with rounds=0; expected the same to resume"):
        distill(dataclasses.replace(config, rounds=1), resume=True, progress=False)
    assert distill(config, resume=True, progress=False) == tmp_path / "student"  # the same: resumes

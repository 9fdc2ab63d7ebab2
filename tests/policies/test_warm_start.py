"""Warm start between chunks: the tail helpers, and the one-step student's warm chunk."""

import dataclasses

import pytest
import torch

from policies import make_policy
from policies.diffusion.config import DiffusionConfig
from policies.diffusion.warm import demo_tail, warm_tail

DO, DA, TO, H, TA = 5, 3, 2, 8, 4
SMALL = {"hidden_dims": (32, 32), "num_train_timesteps": 20, "num_inference_steps": 4}


def _student(**kw):
    p = make_policy("diffusion", obs_dim=DO, action_dim=DA, n_obs_steps=TO, horizon=H, n_action_steps=TA,
                    sampler="onestep", **{**SMALL, **kw})
    g = torch.Generator().manual_seed(0)
    p.fit_normalizers(torch.randn(100, DO, generator=g), torch.rand(100, DA, generator=g) * 2 - 1)
    return p.eval()


def test_warm_tail_shifts_by_ta_and_pads_with_the_last_action():
    chunk = torch.arange(H, dtype=torch.float32).view(1, H, 1).expand(2, H, DA)
    tail = warm_tail(chunk, TA)
    assert tail[0, :, 0].tolist() == [4, 5, 6, 7, 7, 7, 7, 7]


def test_extrapolated_warm_tail_continues_the_last_planned_step():
    chunk = (torch.arange(H, dtype=torch.float32) ** 2).view(1, H, 1).expand(2, H, DA)
    tail = warm_tail(chunk, TA, "extrapolate")
    # Kept: 16 25 36 49; the last step is 49 - 36 = 13, so 49 + 13 k for k = 1 .. 4.
    assert tail[0, :, 0].tolist() == [16, 25, 36, 49, 62, 75, 88, 101]
    # One planned action left has no step: it holds, as does a chunk with nothing left.
    assert warm_tail(chunk, H - 1, "extrapolate")[0, :, 0].tolist() == [49] * H
    assert warm_tail(chunk, H, "extrapolate")[0, :, 0].tolist() == [49] * H


@pytest.mark.parametrize("pad", ["hold", "extrapolate"])
def test_demo_tail_is_the_warm_tail_of_the_plan_made_ta_steps_earlier(pad):
    g = torch.Generator().manual_seed(0)
    earlier = torch.randn(3, H + TA, DA, generator=g)  # a demonstration from step t - Ta
    # The chunk predicted at t - Ta covers t - Ta .. t - Ta + H - 1; the window at t starts Ta later.
    assert torch.allclose(demo_tail(earlier[:, TA:TA + H], TA, pad), warm_tail(earlier[:, :H], TA, pad))


def test_a_policy_warm_starts_from_the_tail_its_config_pads():
    p = make_policy("diffusion", obs_dim=DO, action_dim=DA, n_obs_steps=TO, horizon=H, n_action_steps=TA,
                    warm_start=0.5, warm_pad="extrapolate", **SMALL).eval()
    p.fit_normalizers(torch.randn(100, DO), torch.rand(100, DA) * 2 - 1)
    seen = []
    inner = p._denoise
    p._denoise = lambda x, cond, sampler, start=0, tail=None: seen.append(tail) or inner(
        x, cond, sampler, start, tail)
    obs = p.prepare_obs(torch.randn(2, TO, DO))
    p.reset(seed=0)
    last = p.predict_normalized_chunk(obs)
    p.predict_normalized_chunk(obs)
    assert seen[0] is None and torch.equal(seen[1], warm_tail(last, TA, "extrapolate"))


def test_demo_tail_refuses_a_chunk_with_no_planned_action_left():
    with pytest.raises(ValueError, match="expected Ta < H"):
        demo_tail(torch.zeros(1, H, DA), H)


def test_warm_one_step_student_calls_once_from_the_noised_tail_at_the_warm_level():
    p = _student(warm_start=0.5)
    seen = []
    forward = p.denoiser.forward
    p.denoiser.forward = lambda x, t, cond: seen.append((x.clone(), t.clone())) or forward(x, t, cond)
    obs = torch.randn(2, TO, DO)
    p.reset(seed=0)
    first = p.predict_normalized_chunk(p.prepare_obs(obs))
    p.generator.manual_seed(7)
    p.predict_normalized_chunk(p.prepare_obs(obs))
    assert len(seen) == 2  # one call per chunk
    assert seen[0][1].tolist() == [19, 19]  # the first chunk starts from pure noise at t = T - 1
    step = p._steps(4, "ddim")[2]  # 0.5 of K = 4 steps skipped
    assert seen[1][1].tolist() == [step.t, step.t]
    noise = torch.randn(2, H, DA, generator=torch.Generator().manual_seed(7))
    want = warm_tail(first, TA) * step.sqrt_ab + noise * step.sqrt_one_minus_ab
    assert torch.allclose(seen[1][0], want, atol=1e-6)
    p.reset()
    p.predict_normalized_chunk(p.prepare_obs(obs))
    assert seen[2][1].tolist() == [19, 19]  # reset forgets the last chunk


def test_compute_loss_uses_the_pairs_own_timesteps():
    p = _student(warm_start=0.5)
    p.config = dataclasses.replace(p.config, teacher="unused")  # the batch carries the targets
    seen = []
    forward = p.denoiser.forward
    p.denoiser.forward = lambda x, t, cond: seen.append(t.clone()) or forward(x, t, cond)
    B = 4
    batch = {"obs": torch.randn(B, TO, DO), "action": torch.rand(B, H, DA), "noise": torch.randn(B, H, DA),
             "timestep": torch.tensor([19, 10, 19, 10]), "teacher_sample": torch.zeros(B, H, DA)}
    loss, _ = p.compute_loss(batch)
    assert seen[0].tolist() == [19, 10, 19, 10] and torch.isfinite(loss)


@pytest.mark.parametrize("kw,match", [
    ({"warm_start": 0.05}, "skips 0 of num_inference_steps=4"),
    ({"warm_start": 0.9}, "skips 4 of num_inference_steps=4"),
    # Objective ddpm: the last strided step starts at timestep 0, which leaves the tail unnoised.
    ({"warm_start": 0.75}, "skips 3 of num_inference_steps=4, leaving only the step from timestep 0"),
    ({"warm_start": 0.5, "num_inference_steps": 2}, "skips 1 of num_inference_steps=2, leaving"),
    ({"warm_start": 0.5, "sampler": "onestep", "objective": "flow"}, "needs objective='ddpm'"),
    ({"warm_pad": "mirror"}, r"warm_pad='mirror' is invalid; expected one of \['hold', 'extrapolate'\]"),
])
def test_config_refuses_a_warm_start_it_cannot_run(kw, match):
    base = dataclasses.asdict(_student().config)
    with pytest.raises(ValueError, match=match):
        DiffusionConfig(**{**base, "sampler": "ddim", **kw})

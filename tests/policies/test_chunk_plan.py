"""policies.diffusion.chunk_plan: the kept per-chunk form of a sampling schedule."""

import pytest
import torch

from policies.diffusion.chunk_plan import chunk_plan
from policies.diffusion.schedule import SamplingStep, cosine_alphas_cumprod, sampling_steps


def _steps(eta: float = 0.0, num_steps: int = 10) -> list[SamplingStep]:
    return sampling_steps(cosine_alphas_cumprod(100), num_steps, eta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plan_holds_each_steps_timestep_weights_and_bounds_in_the_chunks_dtype(dtype):
    steps = _steps()
    plan = chunk_plan(steps, torch.zeros(1, dtype=dtype))
    assert plan.steps == tuple(steps)
    assert plan.timesteps == tuple(float(s.t) for s in steps)
    assert plan.scales == tuple(s.x0_coef for s in steps)
    assert len(plan.folded) == len(steps)
    for k, (step, (index, low, high, b, sigma)) in enumerate(zip(steps, plan.folded, strict=True)):
        assert index == k and (b, sigma) == (step.x_coef, step.sigma)
        assert low.dim() == high.dim() == 0 and low.dtype == high.dtype == dtype
        assert low.item() == pytest.approx(-step.x0_coef) and high.item() == pytest.approx(step.x0_coef)
    assert plan.folded[-1][3] == 0.0  # DDIM's last step keeps only the clean estimate


def test_ddpm_plan_keeps_each_steps_noise_scale():
    steps = _steps(eta=1.0)
    plan = chunk_plan(steps, torch.zeros(1))
    assert [sigma for *_, sigma in plan.folded] == [s.sigma for s in steps]
    assert any(sigma > 0 for *_, sigma in plan.folded)


def test_plan_from_a_later_step_indexes_its_own_steps_from_zero():
    # A warm-started chunk begins part-way down the schedule; the prepared condition counts its
    # steps from the chunk's first.
    plan = chunk_plan(_steps()[4:], torch.zeros(1))
    assert [k for k, *_ in plan.folded] == list(range(6))
    assert plan.timesteps == tuple(float(s.t) for s in _steps()[4:])


def test_a_non_positive_estimate_weight_leaves_nothing_to_fold():
    # Folding a into the output layer and clipping a * x0 to [-a, a] needs a > 0.
    steps = [*_steps()[:-1], SamplingStep(t=0, sqrt_ab=1.0, sqrt_one_minus_ab=0.5, sqrt_ab_prev=0.0,
                                          dir_coef=0.0, sigma=0.0)]
    assert steps[-1].x0_coef <= 0
    assert chunk_plan(steps, torch.zeros(1)).scales is None


def test_empty_schedule_is_refused_in_one_line():
    with pytest.raises(ValueError, match="at least one step"):
        chunk_plan([], torch.zeros(1))

"""Shared building blocks: the in-place inference Mish, the batch-1 finiteness check."""

import math

import pytest
import torch

from policies.layers import FAST_MISH_MIN, all_finite, mish_


@pytest.mark.parametrize("n", [FAST_MISH_MIN // 2, FAST_MISH_MIN, 4 * FAST_MISH_MIN])
def test_inplace_mish_equals_torch_mish_to_float_rounding(n):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g) * 4
    x[:12] = torch.tensor([-120.0, -88.0, -20.0, -1e-30, -0.0, 0.0, 1e-30, 19.99, 20.0, 20.01, 88.0, 120.0])
    expected = torch.nn.functional.mish(x.double())
    got = x.clone()
    out = mish_(got)
    assert out.data_ptr() == got.data_ptr()  # in place
    assert torch.allclose(out.double(), expected, rtol=1e-6, atol=1e-6)


def test_inplace_mish_keeps_torch_mish_at_infinities_and_nan():
    x = torch.tensor([float("inf"), -float("inf"), float("nan")]).repeat(FAST_MISH_MIN)
    got, expected = mish_(x.clone()), torch.nn.functional.mish(x)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got[~got.isnan()], expected[~expected.isnan()])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_all_finite_finds_a_bad_value_anywhere(bad):
    x = torch.zeros(2, 3, 5)
    assert all_finite(x)
    x[1, 2, 4] = bad
    assert not all_finite(x)


def test_all_finite_accepts_finite_values_whose_sum_overflows():
    x = torch.full((1, 4), 3e38)  # float32 sums to inf; every value is finite
    assert not math.isfinite(float(x.sum()))
    assert all_finite(x)

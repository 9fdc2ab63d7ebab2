"""Constraint math on hand-made inputs, expectations computed by hand."""

import numpy as np
import pytest
import torch

import envs
from policies.constraints import Obstacles
from policies.constraints.solvers import (
    averaged_projections,
    clamp_rate,
    penalty_gradient,
    project_box,
    project_halfspace,
    velocity_box_step,
)


def test_box_and_halfspace_projections_are_closed_form():
    y = torch.tensor([[2.0, -3.0, 0.5]])
    out = project_box(y, torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0, -1.0, 0.5]]))
    # x + y <= 1 from (2, 2): excess 3, |c|^2 = 2 -> (2, 2) - 1.5 (1, 1) = (0.5, 0.5)
    out = project_halfspace(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([1.0]))
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5]]))
    # a satisfied half-space leaves the point where it is
    out = project_halfspace(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([1.0]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0]]))


def test_averaged_projections_reach_the_intersection():
    # x + y <= 1, x - y <= 0.2, inside [-1, 1]^2, from (1, 1): the result satisfies both rows
    C = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.2]], dtype=torch.float64)
    lo, hi = -torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    y = averaged_projections(torch.tensor([[1.0, 1.0]], dtype=torch.float64), C, b, lo, hi, iters=50)
    assert torch.all(C[0] @ y[0] <= b[0] + 1e-6)
    # feasible points are not moved; +inf rows never bind
    y0 = torch.tensor([[0.0, 0.1]], dtype=torch.float64)
    b_inf = torch.tensor([[1.0, float("inf")]], dtype=torch.float64)
    torch.testing.assert_close(averaged_projections(y0, C, b_inf, lo, hi, iters=5), y0)


def test_penalty_gradient_is_twice_the_excess_times_the_normal():
    # cost = max(0, x + y - 1)^2 at (1, 1): excess 1 -> gradient 2 * 1 * (1, 1)
    g = penalty_gradient(torch.tensor([[1.0, 1.0]]), torch.tensor([[[1.0, 1.0]]]), torch.tensor([[1.0]]))
    torch.testing.assert_close(g, torch.tensor([[2.0, 2.0]]))


def test_clamp_rate_is_exact_step_by_step():
    actions = np.array([[[1.0], [1.0], [-1.0], [0.0]]])
    out = clamp_rate(actions, np.zeros((1, 1)), np.array([0.4]), np.array([-0.9]), np.array([0.9]))
    # from 0: +0.4, +0.8 (box would allow 0.9 but the rate stops at 0.8), 0.4, 0.0
    np.testing.assert_allclose(out[0, :, 0], [0.4, 0.8, 0.4, 0.0])
    out = clamp_rate(actions, np.zeros((1, 1)), None, np.array([-0.9]), np.array([0.9]))
    np.testing.assert_allclose(out[0, :, 0], [0.9, 0.9, -0.9, 0.0])


def test_velocity_box_step_holds_the_velocity_unless_the_actuators_cannot():
    gain = np.array([[[2.0, 0.0], [1.0, 1.0]]])
    inv = np.linalg.inv(gain)
    lo, hi = np.full((1, 2), -1.0), np.full((1, 2), 1.0)
    # v = gain a from v_free 0: a = (0.5, 0.5) gives v = (1, 1); the cap 0.5 asks a = (0.25, 0.25)
    a = velocity_box_step(np.array([[0.5, 0.5]]), np.zeros((1, 2)), gain, inv, np.full((1, 2), -0.5),
                          np.full((1, 2), 0.5), lo, hi)
    np.testing.assert_allclose(a, [[0.25, 0.25]])
    # v_free = 5 needs a = -2.25 on the first joint: the action box (-1) wins
    a = velocity_box_step(np.zeros((1, 2)), np.array([[5.0, 0.0]]), gain, inv, np.full((1, 2), -0.5),
                          np.full((1, 2), 0.5), lo, hi)
    assert a[0, 0] == pytest.approx(-1.0)


def test_torch_signed_distances_equal_the_numpy_spec():
    extra = ({"kind": "capsule", "pos": [0.0, 0.6, 0.0], "size": [0.05, 0.1], "yaw": 1.0},)
    spec = envs.make_env("kinodiff/ArmReach-v0", extra_obstacles=extra).unwrapped.constraint_spec
    obstacles = Obstacles(spec.to_dict()["obstacles"])
    pts = np.random.default_rng(0).uniform(-1.0, 1.0, (200, 3)) * [1, 1, 0.1]
    got = obstacles.signed_distance(torch.tensor(pts)).numpy()
    want = np.stack([o.signed_distance(pts) for o in spec.obstacles], -1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(ValueError, match="cylinder"):
        Obstacles([{"kind": "cylinder", "position": [0, 0, 0], "size": [1, 1, 1], "rotation": np.eye(3)}])

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from planners.safety_filter import SafetyFilter, SafetyFilterConfig

ROOT = Path(__file__).resolve().parents[2]


def _filter(rate=None):
    return SafetyFilter(SafetyFilterConfig(low=[-1.0, -2.0], high=[1.0, 2.0], rate_limit=rate))


def test_in_range_commands_pass_unchanged_and_are_not_logged():
    f = _filter()
    out = f.filter(np.array([0.5, -1.5], dtype=np.float32))
    assert out.dtype == np.float64 and out.tolist() == [0.5, -1.5]
    assert f.interventions == 0 and f.events == [] and f.steps == 1


def test_out_of_range_commands_are_clamped_and_logged():
    f = _filter()
    out = f.filter([3.0, -0.5])
    assert out.tolist() == [1.0, -0.5]  # dim 0 clamped to high=1, dim 1 untouched
    assert f.counts["clamped"] == 1
    event = f.events[0]
    assert (event.step, event.kind, event.dims, event.requested, event.sent) == (
        0, "clamped", (0,), [3.0, -0.5], [1.0, -0.5])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_commands_are_refused_and_logged_as_valid_json(bad):
    f = _filter(rate=[0.1, 0.1])
    f.filter([0.0, 0.0])
    assert f.filter([0.2, bad]) is None
    assert f.counts["non_finite"] == 1
    assert f.events[-1].dims == (1,) and f.events[-1].sent is None
    json.dumps(f.summary(), allow_nan=False)  # None stands in for the non-finite value
    # A refused command leaves the rate-limit reference at the last command sent.
    assert f.filter([1.0, 0.0]).tolist() == [0.1, 0.0]


def test_rate_limit_steps_towards_the_request_from_the_last_command():
    f = _filter(rate=[0.25, 1.0])
    assert f.filter([0.0, 0.0]).tolist() == [0.0, 0.0]  # first command: no reference yet
    # dim 0 asks +0.9 but may move 0.25; dim 1 asks -0.5, within its 1.0.
    assert f.filter([0.9, -0.5]).tolist() == [0.25, -0.5]
    assert f.filter([-5.0, -0.5]).tolist() == [0.0, -0.5]  # clamp to -1 then rate 0.25 from 0.25
    assert f.counts == {"non_finite": 0, "clamped": 1, "rate_limited": 2}
    f.reset()
    assert f.filter([0.9, 0.0]).tolist() == [0.9, 0.0]  # reset forgets the reference


def test_every_output_stays_inside_the_limits_and_the_rate():
    rng = np.random.default_rng(0)
    f = _filter(rate=[0.3, 0.3])
    last = None
    for cmd in rng.normal(0, 3, size=(500, 2)):
        out = f.filter(cmd)
        assert np.all(out >= [-1, -2]) and np.all(out <= [1, 2])
        if last is not None:
            assert np.all(np.abs(out - last) <= 0.3 + 1e-12)
        last = out


def test_config_from_a_constraint_spec_as_plain_arrays():
    import envs
    from envs.registry import make_env

    assert envs  # registers the tasks
    spec = make_env("kinodiff/ArmReach-v0").unwrapped.constraint_spec
    f = SafetyFilter(SafetyFilterConfig(low=spec.ctrl_low, high=spec.ctrl_high,
                                        rate_limit=spec.action_rate_limit))
    out = f.filter(spec.ctrl_high * 2)
    assert np.array_equal(out, spec.ctrl_high)


def test_event_log_is_bounded_but_counts_keep_counting():
    f = SafetyFilter(SafetyFilterConfig(low=[-1.0], high=[1.0], max_events=3))
    for _ in range(10):
        f.filter([2.0])
    assert len(f.events) == 3 and f.counts["clamped"] == 10


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"low": [0.0, 1.0], "high": [1.0, 0.5]}, "exceeds high"),
    ({"low": [0.0], "high": [1.0, 2.0]}, "high has 2 entries; expected 1"),
    ({"low": [0.0], "high": [1.0], "rate_limit": [0.0]}, "rate_limit"),
    ({"low": [], "high": []}, "low is empty"),
    ({"low": [np.nan], "high": [1.0]}, "NaN"),
])
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SafetyFilterConfig(**kwargs)


def test_wrong_command_size_is_named():
    with pytest.raises(ValueError, match="command has 3 entries; expected 2"):
        _filter().filter([0.0, 0.0, 0.0])


def test_the_filter_imports_numpy_only():
    tree = ast.parse((ROOT / "planners" / "safety_filter.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert names <= {"numpy", "dataclasses", "typing", "__future__"}

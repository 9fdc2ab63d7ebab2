"""The runtime dynamics guard: exact one-step prediction, and speed / range repair where an
action-space clamp alone lets the joints past their limits (contact impulses, rate-limited braking)."""

import numpy as np
import pytest

import envs
from planners.dynamics_guard import DynamicsGuard, DynamicsGuardConfig
from planners.safety_filter import SafetyFilter, SafetyFilterConfig


@pytest.fixture
def arm():
    env = envs.make_env("kinodiff/ArmReach-v0")
    env.reset(seed=0)
    return env


def tight(spec):
    """The constraints benchmark's tightened limits (ctrl 0.8, speeds 0.8x, rate 0.5, ranges pulled in)."""
    return spec.replace(ctrl_low=[-0.8] * 3, ctrl_high=[0.8] * 3,
                        joint_velocity_limit=spec.joint_velocity_limit * 0.8,
                        action_rate_limit=[0.5] * 3, joint_low=[-2.6, -2.3, -2.3],
                        joint_high=[2.6, 2.3, 2.3])


def clamp_only(spec):
    """Action-space enforcement alone: ctrlrange and rate limit from zero control."""
    f = SafetyFilter(SafetyFilterConfig(low=spec.ctrl_low, high=spec.ctrl_high,
                                        rate_limit=spec.action_rate_limit))
    f.filter(np.zeros(3))  # the env starts from zero control: the rate limit's first reference
    return f.filter


def test_prediction_is_the_env_step_bit_for_bit_and_the_env_is_untouched(arm):
    u = arm.unwrapped
    guard = DynamicsGuard(u.model, u.constraint_spec, u.frame_skip)
    rng = np.random.default_rng(0)
    for _ in range(20):
        command = rng.uniform(-1, 1, 3)
        qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
        predicted = guard.predict(command, u.data)
        np.testing.assert_array_equal(u.data.qpos, qpos)
        np.testing.assert_array_equal(u.data.qvel, qvel)
        arm.step(command)
        np.testing.assert_array_equal(predicted[0], u.data.qpos)
        np.testing.assert_array_equal(predicted[1], u.data.qvel)


def test_a_safe_command_passes_unchanged(arm):
    u = arm.unwrapped
    guard = DynamicsGuard(u.model, tight(u.constraint_spec), u.frame_skip)
    step = guard.filter(np.array([0.1, -0.1, 0.05]), u.data)
    np.testing.assert_array_equal(step.sent, [0.1, -0.1, 0.05])
    assert not step.intervened and not step.repaired and step.excess == 0.0 and step.scale == 1.0
    assert guard.summary() == {"commands": 1, "interventions": 0, "repairs": 0, "unresolved": 0,
                               "non_finite": 0}


def test_a_non_finite_command_is_refused_and_the_robot_brakes(arm):
    u = arm.unwrapped
    guard = DynamicsGuard(u.model, u.constraint_spec, u.frame_skip)
    for _ in range(10):
        arm.step(np.array([1.0, 1.0, 1.0]))
    speed = np.abs(u.data.qvel).copy()
    ctrl = u.data.ctrl.copy()
    step = guard.filter(np.array([0.0, np.nan, 0.0]), u.data)
    assert np.isfinite(step.sent).all() and step.intervened and step.scale == 0.0
    assert guard.non_finite == 1 and not step.repaired
    # Braking: every torque opposes its joint's motion more than the last command did.
    assert np.all((step.sent - ctrl) * u.data.qvel <= 0) and np.any(step.sent != ctrl)
    arm.step(step.sent)
    # Coupling may speed up a slow joint a little; the fastest ones slow down (5.9 -> 3.1 rad/s here).
    assert np.abs(u.data.qvel).max() < 0.6 * speed.max()


def run(env, spec, controller, steps, send):
    """Closed loop; returns (hard-limit violations counted as in the benchmark, worst speed / limit,
    steps ending in contact)."""
    u = env.unwrapped
    prev, bad, worst, contact = np.zeros(3), 0, 0.0, 0
    for _ in range(steps):
        a = send(controller(u.data.qpos.copy(), u.data.qvel.copy()))
        bad += int(np.count_nonzero((a < spec.ctrl_low) | (a > spec.ctrl_high)))
        bad += int(np.count_nonzero(np.abs(a - prev) > spec.action_rate_limit))
        prev = a
        contact += bool(env.step(a)[4]["collision"])
        counts = spec.count_violations(u.data.qpos, u.data.qvel)
        bad += counts.joint_position + counts.joint_velocity
        worst = max(worst, float(np.max(np.abs(u.data.qvel) / spec.joint_velocity_limit)))
    return bad, worst, contact


def test_full_torque_push_holds_speeds_and_ranges_where_the_clamp_alone_fails(arm):
    u = arm.unwrapped
    spec = tight(u.constraint_spec)
    push = iter([np.array([0.8, -0.8, 0.8])] * 100 + [np.array([-0.8, 0.8, -0.8])] * 50)
    commands = list(push)
    it = iter(commands)
    arm.reset(seed=2)
    bad, worst, _ = run(arm, spec, lambda q, v: next(it), 150, clamp_only(spec))
    assert bad > 0 and worst > 1.5  # the clamp alone: joints far past their speed limits
    it = iter(commands)
    arm.reset(seed=2)
    guard = DynamicsGuard(u.model, spec, u.frame_skip)
    bad, worst, _ = run(arm, spec, lambda q, v: next(it), 150, lambda c: guard.filter(c, u.data).sent)
    assert bad == 0 and worst <= 1.0
    assert guard.repairs > 0 and guard.unresolved == 0


def test_contact_impulse_repaired(arm):
    """The case that violated before: joint 1 driven at 0.9 of its speed limit into the box obstacle
    with the other joints held. At impact the clamp-only loop (ctrlrange + rate limit, as action-space
    enforcement) sees joint 3 whip to 1.13x its limit; the guard brakes in time."""
    u = arm.unwrapped
    spec = tight(u.constraint_spec)
    lim = spec.joint_velocity_limit

    def servo(q0):
        return lambda q, v: np.array([4 * (0.9 * lim[0] - v[0]), 3 * (q0[1] - q[1]) - 0.3 * v[1],
                                      2 * (q0[2] - q[2]) - 0.2 * v[2]])

    arm.reset(seed=9)
    bad, worst, contact = run(arm, spec, servo(u.data.qpos.copy()), 60, clamp_only(spec))
    assert bad > 0 and worst > 1.1 and contact > 0
    arm.reset(seed=9)
    guard = DynamicsGuard(u.model, spec, u.frame_skip)
    send = lambda c: guard.filter(c, u.data).sent  # noqa: E731
    bad, worst, contact = run(arm, spec, servo(u.data.qpos.copy()), 60, send)
    # The arm still meets the obstacle (the guard holds limits, not clearance), within its limits.
    assert bad == 0 and worst <= 1.0 and contact > 0 and guard.unresolved == 0


def test_with_avoid_contacts_the_guard_brakes_before_the_impact(arm):
    u = arm.unwrapped
    spec = tight(u.constraint_spec)
    lim = spec.joint_velocity_limit
    arm.reset(seed=9)
    q0 = u.data.qpos.copy()
    guard = DynamicsGuard(u.model, spec, u.frame_skip, DynamicsGuardConfig(avoid_contacts=True))

    def servo(q, v):
        return np.array([4 * (0.9 * lim[0] - v[0]), 3 * (q0[1] - q[1]) - 0.3 * v[1],
                         2 * (q0[2] - q[2]) - 0.2 * v[2]])

    bad, worst, contact = run(arm, spec, servo, 60, lambda c: guard.filter(c, u.data).sent)
    # The same drive hits the box within 22 steps without this option (test above).
    assert contact == 0 and bad == 0 and guard.unresolved == 0 and guard.repairs > 0


def test_bad_inputs_are_rejected(arm):
    u = arm.unwrapped
    guard = DynamicsGuard(u.model, u.constraint_spec, u.frame_skip)
    with pytest.raises(ValueError, match="expected 3"):
        guard.filter(np.zeros(2), u.data)
    with pytest.raises(ValueError, match="horizon"):
        DynamicsGuardConfig(horizon=-1)
    with pytest.raises(ValueError, match="velocity_margin"):
        DynamicsGuardConfig(velocity_margin=1.0)
    with pytest.raises(ValueError, match="frame_skip"):
        DynamicsGuard(u.model, u.constraint_spec, 0)

import threading

import numpy as np
import pytest
from deploy_helpers import HZ, FakeRobot, StubPolicy

from agents.deploy.clock import FixedRateClock
from agents.deploy.loop import ControlLoop, LoopConfig
from planners.safety_filter import SafetyFilter, SafetyFilterConfig


def _loop(robot, policy, **kw):
    safety = SafetyFilter(SafetyFilterConfig(low=[-100.0], high=[100.0]))
    return ControlLoop(robot, policy, safety, LoopConfig(hz=HZ, **kw))


def test_commands_follow_the_chunks_in_order_with_the_next_chunk_computed_ahead():
    robot, policy = FakeRobot(), StubPolicy()
    # Generous watchdog limits: this test is about order, and a loaded machine may be slow.
    loop = _loop(robot, policy, prefetch=2, inference_timeout_periods=50.0, stale_after_periods=50.0)
    stats = loop.run(cycles=60)
    loop.close()
    sent = np.array([c[0] for c in robot.commands()])
    # Whatever chunk a command came from, it is the action for the number of commands already
    # executed: the robot's state x gives action 0.01 * x.
    assert len(sent) > 30
    assert np.allclose(sent, 0.01 * np.arange(len(sent)))
    assert stats["cycles"] == 60 and stats["chunk_ms"]["count"] >= len(sent) // 4
    assert sum(stats["holds"].values()) == 0 and stats["safety_filter"]["interventions"] == 0
    assert stats["jitter_us"]["p99"] is not None and "deadline_miss_fraction" in stats


def test_a_nan_command_never_reaches_the_robot():
    robot, policy = FakeRobot(), StubPolicy(nan_at=(2, 3))
    loop = _loop(robot, policy, prefetch=1)
    stats = loop.run(cycles=80)
    loop.close()
    sent = robot.commands()
    assert all(np.isfinite(c).all() for c in sent)
    assert stats["safety_filter"]["counts"]["non_finite"] >= 1
    assert stats["holds"]["non_finite_command"] >= 1
    assert policy.calls > 2 and len(sent) > 20  # a fresh chunk was asked for, and the robot went on


def test_a_frozen_policy_makes_the_robot_hold_within_three_periods():
    robot, policy = FakeRobot(), StubPolicy(block_on_call=3)
    loop = _loop(robot, policy, prefetch=2, inference_timeout_periods=2.0)
    stats = loop.run(cycles=40)
    policy.release.set()
    loop.close()
    holds = [e for e in stats["events"] if e.get("kind") == "hold"]
    assert holds and holds[0]["reason"] == "inference_overrun"
    assert holds[0]["tick"] - holds[0]["request_tick"] <= 3
    # The watchdog's hold is the last message: nothing reached the robot while the policy stayed frozen
    # (the first hold in the log is the start-up one, before the first chunk).
    assert robot.log[-1] == ("hold",) and robot.log[-2][0] == "command"
    assert len(robot.commands()) >= 5  # the frozen (third) request came after 4 commands


def test_stale_observations_make_the_robot_hold_and_send_nothing():
    robot, policy = FakeRobot(), StubPolicy()

    def go_silent(r):
        if r.ticks == 20:
            r.answer = False

    robot.on_observe = go_silent
    loop = _loop(robot, policy, stale_after_periods=2.0, obs_timeout_periods=0.1)
    stats = loop.run(cycles=30)
    loop.close()
    assert stats["holds"]["stale_observation"] == 1
    hold = next(e for e in stats["events"] if e.get("reason") == "stale_observation")
    assert hold["tick"] - 20 <= 3
    assert robot.log[-1] == ("hold",) and robot.log[-2][0] == "command"


def test_estop_latches_until_cleared_and_stops_the_robot_at_once():
    robot, policy = FakeRobot(), StubPolicy()
    loop = _loop(robot, policy)
    state = {"stop_tick": None, "calls_at_clear": None}

    def on_observe(r):
        if r.steps == 10 and state["stop_tick"] is None:
            # From another thread, as an operator's button would.
            t = threading.Thread(target=loop.estop, args=("button",))
            t.start()
            t.join()
            state["stop_tick"] = r.ticks
        elif state["stop_tick"] is not None and r.ticks == state["stop_tick"] + 15:
            state["calls_at_clear"] = policy.calls
            loop.clear_estop()

    robot.on_observe = on_observe
    stats = loop.run(cycles=60)
    loop.close()
    kinds = [m[0] for m in robot.log]
    stop = kinds.index("stop")
    assert kinds[stop - 1] == "command" and robot.log[stop - 1][1][0] == pytest.approx(0.09)
    # Between the stop and the clear the loop kept reading observations (15 ticks) but sent nothing:
    # the message after the stop is the first command from a fresh chunk, after the clear.
    assert robot.ticks >= state["stop_tick"] + 15
    assert kinds[stop + 1:stop + 2] in (["command"], ["hold"])
    after = robot.commands()[10:]
    assert after, "commands resume after clear_estop"
    assert policy.calls > state["calls_at_clear"]  # from a chunk computed after the clear
    assert [e["kind"] for e in stats["events"] if "estop" in e["kind"]] == ["estop", "estop_cleared"]


def test_episodes_restart_the_robot_policy_and_filter_with_each_seed():
    robot, policy = FakeRobot(episode_length=10), StubPolicy()
    loop = _loop(robot, policy)
    stats = loop.run(seeds=[11, 12, 13])
    loop.close()
    assert [e["seed"] for e in stats["episodes"]] == [11, 12, 13]
    assert all(e["length"] == 10 and e["success"] and e["return"] == 10.0 for e in stats["episodes"])
    assert [m[1] for m in robot.log if m[0] == "reset"] == [11, 12, 13]
    assert policy.resets == [11, 12, 13]
    assert len(robot.commands()) == 30


def test_clock_keeps_absolute_deadlines_and_skips_ticks_it_missed():
    import time

    clock = FixedRateClock(hz=200.0, spin_s=0.0)
    deadline0, _ = clock.wait()
    clock.wait()
    time.sleep(4 * clock.period)  # a stall of 4 periods
    deadline, woke = clock.wait()
    assert clock.skipped >= 2
    assert woke >= deadline
    assert deadline == pytest.approx(deadline0 + clock.index * clock.period, abs=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hz": 0.0}, "hz=0.0"),
    ({"hz": 10.0, "prefetch": -1}, "prefetch=-1"),
    ({"hz": 10.0, "stale_after_periods": 0.0}, "stale_after_periods=0.0"),
])
def test_bad_loop_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**kwargs)


def test_prefetch_must_leave_actions_to_execute():
    with pytest.raises(ValueError, match="prefetch=4; expected < n_action_steps=4"):
        _loop(FakeRobot(), StubPolicy(), prefetch=4)
    with pytest.raises(ValueError, match="needs cycles or seeds"):
        _loop(FakeRobot(), StubPolicy()).run()

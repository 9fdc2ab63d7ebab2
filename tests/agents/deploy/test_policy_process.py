import os
import signal

import numpy as np
import pytest
from deploy_helpers import HZ, FakeRobot, save_untrained

from agents.deploy.export import ExportConfig, export_policy
from agents.deploy.loop import ControlLoop, LoopConfig
from agents.deploy.policy_process import ProcessChunkWorker
from agents.deploy.runtime import OnnxPolicy
from planners.safety_filter import SafetyFilter, SafetyFilterConfig


@pytest.fixture
def onnx_file(tmp_path):
    folder = save_untrained(tmp_path / "p")
    out = tmp_path / "p.onnx"
    export_policy(ExportConfig(run=str(folder), out=str(out), check_inputs=4))
    return out


def _wait(worker):
    for _ in range(20_000):
        result = worker.poll()
        if result is not None:
            return result
        os.sched_yield()
    raise AssertionError("the policy process did not answer")


def test_policy_process_returns_the_same_chunks_as_the_runtime_in_this_process(onnx_file):
    local = OnnxPolicy(onnx_file, seed=9)
    worker = ProcessChunkWorker(str(onnx_file), (8, 1), seed=0)
    try:
        worker.reset(9)  # reseeded like the local runtime
        history = np.array([[0.1, 0.0, 0.5], [0.2, 0.1, 0.5]], dtype=np.float32)
        for k in range(3):
            worker.submit(history + k, tag=("episode", k))
            result = _wait(worker)
            assert result.tag == ("episode", k) and result.error is None
            assert np.array_equal(result.chunk, local.predict_chunk(history + k))
        worker.submit(np.zeros((3, 3), dtype=np.float32), tag="bad")  # wrong history shape
        result = _wait(worker)
        assert result.chunk is None and "reshape" in result.error
    finally:
        worker.close()


def test_sigstop_of_the_policy_process_makes_the_robot_hold_within_three_periods(onnx_file):
    policy = OnnxPolicy(onnx_file)
    worker = ProcessChunkWorker(str(onnx_file), (policy.horizon, policy.action_dim))
    robot = FakeRobot()

    def freeze(r):
        if r.steps == 6 and r.ticks and not getattr(r, "frozen", False):
            os.kill(worker.pid, signal.SIGSTOP)
            r.frozen = True

    robot.on_observe = freeze
    safety = SafetyFilter(SafetyFilterConfig(low=[-1.0], high=[1.0]))
    loop = ControlLoop(robot, policy, safety, LoopConfig(hz=HZ), worker)
    try:
        stats = loop.run(cycles=60)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        loop.close()
    overruns = [e for e in stats["events"] if e.get("reason") == "inference_overrun"]
    assert overruns and overruns[0]["tick"] - overruns[0]["request_tick"] <= 3
    assert robot.log[-1] == ("hold",)  # and nothing was commanded while the policy stayed frozen
    assert stats["scheduling"] == "off"


def test_realtime_priority_is_validated():
    with pytest.raises(ValueError, match="realtime_priority=100"):
        LoopConfig(hz=10.0, realtime_priority=100)

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from deploy_helpers import TASK, save_untrained

from agents.deploy.export import ExportConfig, export_policy
from agents.deploy.robot import SimRobot, make_robot
from agents.deploy.runtime import OnnxPolicy
from agents.deploy.session import DeployConfig, deploy
from agents.deploy.wire import MAX_FRAME, FrameReader, encode
from policies import load_policy

CONTROLLER_MODULES = ["agents.deploy.runtime", "agents.deploy.loop", "agents.deploy.session",
                      "agents.deploy.robot", "agents.deploy.__main__", "planners.safety_filter"]


@pytest.fixture
def exported(tmp_path):
    folder = save_untrained(tmp_path / "mlp", "mlp")
    out = tmp_path / "mlp.onnx"
    export_policy(ExportConfig(run=str(folder), out=str(out), check_inputs=4))
    return folder, out


@pytest.mark.parametrize("absent", ["torch", "mujoco"])
def test_the_controller_side_imports_neither_torch_nor_mujoco(absent):
    code = f"import sys, {', '.join(CONTROLLER_MODULES)}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_select_action_queues_chunks_like_the_torch_policy(exported):
    folder, path = exported
    policy, _ = load_policy(folder)  # MLP-BC: deterministic, so the two agree step by step
    runtime = OnnxPolicy(path)
    rng = np.random.default_rng(0)
    policy.reset()
    runtime.reset()
    for obs in rng.uniform(-1, 1, size=(11, 3)).astype(np.float32):
        want = np.clip(policy.select_action(obs), -1, 1)
        assert np.abs(runtime.select_action(obs) - want).max() <= 1e-5


def test_runtime_rejects_bad_observations(exported):
    runtime = OnnxPolicy(exported[1])
    with pytest.raises(ValueError, match=r"expected \[B, 2, 3\] or \[2, 3\]"):
        runtime.predict_chunk(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        runtime.predict_chunk(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="observation has 5 features; expected 3"):
        runtime.observe(np.zeros(5))


def test_frames_round_trip_across_partial_reads():
    a, b = socket.socketpair()
    try:
        msgs = [{"op": "command", "action": [0.1, -2.5e-300, 1e300]}, {"op": "observe", "id": 3}]
        data = b"".join(encode(m) for m in msgs)
        reader = FrameReader(b)
        a.sendall(data[:3])  # half a header
        assert reader.read(0.01) is None
        a.sendall(data[3:])
        assert reader.read(1.0) == msgs[0] and reader.read(1.0) == msgs[1]
        with pytest.raises(ValueError, match="exceeds MAX_FRAME"):
            encode({"op": "x", "pad": "y" * MAX_FRAME})
        a.close()
        with pytest.raises(ConnectionError):
            reader.read(1.0)
    finally:
        b.close()


def test_sim_robot_executes_commands_and_rejects_non_finite_ones():
    with SimRobot(TASK) as robot:
        obs = robot.reset(7)
        assert obs.values.shape == (3,) and not obs.done
        robot.send_command(np.array([0.5]))
        robot.send_command(np.array([np.nan]))  # a broken controller: the robot defends itself
        robot.send_command(np.array([0.5, 0.5]))  # wrong size
        # Read before holding: the server answers in order, so this is the step's observation
        # whether its push has arrived yet or the read has to ask for it.
        pushed = robot.read_observation(5.0)
        robot.hold()
        asked = robot.read_observation(5.0)  # nothing new pushed: asked for, after the hold
        stats = robot.stats()
    assert pushed.seq == obs.seq + 1 and not pushed.extra["held"]
    assert asked.seq == pushed.seq and asked.extra["held"]
    assert stats["commands"] == 1 and stats["rejected"] == 2 and stats["non_finite_received"] == 1
    assert stats["holds"] == 1


def test_a_stopped_robot_process_reads_as_stale_and_late_replies_are_dropped():
    with SimRobot(TASK) as robot:
        robot.reset(1)
        os.kill(robot.process.pid, signal.SIGSTOP)
        try:
            assert robot.read_observation(0.05) is None
        finally:
            os.kill(robot.process.pid, signal.SIGCONT)
        time.sleep(0.3)  # let the late reply arrive first: the next read must skip it, not return it
        robot.send_command(np.array([0.2]))
        obs = robot.read_observation(5.0)  # the late reply to the timed-out request is skipped
        assert obs.seq == 2 and robot.stats()["commands"] == 1


def test_unknown_robot_uri_and_task_are_named():
    with pytest.raises(ValueError, match=r"expected one of \['sim://...'\]"):
        make_robot("ros://arm")
    with pytest.raises(ValueError, match="unknown env id 'Nope-v9'"):
        make_robot("sim://Nope-v9")


def test_deploy_runs_episodes_on_the_sim_robot_and_nothing_unsafe_reaches_it(exported, tmp_path):
    stats = deploy(DeployConfig(policy=str(exported[1]), robot=f"sim://{TASK}", hz=200.0, episodes=2))
    assert [e["seed"] for e in stats["episodes"]] == [2989689681, 4020735467]  # kinodiff eval's seeds
    assert stats["robot"]["commands"] == sum(e["length"] for e in stats["episodes"])
    assert stats["robot"]["non_finite_received"] == 0 and stats["robot"]["rejected"] == 0
    assert stats["safety_filter"]["commands"] >= stats["robot"]["commands"]
    json.dumps(stats)  # the whole report is JSON


def test_cli_deploy_writes_json(exported, tmp_path, capsys):
    from agents.deploy.__main__ import main

    out = tmp_path / "deploy.json"
    assert main(["--policy", str(exported[1]), "--robot", f"sim://{TASK}", "--hz", "200",
                 "--episodes", "1", "--json", str(out)]) == 0
    assert "1 episodes: success" in capsys.readouterr().out
    assert json.loads(out.read_text())["cycles"] > 0
    assert main(["--policy", str(tmp_path / "missing.onnx"), "--robot", f"sim://{TASK}"]) == 2


def test_exported_diffusion_policy_is_reproducible_from_its_noise(saved_policy, tmp_path):
    out = tmp_path / "d.onnx"
    export_policy(ExportConfig(run=str(saved_policy), out=str(out), check_inputs=4))
    a, b = OnnxPolicy(out, seed=5), OnnxPolicy(out, seed=5)
    obs = np.zeros((2, 3), dtype=np.float32)
    assert np.array_equal(a.predict_chunk(obs), b.predict_chunk(obs))
    noise = np.ones((1, 8, 1), dtype=np.float32)
    assert not np.array_equal(a.predict_chunk(obs), a.predict_chunk(obs[None], noise)[0])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hz": -1.0}, "hz=-1.0"),
    ({"episodes": 0, "cycles": 0}, "at least one"),
    ({"policy": "p.pt"}, "expected an .onnx file"),
    ({"realtime_priority": 10, "policy_process": False}, "starves a policy thread"),
])
def test_bad_deploy_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeployConfig(**{"policy": "p.onnx", "robot": f"sim://{TASK}", **kwargs})

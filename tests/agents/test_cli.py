import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli.main import main

KINODIFF = str(Path(sys.executable).parent / "kinodiff")


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_help_lists_the_subcommands(capsys):
    out = subprocess.run([KINODIFF, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("envs", "collect", "train", "eval", "quickstart", "bench"):
        assert command in out
    for sub in (["collect"], ["train", "bc"], ["eval"], ["quickstart"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*sub, "--help"])
        assert exit_info.value.code == 0
        assert "--" in capsys.readouterr().out


def test_envs_lists_tasks(capsys):
    assert main(["envs"]) == 0
    assert "kinodiff/PointObstacle-v0" in capsys.readouterr().out


def test_unknown_env_exits_2_with_one_line_listing_valid_ids(capsys, tmp_path):
    assert main(["eval", "--run", str(tmp_path), "--env", "kinodiff/Nope-v0"]) == 2
    line = _error_line(capsys)
    assert "'kinodiff/Nope-v0'" in line and "kinodiff/PointObstacle-v0" in line


def test_collect_refuses_an_existing_store_and_leaves_it_intact(tiny_store, capsys):
    before = sorted(p.name for p in Path(tiny_store).rglob("*"))
    assert main(["collect", "--out", str(tiny_store), "--episodes", "2"]) == 2
    assert "already exists" in _error_line(capsys)
    assert sorted(p.name for p in Path(tiny_store).rglob("*")) == before


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "bc", "--data", "missing.zarr", "--out", "r"], "not found"),
    (["train", "bc", "--data", "DATA", "--out", "r", "--policy", "nope"], "unknown policy 'nope'"),
    (["train", "bc", "--data", "DATA", "--out", "r", "--set", "horizon=0"], "horizon=0"),
    (["collect", "--env", "kinodiff/PointObstacle-v0", "--expert", "oracle", "--out", "x.zarr"],
     "unknown expert 'oracle'"),
    (["eval", "--run", "no-such-run"], "no policy in"),
    (["eval", "--run", "no-such-run", "--shift", "moon"], "unknown shift 'moon'"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tiny_store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str(tiny_store) if a == "DATA" else a for a in args]
    assert main(args) == 2
    assert needle in _error_line(capsys)
    assert not (tmp_path / "x.zarr").exists()


def test_malformed_dataset_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert main(["train", "bc", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.zarr" in _error_line(capsys)


def test_checkpoint_from_another_task_is_refused(tiny_store, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "bc", "--data", str(tiny_store), "--out", str(run), "--policy", "mlp",
                 "--steps", "2", "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--env", "Pendulum-v1", "--episodes", "1"]) == 2
    line = _error_line(capsys)
    assert "kinodiff/PointObstacle-v0" in line and "Pendulum-v1" in line


def test_smoke_collect_train_eval(tmp_path, capsys):
    data, run = tmp_path / "d.zarr", tmp_path / "run"
    assert main(["collect", "--out", str(data), "--episodes", "4", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 4
    assert main(["train", "bc", "--data", str(data), "--out", str(run), "--steps", "10",
                 "--batch-size", "16", "--set", "hidden_dims=(32,32)", "num_inference_steps=4"]) == 0
    assert main(["eval", "--run", str(run), "--episodes", "2", "--no-video", "--shift", "all"]) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    summary = report["policies"]["run"]
    assert summary["episodes"] == 2 and 0.0 <= summary["success_rate"] <= 1.0
    assert summary["shift"] == "all"
    assert (run / "eval" / "report.md").read_text().startswith("# Evaluation report")
    # Resuming a finished collection adds nothing and keeps every episode.
    assert main(["collect", "--out", str(data), "--episodes", "4", "--seed", "1", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["new_episodes"] == 0

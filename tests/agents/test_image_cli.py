"""PushT from pixels end to end through the CLI: collect images, train on them, evaluate."""

import json

import pytest

from agents.cli.main import main
from agents.data.episode_store import EpisodeStore

TINY = ["hidden_dims=(32,32)", "encoder_channels=(8,8,8,8)", "num_keypoints=4", "image_features=8",
        "num_inference_steps=2"]


@pytest.mark.slow
def test_collect_train_eval_from_images(tmp_path, capsys):
    data, run = tmp_path / "img.zarr", tmp_path / "run"
    assert main(["collect", "--env", "kinodiff/PushTImage-v0", "--expert", "mpc", "--episodes", "2",
                 "--out", str(data), "--seed", "3"]) == 0
    store = EpisodeStore.open(data)
    assert store.n_episodes == 2 and store.keys == ["action", "obs.agent_pos", "obs.image", "reward"]
    assert store.step_shape("obs.image") == (96, 96, 3)
    assert store.load(["obs.image"])["obs.image"].dtype == "uint8"
    assert store.chunk_steps < 4096  # image stores use short time chunks
    assert main(["train", "bc", "--data", str(data), "--out", str(run), "--steps", "3",
                 "--batch-size", "4", "--set", *TINY]) == 0
    config = json.loads((run / "config.json").read_text())["policy_config"]
    assert config["obs_encoder"] == "image" and config["image_shape"] == [96, 96, 3]
    assert config["obs_dim"] == 2 and config["state_key"] == "agent_pos"
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--env", "kinodiff/PushTImage-v0", "--episodes", "1",
                 "--no-video"]) == 0
    summary = json.loads((run / "eval" / "report.json").read_text())["policies"]["run"]
    assert summary["episodes"] == 1 and 0.0 <= summary["max_coverage_mean"] <= 1.0
    # The image policy refuses the state task, naming it.
    assert main(["eval", "--run", str(run), "--env", "kinodiff/PushT-v0", "--episodes", "1"]) == 2
    assert "PushT-v0" in capsys.readouterr().err
    # Tools that feed a policy one observation vector refuse it in one line instead of crashing.
    for argv in (["export", "--run", str(run), "--out", str(tmp_path / "p.onnx")],
                 ["calibrate", "--run", str(run), "--data", str(data), "--episodes", "2"],
                 ["train", "distill", "--teacher", str(run), "--out", str(tmp_path / "student")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "obs_encoder='image'" in err and "expected 'state'" in err and "Traceback" not in err
    assert not (tmp_path / "p.onnx").exists() and not (tmp_path / "student").exists()

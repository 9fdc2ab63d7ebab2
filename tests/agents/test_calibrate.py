import json

import numpy as np
import pytest

from agents.calibrate import CalibrateConfig, calibrate
from agents.cli.main import main
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from policies import load_policy
from policies.uncertainty import SCORES, load_estimator

# A goal radius larger than the arena: every episode succeeds on its first step, so a briefly
# trained policy still yields successful nominal rollouts to calibrate on.
EASY = {"goal_radius": 3.0}


@pytest.fixture
def tiny_run(tiny_store, tmp_path):
    return train_bc(BcRunConfig(data=str(tiny_store), policy="diffusion", out=str(tmp_path / "r"),
                                policy_config={"hidden_dims": (32,), "num_inference_steps": 2},
                                train=BcTrainConfig(steps=3, batch_size=8)), progress=False)


def test_calibrate_stores_heads_and_thresholds_with_the_policy(tiny_run, tmp_path):
    summary = calibrate(CalibrateConfig(run=str(tiny_run), episodes=10, alpha=0.34, head_steps=3,
                                        head_batch=8, env_kwargs=EASY), progress=False)
    assert summary["successes"] == 10 and summary["nominal_success_rate"] == 1.0
    assert len(set(summary["seeds"])) == 10
    folder = tiny_run / "checkpoints" / "step_0000003"
    doc = json.loads((folder / "uncertainty.json").read_text())
    assert doc["calibration"]["alpha"] == 0.34 and doc["calibration"]["n_episodes"] == 10
    policy, _ = load_policy(folder)
    estimator, cal = load_estimator(folder, policy)
    assert cal is not None and cal.names == SCORES
    assert np.isfinite(cal.combined_threshold) and set(cal.thresholds) == set(SCORES)
    # A second calibration reuses the heads unless asked to retrain them.
    weights = (folder / "uncertainty.safetensors").read_bytes()
    calibrate(CalibrateConfig(run=str(tiny_run), episodes=10, alpha=0.34, env_kwargs=EASY),
              progress=False)
    assert (folder / "uncertainty.safetensors").read_bytes() == weights
    # kinodiff eval --uncertainty adds the uncertainty report beside the usual one.
    out = tmp_path / "eval"
    assert main(["eval", "--run", str(tiny_run), "--episodes", "2", "--no-video", "--uncertainty",
                 "--shift", "obs_noise", "--out", str(out), "--env-kwargs", "goal_radius=3.0"]) == 0
    assert (out / "report.md").is_file() and "obs_noise" in (out / "uncertainty.md").read_text()


def test_calibrate_refuses_without_successes_and_bad_alpha(tiny_run, capsys):
    with pytest.raises(ValueError, match="alpha=1.5"):
        CalibrateConfig(run=str(tiny_run), alpha=1.5)
    # 3 successes cannot give a threshold at alpha 0.05; the CLI says so in one line, exit code 2.
    code = main(["calibrate", "--run", str(tiny_run), "--episodes", "3", "--head-steps", "2",
                 "--env-kwargs", "goal_radius=3.0"])
    assert code == 2
    assert "cannot give a threshold at alpha=0.05" in capsys.readouterr().err

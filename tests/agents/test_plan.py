"""agents.plan and ``kinodiff plan``: planner evaluation beside the expert, normalized score."""

import json

import pytest

from agents.cli.main import main
from agents.plan import PlanConfig, normalized_score, run_plan


def test_normalized_score_by_hand():
    # Random -4, expert 12: the expert scores 100, random 0, halfway (4) scores 50.
    assert normalized_score(12.0, -4.0, 12.0) == pytest.approx(100.0)
    assert normalized_score(-4.0, -4.0, 12.0) == pytest.approx(0.0)
    assert normalized_score(4.0, -4.0, 12.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="undefined"):
        normalized_score(1.0, 2.0, 2.0)


def test_run_plan_writes_a_report_with_baselines(tmp_path):
    config = PlanConfig(env="kinodiff/TinyReach-v0", planner="predictive_sampling", episodes=2,
                        out=str(tmp_path / "plan"), settings={"samples": 16, "horizon": 12, "nthread": 1})
    summary = run_plan(config, progress=False)
    assert set(summary["summaries"]) == {"predictive_sampling", "expert", "random"}
    assert summary["success_rate"] == 1.0  # TinyReach is a 1-D reach: the MPC solves it
    assert summary["normalized_score"] is not None
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert doc["summaries"]["predictive_sampling"]["latency_ms_p50"] > 0
    assert (tmp_path / "plan" / "report.md").is_file()


def test_cli_plan_and_its_errors(tmp_path, capsys):
    code = main(["plan", "--env", "kinodiff/Maze-v0", "--planner", "hierarchical", "--episodes", "1",
                 "--no-baselines", "--env-kwargs", "layout=u", "--out", str(tmp_path / "p"),
                 "--set", "low_level_settings={'samples': 16, 'horizon': 16, 'substeps': 1}"])
    assert code == 0
    assert (tmp_path / "p" / "plan_trace.png").stat().st_size > 0
    assert "hierarchical on kinodiff/Maze-v0: success 1.00" in capsys.readouterr().out
    assert main(["plan", "--env", "kinodiff/Maze-v0", "--planner", "nope"]) == 2
    assert "unknown planner 'nope'" in capsys.readouterr().err
    assert main(["plan", "--env", "kinodiff/TinyReach-v0", "--goals", "3"]) == 2
    assert "goals=3 needs env kinodiff/Maze-v0" in capsys.readouterr().err

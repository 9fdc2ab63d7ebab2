import math

import numpy as np
import pytest

from agents.calibrate import CalibrateConfig, calibrate
from agents.evaluate import resolve_policy_dir
from agents.monitored import load_monitored, make_fallback, run_monitored_episodes
from agents.plan import PlannerActor
from agents.rollout.env_factory import EnvFactory
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc
from agents.uncertainty_eval import (
    UncertaintyEvalConfig,
    auroc,
    average_precision,
    evaluate_uncertainty,
    reliability,
    write_uncertainty_report,
)
from envs import make_env
from policies.uncertainty import Calibration


def test_auroc_and_average_precision_hand_computed():
    scores = np.array([0.9, 0.8, 0.4, 0.3])
    failed = np.array([True, False, True, False])
    # Pairs (failure, success): (0.9, 0.8) (0.9, 0.3) (0.4, 0.3) ranked right, (0.4, 0.8) wrong -> 3/4
    assert auroc(scores, failed) == 0.75
    # Ranked: F (p=1/1), S, F (p=2/3), S -> AP = (1 + 2/3) / 2 = 0.8333
    assert math.isclose(average_precision(scores, failed), 5 / 6)
    # A tie between a failure and a success counts one half.
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert auroc(scores, np.zeros(4, dtype=bool)) is None
    assert average_precision(scores, np.ones(4, dtype=bool)) is None


def test_reliability_bins_and_ece():
    # Two bins of two: predicted 0.1 with 0 failures, predicted 0.9 with 1 failure of 2.
    out = reliability(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0, 0, 1, 0]), bins=2)
    assert [b["count"] for b in out["bins"]] == [2, 2]
    assert out["bins"][1]["observed"] == 0.5
    # ECE = 0.5 * |0.1 - 0| + 0.5 * |0.9 - 0.5| = 0.05 + 0.2
    assert math.isclose(out["ece"], 0.25)


def test_unknown_fallback_is_named():
    with pytest.raises(ValueError, match="unknown fallback 'teleport'"):
        make_fallback("teleport", "kinodiff/PointObstacle-v0", make_env("kinodiff/PointObstacle-v0"))


def _tiny_run(tiny_store, tmp_path):
    """A 3-step diffusion policy: only the plumbing is under test."""
    return train_bc(BcRunConfig(data=str(tiny_store), policy="diffusion", out=str(tmp_path / "r"),
                           policy_config={"hidden_dims": (32,), "num_inference_steps": 2},
                           train=BcTrainConfig(steps=3, batch_size=8)), progress=False)


def test_evaluate_uncertainty_end_to_end(tiny_store, tmp_path):
    run = _tiny_run(tiny_store, tmp_path)
    easy = {"goal_radius": 3.0}
    with pytest.raises(FileNotFoundError, match="kinodiff calibrate"):
        evaluate_uncertainty(UncertaintyEvalConfig(run=str(run), episodes=1), progress=False)
    calibrate(CalibrateConfig(run=str(run), episodes=10, alpha=0.34, head_steps=3, head_batch=8,
                              env_kwargs=easy), progress=False)
    doc = evaluate_uncertainty(UncertaintyEvalConfig(run=str(run), shifts=("obs_noise",), episodes=3,
                                                     fallback="expert:scripted", env_kwargs=easy,
                                                     compare_fallbacks=("stop",)),
                               progress=False)
    assert set(doc["conditions"]) == {"nominal", "obs_noise"}
    nominal = doc["conditions"]["nominal"]
    assert nominal["success_bare"] == 1.0 and len(nominal["episodes"]) == 3
    assert set(nominal["success_by_fallback"]) == {"expert:scripted", "stop"}
    assert nominal["metrics"]["scores"]["combined"]["auroc"] is None  # no failures to rank
    files = write_uncertainty_report(tmp_path / "rep", doc)
    md = files["md"].read_text()
    assert files["plot"].stat().st_size > 0 and "obs_noise" in md and "Success by fallback" in md


def test_monitored_episode_equals_bare_until_the_alarm(tiny_store, tmp_path):
    run = _tiny_run(tiny_store, tmp_path)
    calibrate(CalibrateConfig(run=str(run), episodes=6, alpha=0.5, head_steps=2, head_batch=8,
                              env_kwargs={"goal_radius": 3.0}), progress=False)
    estimator, cal = load_monitored(resolve_policy_dir(run))
    never = Calibration(**{**cal.to_dict(), "combined_threshold": math.inf})
    factory = EnvFactory("kinodiff/PointObstacle-v0", {}, None)
    jobs = [(0, 11)]
    bare = run_monitored_episodes(factory, estimator, never, jobs, enabled=False, progress=False)
    on = run_monitored_episodes(factory, estimator, never, jobs, enabled=True, progress=False)
    # Seeded env and policy: without an alarm the monitored run is the bare run, chunk for chunk.
    assert np.array_equal(bare[0].trace, on[0].trace) and bare[0].length == on[0].length
    always = Calibration(**{**cal.to_dict(), "combined_threshold": -1.0})
    handed = run_monitored_episodes(factory, estimator, always, jobs, enabled=True, progress=False)
    assert handed[0].alarm_step == 0 and handed[0].handovers[0]["step"] == 0


def test_alarm_hands_control_to_a_registered_planner(tiny_store, tmp_path):
    run = _tiny_run(tiny_store, tmp_path)
    calibrate(CalibrateConfig(run=str(run), episodes=4, alpha=0.5, head_steps=2, head_batch=8,
                              env_kwargs={"goal_radius": 3.0}), progress=False)
    estimator, cal = load_monitored(resolve_policy_dir(run))
    always = Calibration(**{**cal.to_dict(), "combined_threshold": -1.0})
    factory = EnvFactory("kinodiff/PointObstacle-v0", {}, "obstacle_shift")
    ep = run_monitored_episodes(factory, estimator, always, [(0, 11)], enabled=True,
                                fallback="planner:predictive_sampling", progress=False)[0]
    log = ep.handovers[0]
    assert ep.alarm_step == 0 and log["step"] == 0 and log["threshold"] == -1.0
    assert log["combined"] > log["threshold"] and log["fallback_steps"] == ep.length
    # The executed first action is the planner's own plan from the same (shifted) start state.
    env = factory()
    obs, _ = env.reset(seed=11)
    expected = PlannerActor(env, "kinodiff/PointObstacle-v0", "predictive_sampling", None, {})
    expected.reset(0, 11)
    assert np.allclose(log["first_action"], expected.act(obs))
    # In control from step 0, the planner reaches the goal around the moved box.
    assert ep.success
    with pytest.raises(ValueError, match="unknown planner 'teleport'"):
        make_fallback("planner:teleport", "kinodiff/PointObstacle-v0", env)
    with pytest.raises(ValueError, match="fallback planner 'teleport' is unknown"):
        UncertaintyEvalConfig(run=str(run), fallback="planner:teleport")

import math

import numpy as np
import pytest

from agents.evaluate import EvalConfig, evaluate, summarize, wilson_interval
from agents.rollout.worker import EpisodeResult
from agents.train.bc import BcRunConfig, BcTrainConfig, train_bc


def test_wilson_interval_hand_computed():
    # 8/10, z=1.96: centre = (0.8 + 3.8416/20) / (1 + 3.8416/10) = 0.99208 / 1.38416 = 0.71674;
    # half = 1.96 * sqrt(0.016 + 3.8416/400) / 1.38416 = 1.96 * 0.16001 / 1.38416 = 0.22658
    # -> (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert math.isclose(lo, 0.4902, abs_tol=1e-3) and math.isclose(hi, 0.9433, abs_tol=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def _result(i, success, mode, latency):
    return EpisodeResult(index=i, seed=i, source="p", steps={}, success=success, diverged=False,
                         episode_return=float(i), length=10 + i, mode=mode,
                         positions=np.zeros((1, 2)), latencies=[latency])


def test_summary_counts_modes_among_successes_only():
    results = [_result(0, True, "left", 0.001), _result(1, True, "right", 0.002),
               _result(2, True, "left", 0.003), _result(3, False, "right", 0.004)]
    s = summarize(results, [0, 1, 2, 3])
    assert s["success_rate"] == 0.75 and s["episodes"] == 4
    assert s["mode_coverage"] == {"left": 2 / 3, "right": 1 / 3}
    assert s["return_mean"] == 1.5 and s["length_mean"] == 11.5
    p50 = s["latency_ms_p50"]  # median of 1, 2, 3, 4 ms
    assert math.isclose(p50, 2.5)
    assert s["max_coverage_mean"] is None  # no task coverage reported


def test_summary_averages_each_episodes_best_coverage():
    results = [_result(i, i == 0, None, 0.001) for i in range(3)]
    for r, best in zip(results, (0.97, 0.5, 0.0), strict=True):
        r.max_coverage = best
    s = summarize(results, [0, 1, 2])
    assert math.isclose(s["max_coverage_mean"], (0.97 + 0.5 + 0.0) / 3)


def test_evaluate_records_seeds_and_refuses_another_task(tiny_store, tmp_path):
    run = train_bc(BcRunConfig(data=str(tiny_store), policy="mlp", out=str(tmp_path / "r"),
                               policy_config={"hidden_dims": (16,)},
                               train=BcTrainConfig(steps=3, batch_size=8)), progress=False)
    summary, results = evaluate(EvalConfig(run=str(run), episodes=2, video=True), progress=False)
    again, _ = evaluate(EvalConfig(run=str(run), episodes=2, video=False), progress=False)
    assert summary["seeds"] == again["seeds"] and len(set(summary["seeds"])) == 2
    assert summary["return_mean"] == again["return_mean"]
    assert results[0].frames and results[0].frames[0].shape[-1] == 3
    with pytest.raises(ValueError, match="obs_dim=4.*CartPole-v1 has obs_dim=4, action_dim=1"):
        evaluate(EvalConfig(run=str(run), env="CartPole-v1", episodes=1), progress=False)

import math

import numpy as np
import pytest

from policies.uncertainty.conformal import Calibration, conformal_quantile, fit_calibration, smooth


def test_conformal_quantile_rank_hand_computed():
    scores = np.arange(1, 20, dtype=float)  # 1..19
    # n=19, alpha=0.1: rank ceil(20 * 0.9) = 18 -> the 18th smallest = 18
    assert conformal_quantile(scores, 0.1) == 18.0
    # alpha=0.05 needs n >= 19: rank ceil(20 * 0.95) = 19 -> the maximum
    assert conformal_quantile(scores, 0.05) == 19.0
    with pytest.raises(ValueError, match="at least 19"):
        conformal_quantile(scores[:10], 0.05)
    with pytest.raises(ValueError, match="alpha=1.5"):
        conformal_quantile(scores, 1.5)


def test_smooth_trailing_mean():
    trace = np.array([[2.0], [4.0], [6.0]])
    # window 2: [2, (2+4)/2, (4+6)/2]
    assert np.allclose(smooth(trace, 2)[:, 0], [2.0, 3.0, 5.0])
    assert np.array_equal(smooth(trace, 1), trace)


def test_false_alarm_rate_is_bounded_on_exchangeable_episodes():
    rng = np.random.default_rng(0)
    names = ("a", "b")

    def episodes(n):
        return [rng.gamma(2.0, 1.0, size=(int(rng.integers(5, 20)), 2)) for _ in range(n)]

    # The guarantee is marginal over calibration sets: E[P(alarm)] <= alpha, so average 20 of them.
    combined, per_score = [], []
    for _ in range(20):
        cal = fit_calibration(episodes(60), names, alpha=0.05, window=2)
        test = [cal.episode_scores(t) for t in episodes(300)]
        combined.append(np.mean([s["combined"] > cal.combined_threshold for s in test]))
        per_score.append(np.mean([s["a"] > cal.thresholds["a"] for s in test]))
    # 4,000 test episodes in all: the mean's standard error is ~0.0035 (plus calibration spread)
    assert np.mean(combined) <= 0.05 + 0.012 and np.mean(per_score) <= 0.05 + 0.012
    # ... and the bound is not vacuous: the alarm does fire on nominal episodes at a similar rate
    assert np.mean(per_score) >= 0.02
    cal = fit_calibration(episodes(200), names, alpha=0.05, window=2)
    assert cal.n_episodes == 200 and set(cal.thresholds) == set(names)


def test_first_alarm_and_round_trip():
    cal = Calibration(alpha=0.1, names=("a",), window=1, thresholds={"a": 1.0}, scales={"a": 2.0},
                      combined_threshold=1.0, combined_calibration=[0.2, 0.5, 1.0])
    trace = np.array([[0.5], [1.5], [3.0]])
    assert cal.first_alarm(trace, "a") == 1  # 1.5 > 1.0
    assert cal.first_alarm(trace) == 2  # combined 3.0 / 2.0 = 1.5 > 1.0
    # p-value of 0.6: (1 + #{0.6 <= c}) / (3 + 1) = (1 + 1) / 4
    assert math.isclose(cal.p_value(0.6), 0.5)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="window=0"):
        Calibration(alpha=0.1, names=("a",), window=0)

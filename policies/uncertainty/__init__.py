"""Uncertainty for every policy call: scores, conformal calibration and a fallback wrapper.

``policies.uncertainty`` imports torch and numpy only (never mujoco), like the rest of ``policies``.
"""

from policies.uncertainty.conformal import Calibration, conformal_quantile, fit_calibration
from policies.uncertainty.estimator import SCORES, UncertaintyConfig, UncertaintyEstimator
from policies.uncertainty.fallback import Fallback, HandOver, MonitoredPolicy, SafeStop
from policies.uncertainty.io import load_estimator, save_calibration, save_estimator

__all__ = ["SCORES", "Calibration", "Fallback", "HandOver", "MonitoredPolicy", "SafeStop",
           "UncertaintyConfig", "UncertaintyEstimator", "conformal_quantile", "fit_calibration",
           "load_estimator", "save_calibration", "save_estimator"]

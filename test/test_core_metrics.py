"""Metrics against values worked out by hand on tiny arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest

from monother_ros.core.metrics import METRIC_KEYS, MetricAccumulator, compute_errors, compute_metrics

GT = [1.0, 2.0, 4.0]
PRED = [1.0, 2.5, 2.0]


def _hand(gt, pred):
    """Element by element with math (independent of the vectorised code)."""
    n = len(gt)
    th = [max(g / p, p / g) for g, p in zip(gt, pred)]
    e = [math.log(p) - math.log(g) for g, p in zip(gt, pred)]
    me = sum(e) / n
    me2 = sum(x * x for x in e) / n
    return {
        "a1": sum(t < 1.25 for t in th) / n,
        "a2": sum(t < 1.5625 for t in th) / n,
        "a3": sum(t < 1.953125 for t in th) / n,
        "abs_rel": sum(abs(g - p) / g for g, p in zip(gt, pred)) / n,
        "sq_rel": sum((g - p) ** 2 / g for g, p in zip(gt, pred)) / n,
        "rmse": math.sqrt(sum((g - p) ** 2 for g, p in zip(gt, pred)) / n),
        "rmse_log": math.sqrt(me2),
        "log_10": sum(abs(math.log10(g) - math.log10(p)) for g, p in zip(gt, pred)) / n,
        "silog": math.sqrt(me2 - me * me) * 100,
    }


def test_keys_are_stable():
    assert METRIC_KEYS == ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")
    assert set(compute_errors(np.array(GT), np.array(PRED))) == set(METRIC_KEYS)


def test_compute_errors_hand_values():
    m = compute_errors(np.array(GT), np.array(PRED))
    # Written out: thresholds 1, 1.25 (not < 1.25), 2.
    assert m["a1"] == pytest.approx(1 / 3)
    assert m["a2"] == pytest.approx(2 / 3)
    assert m["a3"] == pytest.approx(2 / 3)
    assert m["abs_rel"] == pytest.approx(0.25)
    assert m["sq_rel"] == pytest.approx(0.375)
    assert m["rmse"] == pytest.approx(math.sqrt(4.25 / 3))
    assert m["log_10"] == pytest.approx((math.log10(2.5 / 2) + math.log10(2)) / 3)
    assert m["silog"] == pytest.approx(39.0133, abs=1e-3)
    for k, v in _hand(GT, PRED).items():
        assert m[k] == pytest.approx(v, rel=1e-12), k


def test_perfect_and_scaled_predictions():
    gt = np.array([1.0, 3.0, 7.0, 20.0])
    perfect = compute_errors(gt, gt)
    assert perfect["a1"] == 1.0 and perfect["abs_rel"] == 0.0 and perfect["rmse"] == 0.0
    assert perfect["silog"] == pytest.approx(0.0, abs=1e-6)
    scaled = compute_errors(gt, 1.1 * gt)
    # A global scale is invisible to SILog (population variance of a constant log error).
    assert scaled["silog"] == pytest.approx(0.0, abs=1e-5)
    assert scaled["abs_rel"] == pytest.approx(0.1)
    assert scaled["rmse_log"] == pytest.approx(math.log(1.1))


def test_compute_metrics_masks_and_clamps():
    gt = np.array([[0.0, np.nan, 2.0], [80.0, 4.0, 1.0]], np.float32)
    pred = np.array([[5.0, 5.0, np.nan], [3.0, np.inf, 200.0]], np.float32)
    m = compute_metrics(gt, pred, min_depth=1e-3, max_depth=80.0)
    # Valid gt: 2.0, 4.0, 1.0 (0, NaN and 80 are out); preds clamp: NaN -> 1e-3, inf -> 80, 200 -> 80.
    ref = _hand([2.0, 4.0, 1.0], [1e-3, 80.0, 80.0])
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(ref[k], rel=1e-6), k
    assert compute_metrics(np.zeros((2, 2)), np.ones((2, 2))) is None
    only = compute_metrics(gt, pred, mask=np.array([[0, 0, 1], [0, 0, 0]], bool))
    assert only["abs_rel"] == pytest.approx(abs(2.0 - 1e-3) / 2.0, rel=1e-6)


def test_prediction_resized_to_ground_truth():
    gt = np.full((6, 8), 5.0, np.float32)
    m = compute_metrics(gt, np.full((3, 4), 4.0, np.float32))
    assert m["abs_rel"] == pytest.approx(0.2, rel=1e-6)


def test_accumulator_per_frame_vs_pooled():
    f1 = (np.array([[1.0, 2.0]]), np.array([[1.0, 2.0]]))  # perfect, 2 px
    f2 = (np.array([[4.0, 4.0, 4.0, 4.0]]), np.array([[2.0, 2.0, 2.0, 2.0]]))  # abs_rel 0.5, 4 px
    per_frame = MetricAccumulator()
    pooled = MetricAccumulator("pixel_pooled")
    for acc in (per_frame, pooled):
        acc.update(*f1)
        acc.update(*f2)
        assert acc.update(np.zeros((1, 2)), np.ones((1, 2))) is None
        assert acc.frames == 2 and acc.skipped == 1 and acc.pixels == 6
    assert per_frame.result()["abs_rel"] == pytest.approx(0.25)
    assert pooled.result()["abs_rel"] == pytest.approx(2.0 / 6)
    assert per_frame.result()["rmse"] == pytest.approx(1.0)  # (0 + 2) / 2
    assert pooled.result()["rmse"] == pytest.approx(math.sqrt(16 / 6))
    # Pooled SILog sees the two frames' different log errors: not zero.
    assert per_frame.result()["silog"] == pytest.approx(0.0, abs=1e-6)
    assert pooled.result()["silog"] > 30
    with pytest.raises(ValueError):
        MetricAccumulator().result()

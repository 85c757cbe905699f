"""Evaluation scoring: hand-computed metrics, alignment, distance bins, Depth Pro boundary F1."""
from __future__ import annotations

import math

import numpy as np
import pytest

from monother_ros.errors import ConfigError
from monother_ros.eval.evaluate import (
    BOUNDARY_THRESHOLDS,
    EvalOptions,
    ModelSpec,
    ScoreSet,
    align_prediction,
    boundary_f1,
    score_frame,
)


def _opts(**kw) -> EvalOptions:
    return EvalOptions(progress=False, **kw)


def test_score_frame_matches_hand_computed_values():
    gt = np.array([[1.0, 2.0, 4.0, np.nan]], np.float32)
    pred = np.array([[2.0, 2.0, 2.0, 5.0]], np.float32)
    score, aligned = score_frame(pred, gt, _opts(boundary=False))
    m = score.metrics
    assert m["abs_rel"] == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)
    assert m["sq_rel"] == pytest.approx((1 / 1 + 0 + 4 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    # max(gt/pred, pred/gt) = 2, 1, 2: only the middle pixel is under 1.25, 1.25^2 and 1.25^3 (1.95).
    assert m["a1"] == m["a2"] == m["a3"] == pytest.approx(1 / 3)
    e = np.log([2.0, 1.0, 0.5])
    assert m["rmse_log"] == pytest.approx(math.sqrt(np.mean(e**2)), rel=1e-6)
    assert m["silog"] == pytest.approx(math.sqrt(np.mean(e**2) - np.mean(e) ** 2) * 100, rel=1e-5)
    assert m["log_10"] == pytest.approx(np.mean(np.abs(np.log10([1, 2, 4]) - np.log10(2.0))), rel=1e-6)
    assert score.pixels == 3 and score.gt_pixels == 3 and score.coverage == 1.0
    assert aligned[0, 3] == 5.0  # predictions without GT are kept for the pictures


def test_nan_predictions_reduce_coverage_not_metrics():
    gt = np.full((2, 2), 10.0, np.float32)
    pred = np.array([[11.0, np.nan], [11.0, 11.0]], np.float32)
    score, _ = score_frame(pred, gt, _opts(boundary=False))
    assert score.pixels == 3 and score.gt_pixels == 4 and score.coverage == pytest.approx(0.75)
    assert score.metrics["abs_rel"] == pytest.approx(0.1, rel=1e-6)


def test_range_clamps_predictions_and_filters_gt():
    gt = np.array([[5.0, 90.0, 0.0005]], np.float32)  # only 5 m is inside (1e-3, 80)
    pred = np.array([[200.0, 3.0, 3.0]], np.float32)  # clamped to 80
    score, _ = score_frame(pred, gt, _opts(boundary=False))
    assert score.pixels == 1
    assert score.metrics["abs_rel"] == pytest.approx(75 / 5)


def test_no_valid_pixel_gives_none():
    gt = np.full((3, 3), np.nan, np.float32)
    assert score_frame(np.ones((3, 3), np.float32), gt, _opts()) == (None, None)


@pytest.mark.parametrize("mode", ["median", "lsq"])
def test_alignment_recovers_metrics_of_unscaled_prediction(mode):
    rng = np.random.default_rng(3)
    gt = rng.uniform(2, 60, (24, 32)).astype(np.float32)
    base = (gt * rng.uniform(0.8, 1.25, gt.shape)).astype(np.float32)
    scaled = base * 3.0 + (1.5 if mode == "lsq" else 0.0)
    s_base, _ = score_frame(base, gt, _opts(align=mode, boundary=False))
    s_scaled, _ = score_frame(scaled, gt, _opts(align=mode, boundary=False))
    for k, v in s_base.metrics.items():
        assert s_scaled.metrics[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    s_none, _ = score_frame(scaled, gt, _opts(align="none", boundary=False))
    assert s_none.metrics["abs_rel"] > 1.5 * s_base.metrics["abs_rel"]


def test_median_and_lsq_closed_forms():
    gt = np.array([2.0, 4.0, 6.0, 8.0], np.float32)
    pred = (gt - 1.0) / 2.0  # gt = 2 * pred + 1
    out, s, t = align_prediction(pred, gt, "lsq")
    assert (s, t) == (pytest.approx(2.0), pytest.approx(1.0)) and np.allclose(out, gt, atol=1e-5)
    out, s, t = align_prediction(pred, gt, "median")
    assert s == pytest.approx(np.median(gt) / np.median(pred)) and t == 0.0
    out, s, t = align_prediction(np.full(4, 3.0, np.float32), gt, "lsq")  # constant: shift only
    assert s == 1.0 and np.allclose(out, np.mean(gt))
    with pytest.raises(ValueError):
        align_prediction(pred, gt, "bogus")


def test_distance_bins_pool_pixels_per_bin():
    gt = np.array([[5.0, 5.0, 15.0, 30.0, 60.0, 60.0]], np.float32)
    pred = np.array([[5.5, 4.5, 15.0, 33.0, 60.0, 90.0]], np.float32)
    score, _ = score_frame(pred, gt, _opts(boundary=False))
    counts = score.sums[:, 0]
    assert counts.tolist() == [2, 1, 1, 2]
    agg = ScoreSet(DEFAULT_EDGES)
    agg.add(score)
    bins = agg.to_dict()["bins"]
    assert bins[0]["metrics"]["abs_rel"] == pytest.approx(0.1)
    assert bins[1]["metrics"]["abs_rel"] == pytest.approx(0.0)
    assert bins[2]["metrics"]["abs_rel"] == pytest.approx(0.1)
    assert bins[3]["metrics"]["abs_rel"] == pytest.approx((0 + 20 / 60) / 2)  # 90 clamped to 80
    # The frame metric is the pool of all bins.
    assert score.metrics["abs_rel"] == pytest.approx((0.1 + 0.1 + 0 + 0.1 + 0 + 20 / 60) / 6)


DEFAULT_EDGES = (0.0, 10.0, 20.0, 40.0, 80.0)


def test_scoreset_averages_frames_and_counts():
    agg = ScoreSet(DEFAULT_EDGES)
    gt = np.full((4, 4), 10.0, np.float32)
    for factor in (1.1, 1.3):
        score, _ = score_frame(gt * factor, gt, _opts(boundary=False))
        agg.add(score)
    agg.without_gt += 2
    d = agg.to_dict()
    assert d["frames_scored"] == 2 and d["frames_without_gt"] == 2 and d["pixels"] == 32
    assert d["metrics"]["abs_rel"] == pytest.approx(0.2, rel=1e-5)


# ------------------------------------------------------------------------------------- boundary F1
def _square(shift: int = 0, ratio: float = 2.0, size: int = 12) -> np.ndarray:
    d = np.full((size, size), 20.0, np.float32)
    d[4:8, 4 + shift:8 + shift] = 20.0 / ratio
    return d


def test_boundary_f1_perfect_square_is_one():
    gt = _square()
    assert boundary_f1(gt, gt) == pytest.approx(1.0)
    assert boundary_f1(gt * 7.0, gt) == pytest.approx(1.0)  # scale invariant


def test_boundary_f1_flat_prediction_is_zero():
    gt = _square()
    assert boundary_f1(np.full_like(gt, 15.0), gt) == 0.0


def test_boundary_f1_shifted_square_hand_computed():
    # Left/right edges (4 pairs each) miss entirely; the top/bottom edges overlap on 3 of 4 columns:
    # precision = recall = (0 + 0 + 3/4 + 3/4) / 4 = 0.375 at every threshold.
    assert boundary_f1(_square(shift=1), _square()) == pytest.approx(0.375)


def test_boundary_f1_weak_edge_counts_only_lower_thresholds():
    # A 15 % depth step is an edge for the thresholds below 1.15 (the first 5 of 1.05..1.25), weighted by t.
    pred = _square(ratio=1.15)
    t = BOUNDARY_THRESHOLDS
    expected = t[t < 1.15].sum() / t.sum()
    assert (t < 1.15).sum() == 5
    assert boundary_f1(pred, _square()) == pytest.approx(expected)


def test_boundary_f1_ignores_pairs_without_ground_truth():
    gt = _square()
    pred = gt.copy()
    pred[:, :6] = 3.0  # garbage where GT is missing
    gt_holes = gt.copy()
    gt_holes[:, :6] = np.nan
    # Only the right edge (cols 7/8) and top/bottom pairs in cols >= 6 remain; the prediction matches there.
    assert boundary_f1(pred, gt_holes) == pytest.approx(boundary_f1(gt_holes, gt_holes))
    assert boundary_f1(pred, np.full_like(gt, np.nan)) is None


def test_options_validation_and_model_spec():
    with pytest.raises(ConfigError):
        _opts(align="mean").validate()
    with pytest.raises(ConfigError):
        _opts(bins=(0.0, 10.0, 5.0)).validate()
    with pytest.raises(ConfigError):
        _opts(min_depth=10, max_depth=5).validate()
    with pytest.raises(ConfigError):
        _opts(every=0).validate()
    assert ModelSpec.parse("student=/x/y") == ModelSpec("student", __import__("pathlib").Path("/x/y"))
    assert ModelSpec.parse("/a/b/model.onnx").name == "model"
    assert ModelSpec.parse("/a/b/default").name == "default"

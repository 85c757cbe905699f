"""The fast scoring path (one pass over valid pixels, grouped sums, candidate-only boundary F1, reused
buffers) against plain per-definition implementations written here: same counts and F1 exactly, sums to
float64 rounding."""
from __future__ import annotations

import math

import numpy as np
import pytest

from monother_ros.core.metrics import Workspace, compute_errors, grouped_pixel_sums, pixel_sums
from monother_ros.eval.evaluate import CURVE_BIN_M, EvalOptions, align_prediction, boundary_f1, score_frame


def _plain_sums(g: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The reference formulas, float64, two divisions and four logs per pixel."""
    g, p = g.astype(np.float64), p.astype(np.float64)
    th = np.maximum(g / p, p / g)
    d = g - p
    e = np.log(p) - np.log(g)
    return np.array([g.size, np.sum(th < 1.25), np.sum(th < 1.25**2), np.sum(th < 1.25**3), np.sum(np.abs(d) / g),
                     np.sum(d * d / g), np.sum(d * d), np.sum(e * e), np.sum(np.abs(np.log10(g) - np.log10(p))),
                     np.sum(e)])


def _plain_bf1(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float | None:
    """Depth Pro boundary F1 mask by mask (float32 logs, ratio tests in float64)."""
    thresholds = np.linspace(1.05, 1.25, 10)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = valid & np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
        lg = np.log(np.where(ok, gt, np.float32(1)))
        lp = np.log(np.where(ok, pred, np.float32(1)))
    f1s, any_pair = [], False
    for t in thresholds:
        lt = np.log(t)
        precision, recall = [], []
        for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                     ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
            pair = ok[a] & ok[b]
            any_pair |= bool(pair.any())
            for sign in (1, -1):
                eg = pair & (sign * (lg[b] - lg[a]).astype(np.float64) > lt)
                ep = pair & (sign * (lp[b] - lp[a]).astype(np.float64) > lt)
                both = np.count_nonzero(eg & ep)
                precision.append(both / max(np.count_nonzero(ep), 1))
                recall.append(both / max(np.count_nonzero(eg), 1))
        pr, rc = np.mean(precision), np.mean(recall)
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc > 0 else 0.0)
    return float(np.sum(np.array(f1s) * thresholds / thresholds.sum())) if any_pair else None


def _frame(seed: int, shape=(23, 31)) -> tuple[np.ndarray, np.ndarray]:
    """Blocky ground truth with holes, out-of-range values and exact delta-threshold ratios."""
    rng = np.random.default_rng(seed)
    levels = np.array([np.nan, 0.0, 0.5, 2.0, 4.0, 9.99, 10.0, 25.0, 39.0, 79.9, 80.0, 120.0], np.float32)
    gt = np.repeat(rng.choice(levels, size=(shape[0], (shape[1] + 2) // 3)), 3, axis=1)[:, : shape[1]]
    gt = np.where(rng.random(shape) < 0.2, gt * np.float32(1.07), gt).astype(np.float32)
    factors = np.array([1.0, 1.25, 0.8, 1.5625, 0.64, 1.953125, 0.512, 1.06, 1.3, 3.0], np.float32)
    pred = (gt * rng.choice(factors, size=shape)).astype(np.float32)
    pred[rng.random(shape) < 0.05] = np.nan
    return pred, gt


def test_pixel_sums_match_the_reference_formulas_and_thresholds_exactly():
    pred, gt = _frame(0, (40, 40))
    ok = np.isfinite(gt) & (gt > 1e-3) & (gt < 80) & np.isfinite(pred)
    g, p = gt[ok], np.clip(pred[ok], 1e-3, 80)
    assert np.any(np.isclose(np.maximum(g / p, p / g), 1.25, rtol=0, atol=0))  # exact ties are present
    for gg, pp in ((g, p), (g.astype(np.float64), p.astype(np.float64))):  # ratio test and two-division path
        ours, ref = pixel_sums(gg, pp), _plain_sums(gg, pp)
        np.testing.assert_array_equal(ours[:4], ref[:4])
        np.testing.assert_allclose(ours[4:], ref[4:], rtol=1e-12)
    assert compute_errors(np.array([2.0]), np.array([2.5]))["a1"] == 0.0  # 1.25 is not < 1.25


def test_grouped_sums_are_per_group_pixel_sums():
    pred, gt = _frame(1, (30, 30))
    ok = np.isfinite(gt) & (gt > 1e-3) & (gt < 80) & np.isfinite(pred)
    g, p = gt[ok], np.clip(pred[ok], 1e-3, 80)
    groups = (np.arange(g.size) * 7) % 5
    groups[groups == 3] = 0  # an empty group
    out = grouped_pixel_sums(g, p, groups, 5, workspace=Workspace())
    assert out.shape == (5, 11) and out[3, 0] == 0
    for k in range(5):
        if k != 3:
            np.testing.assert_allclose(out[k, :10], _plain_sums(g[groups == k], p[groups == k]), rtol=1e-12)
            assert out[k, 10] == pytest.approx(np.abs(g[groups == k] - p[groups == k].astype(np.float64)).sum())
    with pytest.raises(ValueError):
        grouped_pixel_sums(g, p, groups, 4)


@pytest.mark.parametrize("bins", [(0.0, 10.0, 20.0, 40.0, 80.0), (0.0, 5.0, 15.0, 33.0, 80.0), (3.0, 30.0)])
@pytest.mark.parametrize("align", ["none", "median", "lsq"])
def test_score_frame_matches_plain_scoring(bins, align):
    ws_sizes = [(23, 31), (40, 50), (9, 7)]  # shrinking after growing: reused buffers must not leak values
    for seed, shape in enumerate(ws_sizes):
        pred, gt = _frame(10 + seed, shape)
        options = EvalOptions(progress=False, bins=bins, align=align)
        score, aligned = score_frame(pred, gt, options)
        gt_ok = np.isfinite(gt) & (gt > 1e-3) & (gt < 80)
        valid = gt_ok & np.isfinite(pred)
        g = gt[valid]
        p, scale, shift = align_prediction(pred[valid], g, align)
        p = np.clip(p, 1e-3, 80)  # the metrics' samples; the picture's prediction is aligned in float32
        assert (score.scale, score.shift) == (scale, shift)
        assert score.pixels == g.size and score.gt_pixels == int(gt_ok.sum())
        np.testing.assert_allclose(aligned[valid], p, rtol=1e-6)
        assert np.isnan(aligned[~np.isfinite(pred)]).all()
        total = _plain_sums(g, p)
        for k, (lo, hi) in enumerate(zip(bins, bins[1:])):
            sel = (g >= lo) & (g < hi)
            ref = _plain_sums(g[sel], p[sel])
            np.testing.assert_array_equal(score.sums[k, :4], ref[:4])
            np.testing.assert_allclose(score.sums[k, 4:], ref[4:], rtol=1e-9, atol=1e-12)  # ref: log p - log g cancels
        fine = np.minimum((g / CURVE_BIN_M).astype(int), int(math.ceil(80 / CURVE_BIN_M)) - 1)
        err = np.abs(p.astype(np.float64) - g)
        np.testing.assert_array_equal(score.curve[0], np.bincount(fine, minlength=40))
        np.testing.assert_allclose(score.curve[1], np.bincount(fine, err, 40), rtol=1e-12)
        np.testing.assert_allclose(score.curve[2], np.bincount(fine, err / g, 40), rtol=1e-12)
        n = total[0]
        assert score.metrics["a1"] == total[1] / n
        assert score.metrics["abs_rel"] == pytest.approx(total[4] / n, rel=1e-12)
        assert score.metrics["log_10"] == pytest.approx(total[8] / n, rel=1e-12)
        assert score.metrics["rmse_log"] == pytest.approx(math.sqrt(total[7] / n), rel=1e-12)
        if gt_ok.mean() >= 0.5:
            assert score.boundary_f1 == pytest.approx(_plain_bf1(aligned, gt, gt_ok), abs=1e-12)
        alone, none = score_frame(pred, gt, options, keep_aligned=False)
        assert none is None and alone.metrics == score.metrics and alone.boundary_f1 == score.boundary_f1


@pytest.mark.parametrize("seed", range(6))
def test_boundary_f1_matches_mask_by_mask_definition(seed):
    pred, gt = _frame(100 + seed, (21, 26))
    ok = np.isfinite(gt) & (gt > 0)
    for p in (pred, gt * np.float32(1.1), np.full_like(gt, 5.0)):
        got = boundary_f1(p, gt, ok)
        assert got == pytest.approx(_plain_bf1(p, gt, ok), abs=1e-12)
        both = ok & np.isfinite(p) & (p > 0)  # already checked: the same result without re-checking
        assert boundary_f1(p, gt, both, checked=True) == got
    with pytest.raises(ValueError):
        boundary_f1(pred, gt, checked=True)
    for rows, cols in ((slice(0, 1), slice(None)), (slice(None), slice(0, 1))):  # one row / one column
        got = boundary_f1(pred[rows, cols], gt[rows, cols])
        assert got == pytest.approx(_plain_bf1(pred[rows, cols], gt[rows, cols], ok[rows, cols]), abs=1e-12)


def test_chunked_accumulation_equals_one_pass(monkeypatch):
    from monother_ros.core import metrics

    pred, gt = _frame(7, (40, 40))
    ok = np.isfinite(gt) & (gt > 1e-3) & (gt < 80) & np.isfinite(pred)
    g, p = gt[ok], np.clip(pred[ok], 1e-3, 80)
    groups = (g / 10).astype(np.intp)
    whole = grouped_pixel_sums(g, p, groups, 8)
    whole_one = pixel_sums(g, p)
    monkeypatch.setattr(metrics, "_CHUNK", 7)  # many chunks, a ragged last one
    assert g.size % 7
    chunked = grouped_pixel_sums(g, p, groups, 8, workspace=Workspace())
    np.testing.assert_array_equal(chunked[:, :4], whole[:, :4])
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pixel_sums(g, p), whole_one, rtol=1e-12)
    np.testing.assert_allclose(whole.sum(axis=0)[:10], whole_one, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a zero prediction makes the log metrics infinite
def test_boundary_f1_in_score_frame_with_zero_min_depth():
    pred, gt = _frame(21, (30, 30))
    pred[3, 3:6] = 0.0  # a zero prediction next to valid GT: not a pair once min_depth is 0
    gt[3, 3:6] = 5.0
    options = EvalOptions(progress=False, min_depth=0.0)
    score, aligned = score_frame(pred, gt, options)
    gt_ok = np.isfinite(gt) & (gt > 0) & (gt < 80)
    assert aligned[3, 4] == 0.0
    assert score.boundary_f1 == pytest.approx(_plain_bf1(aligned, gt, gt_ok), abs=1e-12)

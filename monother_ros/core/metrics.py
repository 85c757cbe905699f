"""The MonoTher-Depth / ZoeDepth depth metric set (reference ``compute_errors`` / ``compute_metrics``).

For one frame: the prediction is resized to the ground truth (bilinear, ``align_corners=True``) when
the sizes differ; predictions are clamped to [min, max] (inf -> max, NaN -> min); pixels with ground
truth strictly inside (min, max) are evaluated (NaN ground truth is never valid). Then over those N
pixels, with d = gt - pred and e = log(pred) - log(gt):

* ``a1``, ``a2``, ``a3``: fraction with max(gt/pred, pred/gt) < 1.25, 1.25^2, 1.25^3;
* ``abs_rel`` = mean(|d| / gt); ``sq_rel`` = mean(d^2 / gt); ``rmse`` = sqrt(mean(d^2));
* ``rmse_log`` = sqrt(mean(e^2)); ``log_10`` = mean(|log10 gt - log10 pred|);
* ``silog`` = sqrt(mean(e^2) - mean(e)^2) * 100 (population variance of e, in percent units).

The reference averages these per frame over a test set (``RunningAverageDict``);
:class:`MetricAccumulator` does that by default and can also pool all pixels of all frames.
Default range (MS2): (1e-3, 80) metres.
"""
from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np

from monother_ros.core.preprocess import resize_depth

__all__ = [
    "METRIC_KEYS",
    "MetricAccumulator",
    "Workspace",
    "compute_errors",
    "compute_metrics",
    "grouped_pixel_sums",
    "metrics_from_sums",
    "pixel_sums",
]

_logger = logging.getLogger(__name__)

METRIC_KEYS: tuple[str, ...] = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")


# Delta thresholds of a1, a2, a3 (exact binary fractions: 1.25, 1.5625, 1.953125).
_DELTAS: tuple[float, ...] = (1.25, 1.25**2, 1.25**3)
_LN10 = math.log(10.0)
# Columns of a grouped_pixel_sums row: the 10 pixel_sums columns, then sum |gt - pred|.
N_SUMS = 10
N_GROUPED = 11
_LANES = 8
_CHUNK = 65536


class Workspace:
    """Scratch arrays reused from call to call (one per thread; not thread-safe).

    Fresh multi-megabyte temporaries are page-faulted in on every allocation, which costs more than
    the arithmetic on them (about 1 ms per 2 MB on the target machine); per-frame scoring therefore
    writes its temporaries into buffers that live as long as the workspace.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, size: int, dtype: type | np.dtype) -> np.ndarray:
        """A 1-D uninitialised array of ``size`` elements of ``dtype`` (grown when too small)."""
        dtype = np.dtype(dtype)
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(max(size, 1), dtype)
            self._buffers[name] = buf
        return buf[:size]

    def lanes(self, size: int, count: int) -> np.ndarray:
        """(size,) intp ``arange(size) % count`` (cached)."""
        name = f"lanes{count}"
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = np.arange(size, dtype=np.intp) % count
            self._buffers[name] = buf
        return buf[:size]


def grouped_pixel_sums(
    gt: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray | None = None,
    n_groups: int = 1,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Sufficient statistics of matched valid samples, per group of pixels, in one pass.

    Per pixel (float64): r = pred / gt, e = log(r) (= log pred - log gt; one log per pixel, and
    log10 gt - log10 pred = -e / ln 10), d = gt - pred. The delta test max(gt/pred, pred/gt) < t is
    done as 1/t < r < t when both inputs are float32/float16: for such inputs the exact ratio either
    equals t (or 1/t) or differs from it by far more than a float64 rounding, so the test gives the
    same answer as the reference's two divisions; other dtypes use the two divisions.

    Args:
        gt, pred: (N,) positive depths (metres), already masked and clamped.
        groups: (N,) integer group of each pixel in [0, n_groups) (None: one group).
        n_groups: number of groups.
        workspace: scratch buffers to reuse (None: fresh ones).

    Returns:
        (n_groups, 11) float64: columns 0-9 as :func:`pixel_sums`, column 10 = sum |gt - pred|.
    """
    ws = workspace if workspace is not None else Workspace()
    g, p = np.asarray(gt).reshape(-1), np.asarray(pred).reshape(-1)
    n = g.size
    if p.size != n:
        raise ValueError(f"gt has {n} samples, pred {p.size}")
    if groups is None:
        if n_groups != 1:
            raise ValueError("n_groups must be 1 without groups")
    else:
        groups = np.asarray(groups).reshape(-1)
        if groups.shape != (n,):
            raise ValueError(f"groups shape {groups.shape} != ({n},)")
        if n and (groups.min() < 0 or groups.max() >= n_groups):
            raise ValueError(f"group index outside [0, {n_groups})")
    narrow = all(a.dtype in (np.float32, np.float16) for a in (g, p))
    out = np.zeros((n_groups, N_GROUPED))
    # Chunks keep the temporaries cache-resident (about 10 % faster than whole-frame passes).
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        _accumulate(g[lo:hi], p[lo:hi], None if groups is None else groups[lo:hi], n_groups, narrow, out, ws)
    out[:, 8] /= _LN10  # sum |log10 gt - log10 pred|
    return out


def _accumulate(g: np.ndarray, p: np.ndarray, groups: np.ndarray | None, n_groups: int, narrow: bool,
                out: np.ndarray, ws: Workspace) -> None:
    """Add one chunk's sums to ``out`` (column 8 still in natural-log units)."""
    n = g.size
    # float32 inputs are widened on the fly by each ufunc (no float64 copies of gt and pred).
    f64 = np.float64
    r = ws.get("ms_r", n, f64)
    np.divide(p, g, out=r, dtype=f64)
    level = ws.get("ms_level", n, np.uint8)  # number of delta thresholds met (0..3)
    level.fill(0)
    hit = ws.get("ms_hit", n, np.bool_)
    tmp = ws.get("ms_tmp", n, np.bool_)
    if narrow:
        for t in _DELTAS:
            np.greater(r, 1.0 / t, out=hit)
            np.less(r, t, out=tmp)
            hit &= tmp
            level += hit
    else:
        thresh = ws.get("ms_thresh", n, np.float64)
        np.divide(g, p, out=thresh, dtype=f64)
        np.maximum(thresh, r, out=thresh)
        for t in _DELTAS:
            np.less(thresh, t, out=hit)
            level += hit
    e = ws.get("ms_e", n, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(r, out=e)
    a = ws.get("ms_a", n, np.float64)
    np.subtract(g, p, out=a, dtype=f64)
    np.abs(a, out=a)
    rel = ws.get("ms_rel", n, np.float64)
    np.divide(a, g, out=rel, dtype=f64)
    w = r  # r is no longer needed: scratch for products
    if groups is None:
        out[0, 0] += n
        # a pixel meeting the strict 1.25 test meets all three: a1 = level 3, a3 = level >= 1.
        for col, least in ((1, 3), (2, 2), (3, 1)):
            np.greater_equal(level, least, out=hit)
            out[0, col] += np.count_nonzero(hit)

        def total(values: np.ndarray, col: int) -> None:
            out[0, col] += values.sum()
    else:
        # bincount adds into one accumulator per bin; neighbouring pixels mostly share a group, so each
        # add would wait for the previous one. Spreading consecutive pixels over _LANES copies of every
        # bin breaks that chain (about 2x faster); the copies are summed afterwards.
        gidx = ws.get("ms_gidx", n, np.intp)
        np.multiply(groups, _LANES, out=gidx)
        gidx += ws.lanes(n, _LANES)
        key = ws.get("ms_key", n, np.intp)
        np.multiply(gidx, 4, out=key)
        key += level
        counts = np.bincount(key, minlength=4 * _LANES * n_groups).reshape(n_groups, _LANES, 4).sum(axis=1)
        out[:, 0] += counts.sum(axis=1)
        out[:, 1] += counts[:, 3]
        out[:, 2] += counts[:, 2:].sum(axis=1)
        out[:, 3] += counts[:, 1:].sum(axis=1)

        def total(values: np.ndarray, col: int) -> None:
            lanes = np.bincount(gidx, weights=values, minlength=_LANES * n_groups)
            out[:, col] += lanes.reshape(n_groups, _LANES).sum(axis=1)

    total(rel, 4)
    np.multiply(rel, a, out=w)
    total(w, 5)  # d^2 / gt
    total(a, 10)
    np.multiply(a, a, out=w)
    total(w, 6)
    total(e, 9)
    np.multiply(e, e, out=w)
    total(w, 7)
    np.abs(e, out=w)
    total(w, 8)


def _sums(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-pixel sums that every metric is a function of (float64, see :func:`pixel_sums`)."""
    return grouped_pixel_sums(gt, pred)[0, :N_SUMS]


def _from_sums(s: np.ndarray) -> dict[str, float]:
    n = s[0]
    mean_e2 = s[7] / n
    mean_e = s[9] / n
    return {
        "a1": s[1] / n,
        "a2": s[2] / n,
        "a3": s[3] / n,
        "abs_rel": s[4] / n,
        "sq_rel": s[5] / n,
        "rmse": math.sqrt(s[6] / n),
        "rmse_log": math.sqrt(mean_e2),
        "log_10": s[8] / n,
        # max(., 0): E[e^2] - E[e]^2 can round to a tiny negative for a constant error.
        "silog": math.sqrt(max(mean_e2 - mean_e * mean_e, 0.0)) * 100.0,
    }


def pixel_sums(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Sufficient statistics of matched valid samples: a (10,) float64 vector, additive over pixels and
    frames (sum two frames' vectors to pool them); :func:`metrics_from_sums` turns it into metrics.

    Args:
        gt, pred: same-shape arrays of positive depths (metres), already masked and clamped.
    """
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != pred shape {pred.shape}")
    return _sums(gt, pred)


def metrics_from_sums(sums: np.ndarray) -> dict[str, float]:
    """:data:`METRIC_KEYS` from a :func:`pixel_sums` vector (pixel-pooled); ``ValueError`` when empty."""
    sums = np.asarray(sums, dtype=np.float64)
    if sums.shape != (10,):
        raise ValueError(f"expected a (10,) sums vector, got {sums.shape}")
    if sums[0] <= 0:
        raise ValueError("no samples")
    return {k: float(v) for k, v in _from_sums(sums).items()}


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Metrics of matched valid samples (reference ``compute_errors``).

    Args:
        gt, pred: same-shape arrays of positive depths (metres), already masked and clamped.

    Returns:
        dict with :data:`METRIC_KEYS` (floats).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != pred shape {pred.shape}")
    if gt.size == 0:
        raise ValueError("no samples")
    return _from_sums(_sums(gt.ravel(), pred.ravel()))


def _valid_pairs(
    gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt, dtype=np.float32)
    pred = np.asarray(pred, dtype=np.float32)
    # Accept (1, 1, H, W) / (1, H, W) like the reference's squeeze, but keep (1, W) images 2-D.
    while gt.ndim > 2 and gt.shape[0] == 1:
        gt = gt[0]
    while pred.ndim > 2 and pred.shape[0] == 1:
        pred = pred[0]
    if gt.ndim != 2 or pred.ndim != 2:
        raise ValueError(f"expected (H, W) depth maps, got gt {gt.shape}, pred {pred.shape}")
    if pred.shape != gt.shape:
        pred = resize_depth(pred, gt.shape)
    pred = pred.copy()
    # Reference clamping order: below min, above max, +/-inf -> max, NaN -> min.
    with np.errstate(invalid="ignore"):
        pred[pred < min_depth] = min_depth
        pred[pred > max_depth] = max_depth
    pred[np.isinf(pred)] = max_depth
    pred[np.isnan(pred)] = min_depth
    with np.errstate(invalid="ignore"):
        valid = (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        if np.shape(mask) != gt.shape:
            raise ValueError(f"mask shape {np.shape(mask)} != gt shape {gt.shape}")
        valid &= np.asarray(mask, dtype=bool)
    return gt[valid], pred[valid]


def compute_metrics(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    mask: np.ndarray | None = None,
) -> dict[str, float] | None:
    """Metrics of one frame (reference ``compute_metrics`` without dataset crops).

    Args:
        gt: (H, W) ground-truth depth, metres; 0, NaN or out-of-range = no ground truth.
        pred: (h, w) predicted depth, metres (resized to (H, W) when different).
        min_depth, max_depth: evaluation range (exclusive for ground truth, clamp for predictions).
        mask: optional (H, W) bool, extra pixels to keep (e.g. an evaluation crop).

    Returns:
        dict with :data:`METRIC_KEYS`, or None when the frame has no valid ground truth.
    """
    g, p = _valid_pairs(gt, pred, min_depth, max_depth, mask)
    if g.size == 0:
        return None
    return compute_errors(g, p)


class MetricAccumulator:
    """Averages metrics over frames.

    Args:
        mode: ``per_frame`` (the reference: metrics per frame, then the mean over frames) or
            ``pixel_pooled`` (every valid pixel of every frame in one population).
        min_depth, max_depth: evaluation range.
    """

    def __init__(
        self,
        mode: Literal["per_frame", "pixel_pooled"] = "per_frame",
        *,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
    ) -> None:
        if mode not in ("per_frame", "pixel_pooled"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.frames = 0  # frames with valid ground truth
        self.skipped = 0  # frames without
        self._frame_sum = np.zeros(len(METRIC_KEYS))
        self._pixel_sums = np.zeros(10)

    def update(self, gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float] | None:
        """Add one frame; returns its own metrics (None when it has no valid ground truth)."""
        g, p = _valid_pairs(gt, pred, self.min_depth, self.max_depth, mask)
        if g.size == 0:
            self.skipped += 1
            return None
        sums = _sums(g, p)
        metrics = _from_sums(sums)
        self.frames += 1
        self._frame_sum += np.array([metrics[k] for k in METRIC_KEYS])
        self._pixel_sums += sums
        return metrics

    @property
    def pixels(self) -> int:
        """Number of valid pixels seen so far."""
        return int(self._pixel_sums[0])

    def result(self) -> dict[str, float]:
        """Averaged metrics (:data:`METRIC_KEYS`); raises ``ValueError`` before any valid frame."""
        if self.frames == 0:
            raise ValueError("no frame with valid ground truth was added")
        if self.mode == "per_frame":
            return {k: float(v) for k, v in zip(METRIC_KEYS, self._frame_sum / self.frames)}
        return _from_sums(self._pixel_sums)

"""Offline evaluation of depth models on bags (rosbag2 or ROS 1): frames, ground truth, scoring, aggregation.

``evaluate(bags, models, options, out_dir)`` reads every bag once (``bag_reader``), pairs thermal frames
with ground truth (``ground_truth``), runs every model on each frame with the runtime engine the node uses
(``runtime.make_backend`` -> ``Engine.infer``: the same percentile normalisation, resize, network,
resize back, masking), scores the prediction and writes ``metrics.json`` after every bag (``report``).

Scoring protocol of one frame (documented in ``report.md`` too):

1. valid pixels: ground truth finite and strictly inside (min_depth, max_depth) and the prediction finite
   (the engine writes NaN where its output is invalid; ``coverage`` reports the share of GT pixels with a
   finite prediction, so a model that refuses pixels is not silently rewarded);
2. scale alignment on those pixels, in depth (metres) space: ``none`` (metric, default); ``median``:
   pred * median(gt) / median(pred) (the per-frame median scaling of the monocular-depth protocols);
   ``lsq``: pred * s + t with (s, t) the least-squares fit to gt (the affine-invariant protocols fit in
   depth or disparity; here depth);
3. predictions clamped to [min_depth, max_depth] (the MonoTher / ZoeDepth reference);
4. the MonoTher metric set (``core.metrics``) per frame; the reported value of a group (bag, condition,
   all) is the mean over frames (reference ``RunningAverageDict``); distance bins pool the pixels whose GT
   falls in each bin over all frames of the group;
5. boundary F1 in the Depth Pro manner (:func:`boundary_f1`), only for dense ground truth.

Everything is deterministic: frames are taken in bag order, models run one after the other on the same
decoded frame.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from monother_ros.core.metrics import METRIC_KEYS, N_SUMS, Workspace, grouped_pixel_sums, metrics_from_sums
from monother_ros.errors import BagError, ConfigError, MonotherError

__all__ = [
    "ALIGN_MODES",
    "DEFAULT_BINS",
    "BOUNDARY_THRESHOLDS",
    "EvalFrame",
    "EvalOptions",
    "EvalRun",
    "FrameScore",
    "ModelSpec",
    "Prediction",
    "Predictor",
    "ScoreSet",
    "align_prediction",
    "boundary_f1",
    "bag_condition",
    "check_output_dir",
    "evaluate",
    "iter_frames",
    "options_for_bag",
    "score_frame",
]

LOG = logging.getLogger(__name__)

ALIGN_MODES: tuple[str, ...] = ("none", "median", "lsq")
DEFAULT_BINS: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0, 80.0)
# Depth Pro: 10 depth-ratio thresholds from 5 % to 25 %, weighted by the threshold value.
BOUNDARY_THRESHOLDS: np.ndarray = np.linspace(1.05, 1.25, 10)
# Boundary F1 needs neighbouring pixels with ground truth: below this share of valid GT (LiDAR, MS2's
# filtered projections) it is not computed.
BOUNDARY_MIN_DENSITY = 0.5
# Fine bins of the error-vs-distance plot, metres.
CURVE_BIN_M = 2.0
CONDITIONS_KNOWN: tuple[str, ...] = ("day", "night", "fog")
# metrics.json is rewritten at least this often during a long bag, seconds.
WRITE_PERIOD_S = 30.0


# ------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: display ``name`` and ``path`` (model folder or .onnx)."""

    name: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """``NAME=PATH`` or ``PATH`` (the name is then the folder / file stem)."""
        if "=" in text and not Path(text).exists():
            name, path = text.split("=", 1)
            if not name or not path:
                raise ConfigError(f"--model {text!r}: expected NAME=PATH or PATH")
            return cls(name, Path(path))
        path = Path(text)
        return cls(path.stem if path.suffix == ".onnx" else (path.name or str(path)), path)


@dataclass
class EvalOptions:
    """What and how to evaluate.

    Attributes:
        thermal_topic, info_topic, tf_topic: input topics.
        gt_topic: depth image ground truth (used when ``lidar_topic`` is None).
        lidar_topic: LiDAR ground truth projected into the thermal camera instead.
        tolerance_ns: max stamp difference frame <-> ground truth (None: 5 ms for images, 50 ms for LiDAR).
        align: ``none`` | ``median`` | ``lsq``.
        condition: condition tag for every bag (None: from the bag's metadata, else ``unknown``).
        min_depth, max_depth: evaluation range, metres.
        every: evaluate every N-th thermal frame; max_frames: stop after this many per bag (0 = all).
        bins: distance bin edges, metres (ascending).
        backend, num_threads: engine options (offline mode).
        device, precision: where and how the engine runs (``auto``/``cpu``/``cuda[:N]``; ``fp16`` applies on
            CUDA only); fp32 by default so that scores do not depend on the GPU.
        mosaic_frames: frames per bag pictured in the mosaic.
        boundary: compute boundary F1.
        pictures: draw the mosaics and plots (``report.md`` and ``metrics.json`` are always written).
        progress: show a tqdm bar.
    """

    thermal_topic: str = "/thermal/image_raw"
    info_topic: str = "/thermal/camera_info"
    tf_topic: str = "/tf_static"
    gt_topic: str = "/gt/depth"
    lidar_topic: str | None = None
    tolerance_ns: int | None = None
    align: str = "none"
    condition: str | None = None
    min_depth: float = 1e-3
    max_depth: float = 80.0
    every: int = 1
    max_frames: int = 0
    bins: tuple[float, ...] = DEFAULT_BINS
    backend: str = "onnxruntime"
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int | None = None
    mosaic_frames: int = 3
    boundary: bool = True
    pictures: bool = True
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ConfigError`` for inconsistent options."""
        if self.align not in ALIGN_MODES:
            raise ConfigError(f"--align must be one of {', '.join(ALIGN_MODES)}, got {self.align!r}")
        finite = math.isfinite(self.min_depth) and math.isfinite(self.max_depth)
        if not finite or not 0 <= self.min_depth < self.max_depth:
            raise ConfigError(f"need 0 <= --min-depth < --max-depth, got {self.min_depth}, {self.max_depth}")
        if self.every < 1:
            raise ConfigError(f"--every must be >= 1, got {self.every}")
        if self.max_frames < 0:
            raise ConfigError(f"--max-frames must be >= 0, got {self.max_frames}")
        if len(self.bins) < 2 or any(not (b > a) for a, b in zip(self.bins, self.bins[1:])):
            raise ConfigError(f"distance bins must be >= 2 ascending edges, got {list(self.bins)}")
        from monother_ros.runtime.device import check_device

        self.device = check_device(self.device)
        if self.precision not in ("fp16", "fp32"):
            raise ConfigError(f"--precision must be fp16 or fp32, got {self.precision!r}")
        if self.tolerance_ns is not None and self.tolerance_ns < 0:
            raise ConfigError(f"GT tolerance must be >= 0, got {self.tolerance_ns} ns")

    @property
    def gt_source(self) -> str:
        return "lidar" if self.lidar_topic else "depth"

    @property
    def truth_topic(self) -> str:
        return self.lidar_topic or self.gt_topic

    @property
    def effective_tolerance_ns(self) -> int:
        from monother_ros.eval.ground_truth import DEFAULT_DEPTH_TOLERANCE_NS, DEFAULT_LIDAR_TOLERANCE_NS

        if self.tolerance_ns is not None:
            return int(self.tolerance_ns)
        return DEFAULT_LIDAR_TOLERANCE_NS if self.lidar_topic else DEFAULT_DEPTH_TOLERANCE_NS

    def to_dict(self) -> dict[str, Any]:
        return {
            "thermal_topic": self.thermal_topic, "info_topic": self.info_topic, "tf_topic": self.tf_topic,
            "gt_source": self.gt_source, "gt_topic": self.truth_topic, "tolerance_ns": self.effective_tolerance_ns,
            "align": self.align, "condition": self.condition, "min_depth": self.min_depth,
            "max_depth": self.max_depth, "every": self.every, "max_frames": self.max_frames,
            "bins": list(self.bins), "backend": self.backend, "boundary": self.boundary, "pictures": self.pictures,
        }


# --------------------------------------------------------------------------------- frame scoring
def align_prediction(pred: np.ndarray, gt: np.ndarray, mode: str) -> tuple[np.ndarray, float, float]:
    """Align predictions to ground truth on matched valid samples (depth space).

    Args:
        pred, gt: (N,) matched samples, metres (finite, gt > 0).
        mode: ``none``, ``median`` (scale = median(gt) / median(pred)) or ``lsq`` (scale s and shift t
            minimising sum (s * pred + t - gt)^2).

    Returns:
        ``(aligned pred, scale, shift)``.

    Raises:
        ValueError: unknown mode.
    """
    if mode == "none":
        return pred, 1.0, 0.0
    p = pred.astype(np.float64)
    g = gt.astype(np.float64)
    if mode == "median":
        mp = float(np.median(p))
        scale = float(np.median(g)) / mp if mp > 0 else 1.0
        return (p * scale).astype(np.float32), scale, 0.0
    if mode == "lsq":
        n = p.size
        sp, sg = p.sum(), g.sum()
        spp, spg = float(p @ p), float(p @ g)
        det = n * spp - sp * sp
        if n < 2 or abs(det) <= 1e-12 * max(n * spp, 1.0):
            # Constant prediction: only a shift is identifiable.
            scale, shift = 1.0, float((sg - sp) / max(n, 1))
        else:
            scale = float((n * spg - sp * sg) / det)
            shift = float((sg - scale * sp) / n)
        return (p * scale + shift).astype(np.float32), scale, shift
    raise ValueError(f"unknown alignment {mode!r}; expected one of {ALIGN_MODES}")


def _levels(levels: np.ndarray, n_t: int) -> np.ndarray:
    # count(ratio > t_j) = count(level > j): reversed cumulative histogram of the levels (1..n_t).
    hist = np.bincount(levels, minlength=n_t + 1)
    return np.cumsum(hist[::-1])[::-1][1:]


def boundary_f1(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, *,
                thresholds: np.ndarray = BOUNDARY_THRESHOLDS, workspace: Workspace | None = None,
                checked: bool = False) -> float | None:
    """Scale-invariant boundary F1 (Depth Pro, Bochkovskii et al. 2024, their ``SI_boundary_F1``).

    For a threshold t, pixel i has an occluding contour towards neighbour j (right, left, down, up) when
    depth_j / depth_i > t (i.e. i is the foreground side; Depth Pro states it on inverse depth). Per
    direction, precision = |P & G| / max(|P|, 1), recall = |P & G| / max(|G|, 1); both are averaged over
    the four directions, F1 = 2PR / (P + R) (0 when P + R = 0); the result is the sum over thresholds
    t = 1.05 ... 1.25 (10 values) of F1(t) weighted by t / sum(t). Only neighbour pairs where both ground
    truth pixels are valid (and both predictions finite) are considered (our ground truth has holes).

    The ratio tests are done on float32 log depth (log(d_j) - log(d_i) > log t, compared in float64).
    Only pairs whose log ratio exceeds the smallest threshold in size are looked at further (few in an
    image); their validity is checked on those candidates alone.

    Args:
        pred, gt: (H, W) depth, metres (positive where valid).
        valid: (H, W) bool ground-truth validity (default: finite and > 0).
        thresholds: depth-ratio thresholds (> 1, ascending).
        workspace: scratch buffers to reuse (None: fresh ones).
        checked: ``valid`` is already false wherever gt or pred is not finite and > 0 (skips that check).

    Returns:
        The weighted F1 in [0, 1], or None when no neighbour pair is valid.
    """
    pred = np.ascontiguousarray(pred, dtype=np.float32)
    gt = np.ascontiguousarray(gt, dtype=np.float32)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (H, W)")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if valid is not None and np.shape(valid) != gt.shape:
        raise ValueError(f"valid {np.shape(valid)} must be gt's shape {gt.shape}")
    ws = workspace if workspace is not None else Workspace()
    h, w = gt.shape
    hw = h * w
    g1, p1 = gt.reshape(-1), pred.reshape(-1)
    ok = ws.get("bf_ok", hw, np.bool_)  # both GT and prediction finite and > 0 (and GT valid)
    tmp = ws.get("bf_tmp", hw, np.bool_)
    if checked and valid is None:
        raise ValueError("checked=True needs a valid mask")
    with np.errstate(invalid="ignore", divide="ignore"):
        if checked:
            np.copyto(ok, np.asarray(valid, dtype=bool).reshape(-1))
        else:
            np.greater(g1, 0, out=ok)
            for arr, cmp, value in ((g1, np.less, np.inf), (p1, np.greater, 0), (p1, np.less, np.inf)):
                cmp(arr, value, out=tmp)
                ok &= tmp
            if valid is not None:
                ok &= np.asarray(valid, dtype=bool).reshape(-1)
        # Logs of the raw arrays: invalid pixels give NaN / inf, and pairs touching them are dropped below.
        lg = np.log(g1, out=ws.get("bf_lg", hw, np.float32))
        lp = np.log(p1, out=ws.get("bf_lp", hw, np.float32))
    log_t = np.log(thresholds)
    lt0 = log_t[0]  # a float64 scalar: comparisons happen in float64, as searchsorted's
    n_t = thresholds.size
    inter = np.zeros((4, n_t))
    n_pred = np.zeros((4, n_t))
    n_gt = np.zeros((4, n_t))
    any_pair = False
    ok2 = ok.reshape(h, w)
    diff = ws.get("bf_diff", hw, np.float32)
    absd = ws.get("bf_abs", hw, np.float32)
    big = ws.get("bf_big", hw, np.bool_)

    for horizontal, step, row0 in ((True, 1, 0), (False, w, 2)):
        if (horizontal and w < 2) or (not horizontal and h < 2):
            continue
        a_, b_ = (ok2[:, 1:], ok2[:, :-1]) if horizontal else (ok2[1:], ok2[:-1])
        pair_any = np.logical_and(a_, b_, out=tmp[: a_.size].reshape(a_.shape)).any()
        if not pair_any:
            continue
        any_pair = True
        m = hw - step
        found = []
        for logs in (lg, lp):
            with np.errstate(invalid="ignore"):  # inf - inf next to invalid pixels
                d = np.subtract(logs[step:], logs[:-step], out=diff[:m])
                np.greater(np.abs(d, out=absd[:m]), lt0, out=big[:m])
            idx = np.flatnonzero(big[:m])
            keep = ok[idx] & ok[idx + step]
            if horizontal:
                keep &= (idx % w) != w - 1  # no pair across a row end
            idx = idx[keep]
            found.append((idx, d[idx].astype(np.float64)))
        (ig, xg), (ip, xp) = found
        for k, sign in enumerate((1.0, -1.0)):  # this pixel in front / the next pixel in front
            row = row0 + k
            sg, sp = xg * sign > lt0, xp * sign > lt0
            ig_s, ip_s = ig[sg], ip[sp]
            lvg = np.searchsorted(log_t, xg[sg] * sign, side="left").astype(np.intp)
            lvp = np.searchsorted(log_t, xp[sp] * sign, side="left").astype(np.intp)
            n_gt[row] = _levels(lvg, n_t)
            n_pred[row] = _levels(lvp, n_t)
            # GT level of each predicted edge pair (0 where GT has no edge there); both index lists are sorted.
            at = np.minimum(np.searchsorted(ig_s, ip_s), max(ig_s.size - 1, 0))
            both = np.zeros(ip_s.size, dtype=np.intp)
            if ig_s.size:
                hitm = ig_s[at] == ip_s
                both[hitm] = lvg[at[hitm]]
            inter[row] = _levels(np.minimum(both, lvp), n_t)
    if not any_pair:
        return None
    recall = np.mean(inter / np.maximum(n_gt, 1), axis=0)
    precision = np.mean(inter / np.maximum(n_pred, 1), axis=0)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    weights = thresholds / thresholds.sum()
    return float(np.sum(f1 * weights))


@dataclass
class FrameScore:
    """One frame's score for one model.

    Attributes:
        metrics: :data:`METRIC_KEYS` of the frame.
        sums: pixel sums (``core.metrics.pixel_sums``) per distance bin, (n_bins, 10).
        curve: per fine distance bin (``CURVE_BIN_M``): (n, sum |d|, sum |d| / gt), shape (3, n_fine).
        boundary_f1: Depth Pro boundary F1 or None (sparse GT / no pairs / disabled).
        pixels: valid pixels scored; gt_pixels: pixels with valid GT; coverage = pixels / gt_pixels.
        scale, shift: the alignment applied.
    """

    metrics: dict[str, float]
    sums: np.ndarray
    curve: np.ndarray
    boundary_f1: float | None
    pixels: int
    gt_pixels: int
    scale: float
    shift: float

    @property
    def coverage(self) -> float:
        return self.pixels / self.gt_pixels if self.gt_pixels else 0.0


_THREAD_STATE = threading.local()


def _workspace() -> Workspace:
    """This thread's scoring scratch buffers (the scoring worker keeps its own across frames)."""
    ws = getattr(_THREAD_STATE, "workspace", None)
    if ws is None:
        ws = _THREAD_STATE.workspace = Workspace()
    return ws


def score_frame(pred: np.ndarray, gt: np.ndarray, options: EvalOptions, *,
                keep_aligned: bool = True) -> tuple[FrameScore | None, np.ndarray | None]:
    """Score one prediction against its ground truth.

    The valid pixels are gathered once; the metric sums of every distance bin and of the error curve
    come from one pass over them (``core.metrics.grouped_pixel_sums`` grouped by curve bin, or by
    distance bin x curve bin when the bin edges are not multiples of ``CURVE_BIN_M``); temporaries live
    in a per-thread workspace.

    Args:
        pred: (H, W) float32 metres, NaN where the model gave nothing (resized to gt's size if needed).
        gt: (H, W) float32 metres, NaN / <= 0 where there is no ground truth.
        options: range, alignment, bins, boundary.
        keep_aligned: return the aligned prediction (else None is returned in its place: saves a copy).

    Returns:
        ``(score, the aligned and clamped prediction (H, W), NaN where the model gave nothing)``, or
        ``(None, None)`` when no pixel can be scored.
    """
    gt = np.ascontiguousarray(gt, dtype=np.float32)
    pred = np.ascontiguousarray(pred, dtype=np.float32)
    if pred.shape != gt.shape:
        from monother_ros.core.preprocess import resize_depth

        pred = np.ascontiguousarray(resize_depth(pred, gt.shape), dtype=np.float32)
    ws = _workspace()
    hw = gt.size
    g1, p1 = gt.reshape(-1), pred.reshape(-1)
    lo, hi = options.min_depth, options.max_depth
    gt_ok = ws.get("sf_gt_ok", hw, np.bool_)  # NaN compares false: no isfinite needed
    valid = ws.get("sf_valid", hw, np.bool_)
    with np.errstate(invalid="ignore"):
        np.greater(g1, lo, out=gt_ok)
        np.less(g1, hi, out=valid)
    gt_ok &= valid
    gt_pixels = int(np.count_nonzero(gt_ok))
    np.isfinite(p1, out=valid)
    valid &= gt_ok
    n = int(np.count_nonzero(valid))
    if n == 0:
        return None, None
    g = g1[valid]  # boolean indexing: faster than np.compress into a buffer
    p = p1[valid]
    p, scale, shift = align_prediction(p, g, options.align)
    np.clip(p, lo, hi, out=p)
    # Pixels are grouped by fine curve bin (2 m). When every distance-bin edge is a multiple of it, each
    # fine bin lies in one distance bin (g >= 2k <=> floor(g / 2) >= k, exact in float32), so the bins'
    # sums are sums of fine-bin rows; otherwise the groups are (distance bin x fine bin) pairs.
    edges = np.asarray(options.bins, dtype=np.float32)
    nb = edges.size - 1
    n_fine = int(math.ceil(hi / CURVE_BIN_M))
    fine = ws.get("sf_fine", n, np.intp)
    np.copyto(fine, np.divide(g, CURVE_BIN_M, out=ws.get("sf_gdiv", n, np.float32)), casting="unsafe")
    np.minimum(fine, n_fine - 1, out=fine)
    steps = edges.astype(np.float64) / CURVE_BIN_M
    if np.all(steps == np.round(steps)):
        slot = np.searchsorted(edges, (np.arange(n_fine) * CURVE_BIN_M).astype(np.float32), side="right") - 1
        slot[(slot < 0) | (slot >= nb)] = nb  # outside the bins
        by_fine = grouped_pixel_sums(g, p, fine, n_fine, workspace=ws)
        per_bin = np.zeros((nb + 1, by_fine.shape[1]))
        np.add.at(per_bin, slot, by_fine)
    else:
        above = ws.get("sf_above", n, np.bool_)
        coarse = ws.get("sf_coarse", n, np.intp)
        coarse.fill(-1)
        for edge in edges:  # -1 + number of edges <= g: searchsorted(edges, g, "right") - 1
            np.greater_equal(g, edge, out=above)
            coarse += above
        np.less(coarse, 0, out=above)
        np.copyto(coarse, nb, where=above)  # outside the bins: slot nb
        coarse *= n_fine
        coarse += fine
        grouped = grouped_pixel_sums(g, p, coarse, (nb + 1) * n_fine, workspace=ws).reshape(nb + 1, n_fine, -1)
        per_bin = grouped.sum(axis=1)
        by_fine = grouped.sum(axis=0)
    sums = per_bin[:nb, :N_SUMS].copy()
    metrics = metrics_from_sums(per_bin[:, :N_SUMS].sum(axis=0))
    curve = np.stack([by_fine[:, 0], by_fine[:, 10], by_fine[:, 4]])  # n, sum |d|, sum |d| / gt
    # The whole prediction with the frame's alignment and clamping (NaN stays NaN): for the boundary
    # metric and the pictures.
    bf1_wanted = options.boundary and gt_pixels >= BOUNDARY_MIN_DENSITY * gt.size
    aligned = None
    if keep_aligned or bf1_wanted:
        out = None if keep_aligned else ws.get("sf_aligned", hw, np.float32).reshape(gt.shape)
        if options.align == "none":
            aligned = np.clip(pred, lo, hi, out=out)
        else:
            aligned = np.multiply(pred, np.float32(scale), out=out)
            aligned += np.float32(shift)
            np.clip(aligned, lo, hi, out=aligned)
    bf1 = None
    if bf1_wanted:
        # With lo > 0, valid (GT in (lo, hi), prediction finite, then clamped to [lo, hi]) already means
        # both depths are finite and positive.
        checked = bool(np.float32(lo) > 0)
        bf1 = boundary_f1(aligned, gt, (valid if checked else gt_ok).reshape(gt.shape), workspace=ws, checked=checked)
    return FrameScore(metrics, sums, curve, bf1, n, gt_pixels, scale, shift), (aligned if keep_aligned else None)


# ----------------------------------------------------------------------------------- aggregation
def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "n": int(a.size)}


class ScoreSet:
    """Running aggregate of frame scores for one group (model x bag, model x condition, model overall).

    Args:
        bins: distance bin edges, metres.
    """

    def __init__(self, bins: Sequence[float]) -> None:
        self.bins = tuple(float(b) for b in bins)
        self.frames = 0
        self.without_gt = 0
        self.unscored = 0  # GT present but no pixel with both GT and a finite prediction
        self.dropped = 0  # live mode: frames the node did not answer
        self._metric_sum = np.zeros(len(METRIC_KEYS))
        self._bin_sums = np.zeros((len(self.bins) - 1, 10))
        self.curve: np.ndarray | None = None
        self._bf1: list[float] = []
        self._coverage: list[float] = []
        self._scale: list[float] = []
        self.pixels = 0
        self.timings: dict[str, list[float]] = {}

    def add(self, score: FrameScore) -> None:
        self.frames += 1
        self._metric_sum += np.array([score.metrics[k] for k in METRIC_KEYS])
        self._bin_sums += score.sums
        self.curve = score.curve.copy() if self.curve is None else self.curve + score.curve
        if score.boundary_f1 is not None:
            self._bf1.append(score.boundary_f1)
        self._coverage.append(score.coverage)
        self._scale.append(score.scale)
        self.pixels += score.pixels

    def add_timing(self, timings: dict[str, float]) -> None:
        for key, value in timings.items():
            if value is not None and math.isfinite(value):
                self.timings.setdefault(key, []).append(float(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (see ``report.METRICS_SCHEMA``)."""
        metrics = {k: float(v) for k, v in zip(METRIC_KEYS, self._metric_sum / self.frames)} if self.frames else None
        bins = []
        for k in range(len(self.bins) - 1):
            s = self._bin_sums[k]
            bins.append({"range_m": [self.bins[k], self.bins[k + 1]], "pixels": int(s[0]),
                         "metrics": metrics_from_sums(s) if s[0] > 0 else None})
        return {
            "frames_scored": self.frames,
            "frames_without_gt": self.without_gt,
            "frames_unscored": self.unscored,
            "frames_dropped": self.dropped,
            "pixels": self.pixels,
            "coverage": float(np.mean(self._coverage)) if self._coverage else None,
            "metrics": metrics,
            "bins": bins,
            "boundary_f1": float(np.mean(self._bf1)) if self._bf1 else None,
            "boundary_f1_frames": len(self._bf1),
            "scale": _stats(self._scale),
            "timing_ms": {k: _stats(v) for k, v in sorted(self.timings.items())},
        }


# ------------------------------------------------------------------------------------- frames
@dataclass
class EvalFrame:
    """A thermal frame with its ground truth.

    Attributes:
        index: thermal message ordinal in the bag (0-based, before ``every``).
        stamp_ns: header stamp.
        thermal: (H, W) uint16/uint8 raw image.
        gt: (H, W) float32 metres NaN invalid, or None (no GT within the tolerance).
        gt_stamp_ns: stamp of the matched GT message or None.
    """

    index: int
    stamp_ns: int
    thermal: np.ndarray
    gt: np.ndarray | None
    gt_stamp_ns: int | None


@dataclass
class BagInfo:
    """What is known about a bag before scoring."""

    path: Path
    name: str
    condition: str = "unknown"
    condition_source: str = "none"
    duration_s: float = 0.0
    thermal_messages: int = 0
    expected_frames: int = 0
    rig_info: dict = field(default_factory=dict)


def bag_condition(bag: Any) -> tuple[str, str, dict]:
    """``(condition, source, rig info)`` of an open ``BagReader``.

    The simulator (``sim.bag``) and ``import-ms2`` store a JSON description with a ``scenario`` key on
    ``/rig/info`` (std_msgs/String) and in the metadata's ``custom_data['monother.rig']``.
    """
    from monother_ros.sim.bag import CUSTOM_DATA_KEY, TOPIC_INFO

    text = bag.custom_data.get(CUSTOM_DATA_KEY)
    source = "metadata"
    if not text and TOPIC_INFO in bag.topics:
        try:
            text = bag.first_message(TOPIC_INFO).msg.data
            source = TOPIC_INFO
        except BagError as exc:
            LOG.warning("%s: cannot read %s: %s", bag.path, TOPIC_INFO, exc)
    if not text:
        return "unknown", "none", {}
    try:
        info = json.loads(text)
    except ValueError:
        LOG.warning("%s: rig info is not JSON; condition unknown", bag.path)
        return "unknown", "none", {}
    scenario = info.get("scenario") or info.get("condition")
    return (str(scenario), source, info) if scenario else ("unknown", "none", info)


def options_for_bag(bag: Any, options: EvalOptions) -> EvalOptions:
    """``options`` with the thermal (and ground-truth depth) topic resolved for an open ``BagReader``: a
    stream recorded through image_transport's compressed transport (``/thermal/image_raw/compressed``,
    sensor_msgs/CompressedImage) is read when the raw topic is absent; a topic given as the compressed
    one is read as it is (the message type decides how frames are decoded)."""
    from dataclasses import replace

    from monother_ros.eval.bag_reader import resolve_image_topic

    topics = bag.topics
    thermal = resolve_image_topic(topics, options.thermal_topic)
    gt = options.gt_topic if options.lidar_topic else resolve_image_topic(topics, options.gt_topic)
    if thermal == options.thermal_topic and gt == options.gt_topic:
        return options
    return replace(options, thermal_topic=thermal, gt_topic=gt)


def open_bag_info(bag: Any, options: EvalOptions, name: str) -> BagInfo:
    """Topic checks and metadata of an open ``BagReader``.

    Raises:
        BagError: the thermal or ground-truth topic (or, for LiDAR, camera_info / TF) is missing.
    """
    needed = [options.thermal_topic, options.truth_topic]
    if options.lidar_topic:
        needed += [options.info_topic, options.tf_topic]
    bag.require_topics(*needed)
    info = BagInfo(Path(bag.path), name)
    condition, source, rig = bag_condition(bag)
    if options.condition:
        condition, source = options.condition, "option"
    info.condition, info.condition_source, info.rig_info = condition, source, rig
    info.duration_s = max(0.0, (bag.end_time_ns - bag.start_time_ns) * 1e-9)
    info.thermal_messages = bag.topics[options.thermal_topic].count
    n = math.ceil(info.thermal_messages / options.every)
    info.expected_frames = min(n, options.max_frames) if options.max_frames else n
    return info


def iter_frames(bag: Any, options: EvalOptions, *, skipped: list[str] | None = None,
                blind: list[str] | None = None) -> Iterator[EvalFrame]:
    """Thermal frames of an open ``BagReader`` (every ``options.every``-th, at most ``max_frames``) with
    their ground truth, in bag order.

    A thermal frame whose payload cannot be decoded (a corrupt or truncated PNG/JPEG, a malformed Image,
    a 16-bit payload whose format says 8 bits) is skipped, the reason appended to ``skipped`` (logged when
    None), and reading goes on with the next frame. A frame without usable content (a closed shutter,
    lens cap, saturated or dead sensor, a driver repeating one frame: ``core.frame_health`` with the
    thermal_depth node's default thresholds) is not scored either, as the node publishes no depth for it;
    the reason goes to ``blind`` (logged when None).

    Raises:
        BagError: truncated / corrupt storage, undecodable messages, missing TF for LiDAR.
    """
    from monother_ros.eval.bag_reader import (
        camera_info_k, camera_info_to_pinhole, decoded_encoding, image_to_numpy, pointcloud2_to_array,
    )
    from monother_ros.core.frame_health import FrameHealthChecker
    from monother_ros.eval.ground_truth import StampMatcher, depth_image_to_metres, project_points

    tree = bag.static_transforms(options.tf_topic) if options.lidar_topic else None
    matcher: StampMatcher = StampMatcher(options.effective_tolerance_ns)
    topics = [options.thermal_topic, options.truth_topic]
    if options.lidar_topic:
        topics.append(options.info_topic)
    camera = None
    latest_camera: list[Any] = [None]
    extrinsics: dict[tuple[str, str], np.ndarray] = {}
    projected: dict[int, np.ndarray] = {}
    ordinal = 0
    taken = 0
    done = False
    health = FrameHealthChecker()

    def note(reason: str, into: list[str] | None) -> None:
        if into is None:
            LOG.warning("bag %s: %s", bag.path, reason)
        else:
            into.append(reason)

    def resolve(item: Any, truth: Any, truth_stamp: int | None) -> EvalFrame:
        index, stamp, image, cam, frame_id = item
        # A recorder may store camera_info just after its image (same stamp): use the latest one then.
        cam = cam or latest_camera[0]
        gt = None
        if truth is not None:
            if options.lidar_topic:
                key = int(truth_stamp)  # several thermal frames share one scan: project once
                if key not in projected:
                    if cam is None:
                        raise BagError(f"bag {bag.path}: no {options.info_topic} before thermal frame {index}; "
                                       "cannot project LiDAR")
                    pair = (frame_id, truth.header.frame_id)
                    if pair not in extrinsics:
                        extrinsics[pair] = tree.lookup(*pair)
                    points = pointcloud2_to_array(truth, ("x", "y", "z"))
                    projected.clear()
                    projected[key] = project_points(points, cam, extrinsics[pair])
                gt = projected[key]
                if gt.shape != image.shape:
                    raise BagError(f"camera_info size {gt.shape[::-1]} differs from thermal image {image.shape[::-1]}")
            else:
                truth_image = image_to_numpy(truth)
                gt = depth_image_to_metres(truth_image, decoded_encoding(truth, truth_image))
                if gt.shape != image.shape:
                    raise BagError(f"bag {bag.path}: {options.gt_topic} is {gt.shape[1]}x{gt.shape[0]}, the thermal "
                                   f"image {image.shape[1]}x{image.shape[0]}; ground truth must be in the thermal "
                                   "camera")
        return EvalFrame(index, stamp, image, gt, truth_stamp)

    for message in bag.messages(topics):
        if message.topic == options.thermal_topic:
            n = ordinal
            ordinal += 1
            if done or n % options.every:
                continue
            try:
                image = image_to_numpy(message.msg)
            except BagError as exc:
                note(f"thermal frame {n} ({message.stamp_ns} ns) skipped: {exc}", skipped)
                continue
            if image.ndim != 2:
                raise BagError(f"bag {bag.path}: thermal frame {n} has encoding "
                               f"{decoded_encoding(message.msg, image)}; expected mono16/mono8")
            verdict = health.check(image)
            if verdict is not None:
                note(f"thermal frame {n} ({message.stamp_ns} ns) not scored, no usable content: {verdict.message}",
                     blind)
                continue
            matcher.add_frame(message.stamp_ns, (n, message.stamp_ns, image, camera, message.msg.header.frame_id))
            taken += 1
            if options.max_frames and taken >= options.max_frames:
                done = True
        elif message.topic == options.info_topic:
            if camera is None or camera.width != message.msg.width or camera.height != message.msg.height or \
                    not np.allclose(camera.K, np.asarray(camera_info_k(message.msg), dtype=np.float64).reshape(3, 3)):
                camera = camera_info_to_pinhole(message.msg)
                latest_camera[0] = camera
        else:
            matcher.add_truth(message.stamp_ns, message.msg)
        for item, truth, truth_stamp in matcher.ready():
            yield resolve(item, truth, truth_stamp)
        if done and matcher.pending == 0:
            return
    for item, truth, truth_stamp in matcher.finish():
        yield resolve(item, truth, truth_stamp)


# ------------------------------------------------------------------------------------ predictors
@dataclass
class Prediction:
    """A model's output for a frame: depth (H, W) metres NaN invalid, confidence or None, timings (ms)."""

    depth: np.ndarray
    confidence: np.ndarray | None
    timings: dict[str, float]


class Predictor(Protocol):
    """Gives predictions for frames (an engine offline, a recording of the node live)."""

    name: str

    def predict(self, frame: EvalFrame) -> Prediction | None:
        """The prediction for ``frame``, or None when there is none (live: dropped)."""
        ...

    def describe(self) -> dict[str, Any]:
        ...

    def close(self) -> None:
        ...


class EnginePredictor:
    """Runs a runtime engine (``Engine.infer``: the node's preprocessing, network and postprocessing)."""

    def __init__(self, name: str, path: Path, engine: Any) -> None:
        self.name, self.path, self.engine = name, Path(path), engine

    @classmethod
    def load(cls, spec: ModelSpec, options: EvalOptions) -> "EnginePredictor":
        """Build the engine (``runtime.make_backend``); raises ``MonotherError`` subclasses on failure."""
        from monother_ros.runtime import make_backend

        if not spec.path.exists():
            raise ConfigError(f"model {spec.name}: {spec.path} does not exist")
        engine = make_backend(spec.path, options.backend, num_threads=options.num_threads,  # type: ignore[arg-type]
                              device=options.device, precision=options.precision)  # type: ignore[arg-type]
        return cls(spec.name, spec.path, engine)

    def predict(self, frame: EvalFrame) -> Prediction:
        result = self.engine.infer(frame.thermal)
        return Prediction(result.depth, result.confidence, dict(result.timings))

    def describe(self) -> dict[str, Any]:
        info = self.engine.info
        return {"path": str(self.path), "backend": info.backend, "precision": info.precision,
                "model_name": info.model_name, "model_hash": info.model_hash, "input_hw": list(info.input_hw),
                "has_confidence": info.has_confidence, "status": "ok"}

    def close(self) -> None:
        self.engine.close()


# ------------------------------------------------------------------------------------ the run
@dataclass
class SampledFrame:
    """A frame kept for the mosaic: thermal, GT and per model (pred aligned, confidence)."""

    bag: str
    index: int
    thermal: np.ndarray
    gt: np.ndarray
    outputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)


@dataclass
class EvalRun:
    """Everything a run produced (``report`` writes it)."""

    mode: str
    options: EvalOptions
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    bags: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_bag: dict[tuple[str, str], ScoreSet] = field(default_factory=dict)
    per_condition: dict[tuple[str, str], ScoreSet] = field(default_factory=dict)
    overall: dict[str, ScoreSet] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, list[SampledFrame]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    load_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_scored(self) -> int:
        return sum(s.frames for s in self.overall.values())

    def sets_for(self, model: str, bag: str, condition: str) -> list[ScoreSet]:
        bins = self.options.bins
        out = []
        for table, key in ((self.per_bag, (model, bag)), (self.per_condition, (model, condition))):
            if key not in table:
                table[key] = ScoreSet(bins)
            out.append(table[key])
        if model not in self.overall:
            self.overall[model] = ScoreSet(bins)
        out.append(self.overall[model])
        return out


def _unique_name(path: Path, taken: dict[str, Any]) -> str:
    base = path.name or str(path)
    for suffix in (".mcap", ".db3", ".bag"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _sample_positions(expected: int, count: int) -> set[int]:
    if expected <= 0 or count <= 0:
        return set()
    return set(np.linspace(0, expected - 1, min(count, expected)).round().astype(int).tolist())


def evaluate_bag(run: EvalRun, bag_path: Path, predictors: Sequence[Predictor], *, name: str | None = None,
                 on_frame: Callable[[], None] | None = None, progress: Any = None) -> None:
    """Score every predictor on one bag, updating ``run`` (errors are recorded, not raised).

    Args:
        name: the bag's key in the results (default: its file name, made unique within the run).
    """
    from monother_ros.eval.bag_reader import BagReader

    options = run.options
    name = name or _unique_name(Path(bag_path), run.bags)
    entry: dict[str, Any] = {"path": str(bag_path), "status": "ok", "error": None, "partial": False}
    run.bags[name] = entry
    t_start = time.perf_counter()
    try:
        bag = BagReader(bag_path)
    except MonotherError as exc:
        entry.update(status="error", error=str(exc))
        run.errors.append(str(exc))
        LOG.error("%s", exc)
        return
    with bag:
        try:
            options = options_for_bag(bag, options)
            info = open_bag_info(bag, options, name)
        except MonotherError as exc:
            entry.update(status="error", error=str(exc))
            run.errors.append(str(exc))
            LOG.error("%s", exc)
            return
        entry.update(condition=info.condition, condition_source=info.condition_source, duration_s=info.duration_s,
                     thermal_messages=info.thermal_messages, expected_frames=info.expected_frames,
                     rig_info=info.rig_info, thermal_topic=options.thermal_topic,
                     thermal_type=bag.topics[options.thermal_topic].msgtype, ros_version=bag.ros_version)
        if progress is not None:
            progress.total = (progress.total or 0) + info.expected_frames
            progress.set_description(name[:24])
        samples_at = _sample_positions(info.expected_frames, options.mosaic_frames)
        skipped: list[str] = []
        blind: list[str] = []
        position = 0
        frames_read = 0
        # Scoring runs in one worker thread while the engine infers the next frame (numpy releases the
        # GIL on large arrays); results are folded in submission order, so the run stays deterministic.
        pending: deque[tuple[Future, dict[str, Any], list[ScoreSet], Prediction, SampledFrame | None, str]] = deque()

        def fold_one() -> None:
            future, record, sets, prediction, sample, model = pending.popleft()
            score, aligned = future.result()
            for s in sets:
                s.add_timing(prediction.timings)
                if score is None:
                    s.unscored += 1
                else:
                    s.add(score)
            if score is not None:
                record.update({k: score.metrics[k] for k in ("abs_rel", "rmse", "a1", "silog")},
                              boundary_f1=score.boundary_f1, coverage=score.coverage, scale=score.scale)
                if sample is not None:
                    sample.outputs[model] = (aligned, prediction.confidence)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-score") as pool:
            try:
                for frame in iter_frames(bag, options, skipped=skipped, blind=blind):
                    frames_read += 1
                    record_base = {"bag": name, "index": frame.index, "stamp_ns": frame.stamp_ns,
                                   "gt_stamp_ns": frame.gt_stamp_ns}
                    sample = None
                    if frame.gt is not None and position in samples_at:
                        sample = SampledFrame(name, frame.index, frame.thermal.copy(), frame.gt.copy())
                        run.samples.setdefault(name, []).append(sample)
                    for predictor in predictors:
                        sets = run.sets_for(predictor.name, name, info.condition)
                        record = dict(record_base, model=predictor.name, gt=frame.gt is not None)
                        run.frames.append(record)
                        if frame.gt is None:
                            for s in sets:
                                s.without_gt += 1
                            continue
                        prediction = predictor.predict(frame)
                        if prediction is None:
                            for s in sets:
                                s.dropped += 1
                            record["dropped"] = True
                            continue
                        record.update({k: v for k, v in prediction.timings.items() if k in ("total_ms", "latency_ms")})
                        future = pool.submit(score_frame, prediction.depth, frame.gt, options,
                                             keep_aligned=sample is not None)
                        pending.append((future, record, sets, prediction, sample, predictor.name))
                        while len(pending) > len(predictors):
                            fold_one()
                    if frame.gt is not None:
                        position += 1
                    if progress is not None:
                        progress.update(1)
                    if on_frame is not None:
                        on_frame()
            except MonotherError as exc:
                # Truncated / corrupt bag: keep what was scored, say where it stopped.
                msg = f"{exc} (stopped after {frames_read} frame(s); results so far are kept)"
                entry.update(status="error", error=msg, partial=True)
                run.errors.append(msg)
                LOG.error("%s", msg)
            finally:
                while pending:
                    fold_one()
        entry["frames_read"] = frames_read
        entry["wall_s"] = time.perf_counter() - t_start
        if skipped:
            # Undecodable frames do not stop a bag, but the run says so (exit code 1 from the CLI).
            entry["frames_skipped"] = len(skipped)
            msg = f"bag {name}: {len(skipped)} thermal frame(s) could not be decoded and were skipped; first: {skipped[0]}"
            run.errors.append(msg)
            LOG.error("%s", msg)
        if blind:
            # Blind frames are what a real thermal camera does (flat-field shutter): reported, not an error.
            entry["frames_blind"] = len(blind)
            LOG.warning("bag %s: %d thermal frame(s) without usable content were not scored; first: %s",
                        name, len(blind), blind[0])
        if frames_read == 0 and entry["status"] == "ok":
            error = f"bag {bag_path}: no thermal frame on {options.thermal_topic}"
            if blind:
                error = f"bag {bag_path}: none of the thermal frames has usable content ({blind[0]})"
            entry.update(status="empty", error=error)
            run.errors.append(entry["error"])


def load_predictors(models: Sequence[ModelSpec], options: EvalOptions, run: EvalRun) -> list[Predictor]:
    """Engines for ``models``; a model that fails to load is recorded in ``run`` and skipped."""
    predictors: list[Predictor] = []
    seen: set[str] = set()
    for spec in models:
        if spec.name in seen:
            raise ConfigError(f"two models are named {spec.name!r}; use --model NAME=PATH")
        seen.add(spec.name)
        try:
            predictor = EnginePredictor.load(spec, options)
        except MonotherError as exc:
            msg = f"model {spec.name} ({spec.path}) failed to load: {exc}"
            run.models[spec.name] = {"path": str(spec.path), "status": "error", "error": msg}
            run.errors.append(msg)
            LOG.error("%s", msg)
            continue
        run.models[spec.name] = predictor.describe()
        predictors.append(predictor)
    return predictors


def check_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and prove that files can be written into it, before any work.

    A probe file is written, flushed to disk (``fsync``: a full filesystem fails here, not after the whole
    evaluation) and removed. Permission bits are not trusted (root passes ``os.access`` where a read-only
    mount still refuses writes).

    Returns:
        The folder.

    Raises:
        ConfigError: the folder cannot be created or written (read-only, no space, not a folder...).
    """
    out = Path(out_dir).expanduser()
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".monother-write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        hint = " (no space left on the device)" if exc.errno == errno.ENOSPC else ""
        raise ConfigError(f"cannot write the outputs into {out}: {exc.strerror or exc}{hint}") from None
    return out


def evaluate(bags: Sequence[str | Path], models: Sequence[ModelSpec], options: EvalOptions, out_dir: str | Path, *,
             predictors: Sequence[Predictor] | None = None, mode: str = "offline",
             run: EvalRun | None = None) -> EvalRun:
    """Evaluate ``models`` (or ready ``predictors``) on ``bags`` and write the outputs into ``out_dir``.

    ``metrics.json`` is rewritten atomically after each bag, every ``WRITE_PERIOD_S`` within a bag and when
    the run is interrupted (so what was scored is kept, with ``complete`` false); ``report.md`` and the
    pictures are written at the end.

    Raises:
        ConfigError: bad options, or no model could be loaded.
        MonotherError: nothing could be scored (the outputs written so far stay).
    """
    from monother_ros.eval import report

    options.validate()
    out = check_output_dir(out_dir)
    run = run or EvalRun(mode=mode, options=options)
    t_load = time.perf_counter()
    own = predictors is None
    if predictors is None:
        predictors = load_predictors(models, options, run)
    run.load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()  # wall_s: reading, inference and scoring (not model loading)
    if not predictors:
        report.write_metrics(run, out)
        raise ConfigError("no model could be loaded: " + "; ".join(run.errors))
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="frame", desc="eval", leave=True)
    last_write = [time.perf_counter()]

    def checkpoint() -> None:
        # Long bags: keep metrics.json current every WRITE_PERIOD_S, not only at bag ends.
        now = time.perf_counter()
        if now - last_write[0] >= WRITE_PERIOD_S:
            run.wall_s = now - t0
            report.write_metrics(run, out)
            last_write[0] = now

    try:
        for bag_path in bags:
            evaluate_bag(run, Path(bag_path), predictors, progress=bar, on_frame=checkpoint)
            run.wall_s = time.perf_counter() - t0
            report.write_metrics(run, out)
            last_write[0] = time.perf_counter()
    except BaseException as exc:  # Ctrl-C or a bug: what was scored so far is written before leaving
        run.errors.append(f"interrupted: {type(exc).__name__}: {exc}")
        run.wall_s = time.perf_counter() - t0
        report.write_metrics(run, out)
        raise
    finally:
        if bar is not None:
            bar.close()
        if own:
            for predictor in predictors:
                predictor.close()
    return finish_run(run, out, t0)


def finish_run(run: EvalRun, out: Path, t0: float) -> EvalRun:
    """Stamp the wall time, write every output (metrics, report, pictures) and fail when nothing was scored.

    Raises:
        MonotherError: no frame was scored (the outputs are written first).
    """
    from monother_ros.eval import report

    run.wall_s = time.perf_counter() - t0
    report.write_all(run, out)
    if run.frames_scored == 0:
        raise MonotherError("nothing could be scored: " + ("; ".join(run.errors) or "no frame had ground truth")
                            + f" (see {out / 'metrics.json'})")
    return run

"""Ground truth for evaluation: depth images or LiDAR clouds, matched to thermal frames by stamp.

Two sources (both give (H, W) float32 metres in the thermal camera, NaN where there is no ground truth):

* a depth image topic (``/gt/depth``, REP 118: ``32FC1`` metres with NaN / 0 invalid, or ``16UC1``
  millimetres with 0 invalid), which must be in the thermal camera's frame and size;
* a LiDAR ``PointCloud2`` (``/lidar/points``) projected into the thermal camera through the static TF
  tree (``/tf_static``) and the thermal ``camera_info``: each point goes to the nearest pixel
  (``round(u), round(v)``) and, when several land on one pixel, the nearest one (smallest optical z)
  wins (a z-buffer). No motion compensation: a scan is used as if taken at the matched thermal stamp, so
  the tolerance should stay small compared with the platform's speed (10 Hz LiDAR: default 50 ms).

Matching (:class:`StampMatcher`): a thermal frame gets the ground-truth message with the nearest stamp
within ``tolerance_ns`` (ties go to the earlier one). Messages are consumed in bag order and a frame is
decided as soon as a ground-truth stamp beyond ``frame + tolerance`` has been seen (or the bag ended), so
memory stays bounded by the tolerance window.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

import numpy as np

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.errors import BagError

__all__ = [
    "DEFAULT_DEPTH_TOLERANCE_NS",
    "DEFAULT_LIDAR_TOLERANCE_NS",
    "depth_image_to_metres",
    "project_points",
    "StampMatcher",
]

LOG = logging.getLogger(__name__)

# A depth image rendered/recorded for the thermal frame carries its stamp (same clock): allow rounding only.
DEFAULT_DEPTH_TOLERANCE_NS = 5_000_000
# Half a 10 Hz LiDAR period: every thermal frame can find the scan nearest to it.
DEFAULT_LIDAR_TOLERANCE_NS = 50_000_000


def depth_image_to_metres(image: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded depth image as float32 metres with NaN where invalid.

    Args:
        image: (H, W) array from ``bag_reader.image_to_numpy``.
        encoding: ``32FC1`` (metres; NaN, inf, <= 0 invalid) or ``16UC1`` / ``mono16`` (millimetres, 0
            invalid), as REP 118.

    Returns:
        (H, W) float32 metres, NaN where invalid; a read-only view of ``image`` when it is float32 and
        already NaN-or-positive-finite everywhere, else a new array.

    Raises:
        BagError: another encoding or not a 2-D image.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise BagError(f"ground-truth depth must be a single-channel image, got shape {image.shape} ({encoding})")
    enc = encoding.upper()
    if enc == "32FC1":
        flat = image.reshape(-1)
        # Usually already NaN-or-positive-finite: then a read-only view saves a copy of every frame.
        # fmin / fmax reductions skip NaN and need no temporary arrays.
        if flat.size and image.dtype == np.float32 and np.fmin.reduce(flat) > 0 and np.fmax.reduce(flat) < np.inf:
            out = image.view()
            out.flags.writeable = False
            return out
        out = image.astype(np.float32, copy=True)
    elif enc in ("16UC1", "MONO16"):
        out = np.multiply(image, np.float32(1e-3), dtype=np.float32)
        if image.size and image.min() > 0:
            return out
    else:
        raise BagError(f"ground-truth depth encoding {encoding!r} is not supported (use 32FC1 metres or 16UC1 mm)")
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def project_points(points: np.ndarray, camera: PinholeCamera, T_camera_points: np.ndarray, *,
                   min_z: float = 0.01) -> np.ndarray:
    """Sparse depth image of a point cloud: nearest return per pixel (z-buffer).

    Args:
        points: (N, >= 3) metres in the cloud's frame (extra columns ignored; NaN rows dropped).
        camera: the target camera; its size is the output size.
        T_camera_points: (4, 4) maps the cloud's frame into the camera's optical frame (z forward).
        min_z: points nearer than this (or behind the camera) are dropped, metres.

    Returns:
        (H, W) float32 optical z-depth in metres, NaN where no point lands.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be (N, >=3), got {pts.shape}")
    T = np.asarray(T_camera_points, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_camera_points must be 4x4, got {T.shape}")
    out = np.full((camera.height, camera.width), np.nan, dtype=np.float32)
    if pts.shape[0] == 0:
        return out
    p = se3.transform_points(T, pts[:, :3])
    z = p[:, 2]
    keep = np.isfinite(p).all(axis=1) & (z >= min_z)
    p, z = p[keep], z[keep]
    u = np.rint(camera.fx * p[:, 0] / z + camera.cx)
    v = np.rint(camera.fy * p[:, 1] / z + camera.cy)
    inside = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    flat = v[inside].astype(np.int64) * camera.width + u[inside].astype(np.int64)
    z = z[inside]
    # Write farthest first so that the nearest return on a pixel is written last and wins.
    order = np.argsort(-z, kind="stable")
    out.reshape(-1)[flat[order]] = z[order].astype(np.float32)
    return out


T = TypeVar("T")
F = TypeVar("F")


@dataclass
class _Pending(Generic[F]):
    stamp_ns: int
    frame: F


class StampMatcher(Generic[F, T]):
    """Pairs frames with ground-truth items by nearest stamp within a tolerance, streaming.

    Feed frames and ground truth in bag order with :meth:`add_frame` / :meth:`add_truth`; :meth:`ready`
    yields ``(frame, truth or None, truth_stamp_ns or None)`` for every frame whose match is decided,
    in frame order; :meth:`finish` decides the rest (end of bag).

    Args:
        tolerance_ns: maximum |frame stamp - truth stamp|, nanoseconds (>= 0).
    """

    def __init__(self, tolerance_ns: int) -> None:
        if tolerance_ns < 0:
            raise ValueError(f"tolerance must be >= 0 ns, got {tolerance_ns}")
        self.tolerance_ns = int(tolerance_ns)
        self._frames: deque[_Pending[F]] = deque()
        self._truth: deque[tuple[int, T]] = deque()
        self._latest_truth_ns: int | None = None
        self._last_frame_ns: int | None = None

    # Ground truth kept while no frame needs it (e.g. a GT topic without thermal frames): a bound on memory.
    MAX_UNCLAIMED = 64

    def add_frame(self, stamp_ns: int, frame: F) -> None:
        self._frames.append(_Pending(int(stamp_ns), frame))
        self._last_frame_ns = int(stamp_ns)

    def add_truth(self, stamp_ns: int, truth: T) -> None:
        stamp_ns = int(stamp_ns)
        if self._truth and stamp_ns < self._truth[-1][0]:
            # Out-of-order ground truth (recorder reordering): keep the buffer sorted.
            items = sorted([*self._truth, (stamp_ns, truth)], key=lambda x: x[0])
            self._truth = deque(items)
        else:
            self._truth.append((stamp_ns, truth))
        self._latest_truth_ns = stamp_ns if self._latest_truth_ns is None else max(self._latest_truth_ns, stamp_ns)
        self._prune()
        while len(self._truth) > self.MAX_UNCLAIMED and not self._frames:
            self._truth.popleft()

    def _match(self, stamp_ns: int) -> tuple[T | None, int | None]:
        best: tuple[int, int, T] | None = None
        for s, truth in self._truth:
            d = abs(s - stamp_ns)
            if d <= self.tolerance_ns and (best is None or d < best[0]):
                best = (d, s, truth)
        return (best[2], best[1]) if best is not None else (None, None)

    def _prune(self) -> None:
        # Truth older than the oldest pending (or the last seen) frame minus the tolerance can never match
        # again: frames arrive in stamp order.
        reference = self._frames[0].stamp_ns if self._frames else self._last_frame_ns
        if reference is None:
            return
        horizon = reference - self.tolerance_ns
        while self._truth and self._truth[0][0] < horizon:
            self._truth.popleft()

    def ready(self) -> Iterator[tuple[F, T | None, int | None]]:
        """Frames whose match can no longer change (a later truth beyond their window has arrived)."""
        while self._frames and self._latest_truth_ns is not None and \
                self._latest_truth_ns > self._frames[0].stamp_ns + self.tolerance_ns:
            pending = self._frames.popleft()
            truth, stamp = self._match(pending.stamp_ns)
            yield pending.frame, truth, stamp
            self._prune()

    def finish(self) -> Iterator[tuple[F, T | None, int | None]]:
        """Decide every remaining frame (call at the end of the bag)."""
        while self._frames:
            pending = self._frames.popleft()
            truth, stamp = self._match(pending.stamp_ns)
            yield pending.frame, truth, stamp
            self._prune()

    @property
    def pending(self) -> int:
        return len(self._frames)


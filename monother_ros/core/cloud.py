"""Depth image -> organised point cloud, and the byte layout of an organised PointCloud2.

Back-projection follows depth_image_proc's ``convertDepth``: with z the depth in metres at pixel
(u, v), ``x = (u - cx) / fx * z`` and ``y = (v - cy) / fy * z``; the per-column and per-row factors
are computed once per camera. Invalid depth (NaN, inf, <= 0) gives a NaN point, so the cloud stays
organised (H x W points, ``is_dense = False``).

PointCloud2 layout produced by :func:`pack_xyzi`: little-endian float32 fields x, y, z, intensity
at offsets 0, 4, 8, 12; ``point_step`` 16; ``row_step`` = 16 * W; ``height`` H, ``width`` W. The ROS
layer wraps the bytes and :data:`POINT_FIELDS` into a message; nothing here imports ROS.
"""
from __future__ import annotations

import logging
import sys
from typing import NamedTuple

import numpy as np

from monother_ros.core.camera import PinholeCamera

__all__ = [
    "POINT_STEP",
    "FLOAT32_DATATYPE",
    "POINT_FIELDS",
    "PointField",
    "CloudProjector",
    "depth_to_points",
    "pack_xyzi",
]

_logger = logging.getLogger(__name__)

POINT_STEP = 16
FLOAT32_DATATYPE = 7  # sensor_msgs/PointField.FLOAT32


class PointField(NamedTuple):
    """Description of one field, the same four values as ``sensor_msgs/PointField``."""

    name: str
    offset: int
    datatype: int
    count: int


POINT_FIELDS: tuple[PointField, ...] = (
    PointField("x", 0, FLOAT32_DATATYPE, 1),
    PointField("y", 4, FLOAT32_DATATYPE, 1),
    PointField("z", 8, FLOAT32_DATATYPE, 1),
    PointField("intensity", 12, FLOAT32_DATATYPE, 1),
)

_XYZI_DTYPE = np.dtype("<f4")
_LITTLE_ENDIAN = sys.byteorder == "little"


class CloudProjector:
    """Back-projects depth images of one camera; the per-column/per-row factors are hoisted.

    Args:
        camera: intrinsics of the depth image (its size must match the depth images).
    """

    def __init__(self, camera: PinholeCamera) -> None:
        self.camera = camera
        self.height, self.width = camera.height, camera.width
        self._x_factor = ((np.arange(camera.width, dtype=np.float64) - camera.cx) / camera.fx).astype(np.float32)
        self._y_factor = ((np.arange(camera.height, dtype=np.float64) - camera.cy) / camera.fy).astype(np.float32)
        self._buffer = np.empty((camera.height, camera.width, 4), _XYZI_DTYPE)
        # x and y are adjacent float32 in the packed layout: seen as one complex64, both come from one
        # multiply z * (x_factor + i y_factor) (exact: the cross terms are z * 0), one pass instead of two.
        self._xy_factor = (self._x_factor[None, :] + 1j * self._y_factor[:, None]).astype(np.complex64)

    def points(self, depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(H, W) metres -> (H, W, 3) float32 points in the camera's optical frame (NaN for invalid)."""
        z = self._clean_depth(depth)
        if out is None:
            out = np.empty((self.height, self.width, 3), np.float32)
        self._fill(z, out)
        return out

    def pack(self, depth: np.ndarray, intensity: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Organised PointCloud2 data for a depth image: (H * W * 16,) uint8, a view of an internal buffer.

        Args:
            depth: (H, W) metres, NaN/inf/<=0 invalid.
            intensity: (H, W) per-point value (intensity, confidence); 0 when None.
            out: optional writable (H * W * 16,) uint8 array (e.g. a view of a message buffer) to fill
                instead of the internal buffer (saves the copy into the message).

        Without ``out`` the internal buffer is reused by the next call: copy (``bytes(...)``) before the
        next frame.
        """
        z = self._clean_depth(depth)
        if out is None:
            buf = self._buffer
        else:
            if out.dtype != np.uint8 or out.size != self.height * self.width * POINT_STEP:
                raise ValueError(f"out must be ({self.height * self.width * POINT_STEP},) uint8, got {out.shape} {out.dtype}")
            buf = out.view(_XYZI_DTYPE).reshape(self.height, self.width, 4)
        if _LITTLE_ENDIAN:
            np.multiply(z, self._xy_factor, out=buf.view(np.complex64)[..., 0])
            buf[..., 2] = z
        else:  # pragma: no cover - the buffer is little-endian, native complex64 would not be
            self._fill(z, buf)
        if intensity is None:
            buf[..., 3] = 0.0
        else:
            if intensity.shape != (self.height, self.width):
                raise ValueError(f"intensity shape {intensity.shape} != ({self.height}, {self.width})")
            buf[..., 3] = intensity
        return buf.reshape(-1).view(np.uint8)

    def _clean_depth(self, depth: np.ndarray) -> np.ndarray:
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth shape {depth.shape} != camera ({self.height}, {self.width})")
        z = np.asarray(depth, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            # NaN needs no replacing (it stays NaN through the products); only <= 0 and inf do.
            bad = (z <= 0) | np.isinf(z)
        if bad.any():
            z = np.where(bad, np.float32(np.nan), z)
        return z

    def _fill(self, z: np.ndarray, out: np.ndarray) -> None:
        np.multiply(z, self._x_factor[None, :], out=out[..., 0])
        np.multiply(z, self._y_factor[:, None], out=out[..., 1])
        out[..., 2] = z


def depth_to_points(depth: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """(H, W) metres -> organised (H, W, 3) float32 points; NaN/inf/<=0 depth gives NaN points."""
    return CloudProjector(camera).points(depth)


def pack_xyzi(xyz: np.ndarray, intensity: np.ndarray | None = None) -> np.ndarray:
    """Interleave (H, W, 3) points and an (H, W) float into PointCloud2 bytes (H * W * 16,) uint8.

    Layout: see the module docstring (x, y, z, intensity little-endian float32, point_step 16).
    """
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be (H, W, 3), got {xyz.shape}")
    h, w, _ = xyz.shape
    buf = np.empty((h, w, 4), _XYZI_DTYPE)
    buf[..., :3] = xyz
    if intensity is None:
        buf[..., 3] = 0.0
    else:
        if intensity.shape != (h, w):
            raise ValueError(f"intensity shape {intensity.shape} != ({h}, {w})")
        buf[..., 3] = intensity
    return buf.reshape(-1).view(np.uint8)

"""Pinhole camera model (no distortion) with intrinsics that follow image resizing.

Pixel convention: pixel (u, v) has its centre at integer coordinates, u along width, v along height;
optical frame z forward, x right, y down (REP 103).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monother_ros.errors import CalibrationError


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of an undistorted pinhole camera.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels (pixel-centre convention).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``CalibrationError`` for non-finite or degenerate intrinsics."""
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise CalibrationError(f"intrinsics are not finite: fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise CalibrationError(f"focal lengths must be positive: fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"image size must be positive: {self.width}x{self.height}")

    @classmethod
    def from_hfov(cls, width: int, height: int, hfov_deg: float) -> "PinholeCamera":
        """Square pixels, principal point at the image centre, given horizontal field of view."""
        fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0)

    @classmethod
    def from_matrix(cls, K: np.ndarray, width: int, height: int) -> "PinholeCamera":
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise CalibrationError(f"K must be 3x3, got {K.shape}")
        return cls(int(width), int(height), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.width / 2.0) / self.fx))

    def resized(self, width: int, height: int, *, align_corners: bool = True) -> "PinholeCamera":
        """Intrinsics of this camera's image resized to ``width`` x ``height``.

        ``align_corners=True`` matches ``F.interpolate(..., align_corners=True)`` (the MonoTher / DA
        preprocessing): corner pixel centres map onto corner pixel centres, so u' = u * (W'-1)/(W-1).
        ``align_corners=False`` is the pixel-area convention: u' = (u + 0.5) * W'/W - 0.5.
        """
        if align_corners:
            sx = (width - 1) / max(self.width - 1, 1)
            sy = (height - 1) / max(self.height - 1, 1)
            return PinholeCamera(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(
            width, height, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5
        )

    def pixel_rays(self) -> np.ndarray:
        """(H, W, 3) float64 rays with z = 1 through every pixel centre."""
        u = (np.arange(self.width, dtype=np.float64) - self.cx) / self.fx
        v = (np.arange(self.height, dtype=np.float64) - self.cy) / self.fy
        rays = np.empty((self.height, self.width, 3))
        rays[..., 0] = u[None, :]
        rays[..., 1] = v[:, None]
        rays[..., 2] = 1.0
        return rays

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """Points (H, W, 3) in the optical frame from z-depth (H, W) in metres (NaN stays NaN)."""
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth shape {depth.shape} != camera {(self.height, self.width)}")
        return self.pixel_rays() * depth[..., None]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (..., 3) optical-frame points; returns (uv (..., 2), z (...)). Points with z<=0 give NaN."""
        points = np.asarray(points, dtype=np.float64)
        z = points[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_z = np.where(z > 0, 1.0 / z, np.nan)
        uv = np.stack((self.fx * points[..., 0] * inv_z + self.cx, self.fy * points[..., 1] * inv_z + self.cy), -1)
        return uv, z

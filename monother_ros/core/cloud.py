"""Depth image -> organised point cloud, its options (decimation, range limit, RGB colour), and the
byte layout of an organised PointCloud2.

Back-projection follows depth_image_proc's ``convertDepth``: with z the depth in metres at pixel
(u, v), ``x = (u - cx) / fx * z`` and ``y = (v - cy) / fy * z``; the per-column and per-row factors
are computed once per camera. Invalid depth (NaN, inf, <= 0) gives a NaN point, so the cloud stays
organised (``is_dense = False``).

Options (:class:`CloudOptions`):

* ``decimation`` n keeps pixel rows 0, n, 2n, ... and the same columns: an organised cloud of
  ceil(H / n) x ceil(W / n) points, each back-projected at its own pixel (u = k n), so a decimated
  cloud is a subset of the full one;
* ``max_range_m`` > 0: points farther than this from the optical centre (Euclidean range
  sqrt(x^2 + y^2 + z^2), metres) become NaN;
* ``rgb``: an extra ``rgb`` field. Each point, expressed in the RGB camera through the extrinsic
  ``T_rgb_thermal`` (``p_rgb = R p + t``), is projected with the RGB intrinsics and takes the colour of
  the nearest RGB pixel (``floor(u + 0.5)``, pixel centres at integers); points behind the RGB camera
  (z <= 1 mm), outside its image, invalid, or without an RGB frame are black (0, 0, 0).
  The colour is packed as in PCL / sensor_msgs_py: the uint32 ``0x00RRGGBB`` stored in a FLOAT32 field
  (its bits reinterpreted, as RViz's RGB8 colour transformer reads it).

PointCloud2 layouts (little-endian float32 fields, ``row_step`` = point_step * width):

* x, y, z, intensity at offsets 0, 4, 8, 12, ``point_step`` 16 (:data:`POINT_FIELDS`);
* with ``rgb``: x, y, z, intensity, rgb at 0, 4, 8, 12, 16, ``point_step`` 20 (:data:`POINT_FIELDS_RGB`).

The ROS layer wraps the bytes and the fields into a message; nothing here imports ROS.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from monother_ros.core.camera import PinholeCamera

__all__ = [
    "POINT_STEP",
    "POINT_STEP_RGB",
    "FLOAT32_DATATYPE",
    "POINT_FIELDS",
    "POINT_FIELDS_RGB",
    "PointField",
    "CloudOptions",
    "RgbView",
    "CloudProjector",
    "depth_to_points",
    "pack_xyzi",
    "pack_rgb",
    "unpack_rgb",
    "colour_points",
]

_logger = logging.getLogger(__name__)

POINT_STEP = 16
POINT_STEP_RGB = 20
FLOAT32_DATATYPE = 7  # sensor_msgs/PointField.FLOAT32
_MIN_RGB_Z_M = 1e-3   # points closer than this in front of the RGB camera are not projected


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
POINT_FIELDS_RGB: tuple[PointField, ...] = POINT_FIELDS + (PointField("rgb", 16, FLOAT32_DATATYPE, 1),)

_XYZI_DTYPE = np.dtype("<f4")
_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class CloudOptions:
    """What the cloud holds (see the module docstring).

    Args:
        decimation: keep every n-th row and column (1 = every pixel).
        max_range_m: points farther than this from the optical centre are NaN, metres; 0 = no limit.
        rgb: add the ``rgb`` field (colour from a paired RGB frame; black without one).

    Raises:
        ValueError: decimation < 1, max_range_m negative or not finite.
    """

    decimation: int = 1
    max_range_m: float = 0.0
    rgb: bool = False

    def __post_init__(self) -> None:
        integer = isinstance(self.decimation, (int, np.integer)) and not isinstance(self.decimation, bool)
        if not integer or self.decimation < 1:
            raise ValueError(f"decimation must be an integer >= 1, got {self.decimation!r}")
        if not math.isfinite(self.max_range_m) or self.max_range_m < 0:
            raise ValueError(f"max_range_m must be finite and >= 0 (0 = no limit), got {self.max_range_m!r}")

    @property
    def fields(self) -> tuple[PointField, ...]:
        """The PointCloud2 fields of this layout."""
        return POINT_FIELDS_RGB if self.rgb else POINT_FIELDS

    @property
    def point_step(self) -> int:
        """Bytes per point."""
        return POINT_STEP_RGB if self.rgb else POINT_STEP


class RgbView:
    """A paired RGB frame for colouring points.

    Args:
        image: (Hr, Wr, 3) uint8 in R, G, B order.
        camera: the RGB camera's intrinsics (its size must match the image).
        T_rgb_thermal: (4, 4) maps points of the depth (thermal optical) frame into the RGB optical frame.

    Raises:
        ValueError: wrong shapes or dtype, camera size != image size, non-finite extrinsic.
    """

    def __init__(self, image: np.ndarray, camera: PinholeCamera, T_rgb_thermal: np.ndarray) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"RGB image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if (camera.height, camera.width) != image.shape[:2]:
            raise ValueError(f"RGB camera is {camera.width}x{camera.height} but the image is "
                             f"{image.shape[1]}x{image.shape[0]}")
        T = np.asarray(T_rgb_thermal, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"T_rgb_thermal must be a finite 4x4 matrix, got shape {T.shape}")
        self.image, self.camera, self.T_rgb_thermal = image, camera, T
        self._packed: Optional[np.ndarray] = None

    @property
    def packed(self) -> np.ndarray:
        """(Hr * Wr,) uint32 ``0x00RRGGBB`` of the image, row-major (computed once)."""
        if self._packed is None:
            self._packed = pack_rgb(self.image).reshape(-1)
        return self._packed


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 R, G, B -> (...) uint32 ``0x00RRGGBB`` (view it as float32 for the ``rgb`` field)."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"colours must be (..., 3), got {rgb.shape}")
    c = rgb.astype(np.uint32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(...) uint32 or float32 (bits reinterpreted) ``rgb`` field -> (..., 3) uint8 R, G, B."""
    packed = np.asarray(packed)
    if packed.dtype == np.float32:
        packed = packed.view(np.uint32)
    packed = packed.astype(np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1).astype(np.uint8)


def colour_points(points: np.ndarray, view: RgbView) -> np.ndarray:
    """Colour of each point seen by the RGB camera (nearest pixel; black where it is not seen).

    Args:
        points: (h, w, 3) float32 in the depth (thermal optical) frame, metres; NaN = invalid.
        view: the paired RGB frame, its intrinsics and ``T_rgb_thermal``.

    Returns:
        (h, w) uint32 packed ``0x00RRGGBB``; 0 (black) for invalid points, points behind the RGB camera
        (z <= 1 mm) or outside its image.
    """
    p = np.asarray(points, dtype=np.float32)
    R = view.T_rgb_thermal[:3, :3].astype(np.float32)
    t = view.T_rgb_thermal[:3, 3].astype(np.float32)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    cam = view.camera
    # float32 and one channel at a time: a (h, w, 3) float64 matmul costs ~5x more at 640x512.
    with np.errstate(invalid="ignore", divide="ignore"):
        qz = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z + t[2]
        scale = np.float32(1.0) / qz
        u = (R[0, 0] * x + R[0, 1] * y + R[0, 2] * z + t[0]) * scale
        u *= np.float32(cam.fx)
        u += np.float32(cam.cx + 0.5)
        np.floor(u, out=u)
        v = (R[1, 0] * x + R[1, 1] * y + R[1, 2] * z + t[1]) * scale
        v *= np.float32(cam.fy)
        v += np.float32(cam.cy + 0.5)
        np.floor(v, out=v)
        seen = (qz > _MIN_RGB_Z_M) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    index = np.where(seen, v * cam.width + u, 0).astype(np.intp)
    return np.where(seen, view.packed[index], np.uint32(0))


class CloudProjector:
    """Back-projects depth images of one camera into organised clouds; the per-column/per-row factors
    are hoisted, the options fixed per projector.

    Args:
        camera: intrinsics of the depth image (its size must match the depth images).
        options: decimation, range limit and RGB field (default: every pixel, no limit, no colour).

    Attributes:
        height, width: size of the (decimated) organised cloud.
        fields, point_step: its PointCloud2 layout.
    """

    def __init__(self, camera: PinholeCamera, options: Optional[CloudOptions] = None) -> None:
        self.camera = camera
        self.options = options = options or CloudOptions()
        n = options.decimation
        self._columns = np.arange(0, camera.width, n)
        self._rows = np.arange(0, camera.height, n)
        self.height, self.width = len(self._rows), len(self._columns)
        self.fields, self.point_step = options.fields, options.point_step
        self._channels = self.point_step // 4
        self._x_factor = ((self._columns.astype(np.float64) - camera.cx) / camera.fx).astype(np.float32)
        self._y_factor = ((self._rows.astype(np.float64) - camera.cy) / camera.fy).astype(np.float32)
        self._buffer = np.empty((self.height, self.width, self._channels), _XYZI_DTYPE)
        # Range = z * |(x_factor, y_factor, 1)|: the range limit becomes one multiply on z, and a NaN z
        # makes the whole point NaN.
        self._ray_norm = None
        if options.max_range_m:
            squared = 1.0 + self._x_factor[None, :] ** 2 + self._y_factor[:, None] ** 2
            self._ray_norm = np.sqrt(squared).astype(np.float32)
        # x and y are adjacent float32 in the packed layout: seen as one complex64, both come from one
        # multiply z * (x_factor + i y_factor) (exact: the cross terms are z * 0), one pass instead of two.
        # Only possible when a point is a whole number of complex64 (the 16-byte layout).
        self._xy_factor = (self._x_factor[None, :] + 1j * self._y_factor[:, None]).astype(np.complex64)

    def _decimate(self, image: np.ndarray) -> np.ndarray:
        n = self.options.decimation
        return image if n == 1 else image[::n, ::n]

    def points(self, depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(H, W) metres -> (h, w, 3) float32 points in the camera's optical frame (NaN for invalid or
        beyond ``max_range_m``); (h, w) is the decimated size."""
        z = self._clean_depth(depth)
        if out is None:
            out = np.empty((self.height, self.width, 3), np.float32)
        self._fill(z, out)
        return out

    def pack(self, depth: np.ndarray, intensity: np.ndarray | None = None, out: np.ndarray | None = None,
             rgb: RgbView | None = None) -> np.ndarray:
        """Organised PointCloud2 data for a depth image: (h * w * point_step,) uint8, a view of an
        internal buffer.

        Args:
            depth: (H, W) metres (the camera's full size), NaN/inf/<=0 invalid.
            intensity: (H, W) per-point value (intensity, confidence); 0 when None.
            out: optional writable (h * w * point_step,) uint8 array (e.g. a view of a message buffer)
                to fill instead of the internal buffer (saves the copy into the message).
            rgb: the paired RGB frame for the ``rgb`` field (ignored without ``options.rgb``; black
                points when None).

        Without ``out`` the internal buffer is reused by the next call: copy (``bytes(...)``) before the
        next frame.
        """
        z = self._clean_depth(depth)
        size = self.height * self.width * self.point_step
        if out is None:
            buf = self._buffer
        else:
            if out.dtype != np.uint8 or out.size != size:
                raise ValueError(f"out must be ({size},) uint8, got {out.shape} {out.dtype}")
            buf = out.view(_XYZI_DTYPE).reshape(self.height, self.width, self._channels)
        if _LITTLE_ENDIAN and self._channels == 4:
            np.multiply(z, self._xy_factor, out=buf.view(np.complex64)[..., 0])
            buf[..., 2] = z
        else:  # the 20-byte layout, or a big-endian host (the buffer is little-endian)
            self._fill(z, buf)
        if intensity is None:
            buf[..., 3] = 0.0
        else:
            if intensity.shape != (self.camera.height, self.camera.width):
                raise ValueError(f"intensity shape {intensity.shape} != ({self.camera.height}, {self.camera.width})")
            buf[..., 3] = self._decimate(intensity)
        if self.options.rgb:
            colours = buf.view(np.uint32)[..., 4]
            if rgb is None:
                colours[...] = 0
            else:
                colours[...] = colour_points(buf[..., :3], rgb)
        return buf.reshape(-1).view(np.uint8)

    def _clean_depth(self, depth: np.ndarray) -> np.ndarray:
        if depth.shape != (self.camera.height, self.camera.width):
            raise ValueError(f"depth shape {depth.shape} != camera ({self.camera.height}, {self.camera.width})")
        z = np.asarray(self._decimate(depth), dtype=np.float32)
        with np.errstate(invalid="ignore"):
            # NaN needs no replacing (it stays NaN through the products); only <= 0 and inf do.
            bad = (z <= 0) | np.isinf(z)
        if self._ray_norm is not None:
            with np.errstate(invalid="ignore"):
                bad |= z * self._ray_norm > np.float32(self.options.max_range_m)
        if bad.any():
            z = np.where(bad, np.float32(np.nan), z)
        return z

    def _fill(self, z: np.ndarray, out: np.ndarray) -> None:
        np.multiply(z, self._x_factor[None, :], out=out[..., 0])
        np.multiply(z, self._y_factor[:, None], out=out[..., 1])
        out[..., 2] = z


def depth_to_points(depth: np.ndarray, camera: PinholeCamera, options: Optional[CloudOptions] = None) -> np.ndarray:
    """(H, W) metres -> organised (h, w, 3) float32 points; NaN/inf/<=0 depth gives NaN points
    (h, w = H, W unless ``options`` decimates)."""
    return CloudProjector(camera, options).points(depth)


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

"""One camera frame's preprocessing, postprocessing and back-projection as torch ops on any device.

The numpy implementations in ``core.preprocess`` (:class:`ThermalPreprocessor`,
:class:`DepthPostprocessor`) and ``core.cloud`` (:class:`CloudProjector`) are the reference; these
classes compute the same numbers with torch so that an engine running on a GPU keeps the whole frame
there (one host-to-device copy of the raw counts, one device-to-host copy of the outputs). They run on
CPU tensors too, which is how the test suite checks them against the numpy path.

Every operation is free of host synchronisation and data-dependent shapes, so a frame can be captured
in a CUDA graph: the percentiles come from a histogram filled with ``index_add_`` (``bincount`` reads
the maximum back to size its output), and the interpolation ranks are fixed per camera size.

Numbers (float32 unless said):

* percentiles: the same order statistics and numpy lerp as ``core.preprocess.integer_percentiles``
  (float64, exact);
* the 2^bits lookup table: the same float64 expression as ``core.preprocess._unit_lut``, rounded once
  to float32 (bit-identical);
* bilinear resizes: ``F.interpolate(mode="bilinear", align_corners=True)``, equal to the numpy
  separable resize up to float32 rounding (~1e-7 relative);
* masking and the cloud: the same float32 comparisons and products.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ThermalPreprocessorTorch",
    "DepthPostprocessorTorch",
    "CloudProjectorTorch",
    "counts_to_index",
]

_LOW_PERCENTILE = 2.0  # as core.preprocess (core modules do not import each other's internals)
_HIGH_PERCENTILE = 98.0


def counts_to_index(raw: Tensor) -> Tensor:
    """Raw thermal counts as int32 indices in [0, 2^bits).

    Args:
        raw: (H, W) ``uint8``, ``int16`` holding uint16 bit patterns (a host uint16 buffer viewed as
            int16: int16 is supported by every device kernel, uint16 is not everywhere), ``uint16`` or
            ``int32``.

    Returns:
        (H, W) int32.
    """
    if raw.dtype == torch.int16:
        return raw.to(torch.int32).bitwise_and_(0xFFFF)
    if raw.dtype in (torch.uint8, torch.int32):
        return raw.to(torch.int32)
    if raw.dtype == torch.uint16:
        return raw.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
    raise ValueError(f"raw thermal counts must be uint8, uint16, int16 or int32, got {raw.dtype}")


class ThermalPreprocessorTorch:
    """Raw thermal counts (H, W) -> network input (1, 3, h, w) float32, as ``core.preprocess``.

    Steps: histogram of the counts -> the ``low``/``high`` percentiles -> a 2^bits float32 table
    ``((clip((c / full - lo) / span, 0, 1)) - mean) / std`` -> lookup -> bilinear resize
    (align_corners) -> the plane copied into 3 channels. With per-channel ``mean``/``std`` (not all
    equal) the table maps to [0, 1] and each channel is normalised after the resize, as the numpy
    engine path does.

    Args:
        in_hw: camera (H, W).
        out_hw: network input (h, w).
        bits: 16 (mono16) or 8 (mono8).
        mean, std: per-channel normalisation (3 values each).
        low, high: clip percentiles.
        device: where the tables live (the frames must be on the same device).
    """

    def __init__(self, in_hw: Sequence[int], out_hw: Sequence[int], *, bits: int = 16,
                 mean: Sequence[float] = (0.45, 0.45, 0.45), std: Sequence[float] = (0.225, 0.225, 0.225),
                 low: float = _LOW_PERCENTILE, high: float = _HIGH_PERCENTILE,
                 device: torch.device | str = "cpu") -> None:
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits}")
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {low}, {high}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {mean} / {std}")
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        if min(*self.in_hw, *self.out_hw) <= 0:
            raise ValueError(f"sizes must be positive: {self.in_hw} -> {self.out_hw}")
        self.bits = bits
        self.device = torch.device(device)
        levels = 1 << bits
        self._full = float(levels - 1)
        n = self.in_hw[0] * self.in_hw[1]
        # Interpolation ranks of the two percentiles (fixed per camera size), numpy's linear method.
        pos = np.asarray((low, high), np.float64) / 100.0 * (n - 1)
        below = np.floor(pos)
        self._frac = [float(f) for f in pos - below]
        above = np.minimum(below + 1, n - 1)
        self._ranks = torch.tensor(np.concatenate((below, above)).astype(np.int64), device=self.device)
        self._levels = torch.arange(levels, dtype=torch.float64, device=self.device) / self._full
        self._hist = torch.zeros(levels, dtype=torch.int32, device=self.device)
        self._ones = torch.ones(n, dtype=torch.int32, device=self.device)
        same = len(set(mean)) == 1 and len(set(std)) == 1
        self._lut_mean, self._lut_std = (float(mean[0]), float(std[0])) if same else (0.0, 1.0)
        self._per_channel = None if same else (
            torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1))
        self.output = torch.empty((1, 3, *self.out_hw), dtype=torch.float32, device=self.device)

    def bounds(self, index: Tensor) -> Tensor:
        """(2,) float64 ``(lo, hi)`` on the [0, 1] scale for (H, W) int32 counts (device tensor, no sync)."""
        hist = self._hist.zero_()
        hist.index_add_(0, index.reshape(-1), self._ones)
        cdf = hist.cumsum(0)
        # Value of the k-th order statistic (0-based): the first count whose cdf exceeds k.
        v = torch.searchsorted(cdf, self._ranks, right=True).to(torch.float64)
        vals = []
        for i, frac in enumerate(self._frac):
            v_lo, v_hi = v[i], v[i + 2]
            diff = v_hi - v_lo
            # numpy's lerp: a + (b - a) t, evaluated from the nearer end for t >= 0.5.
            vals.append(v_hi - diff * (1.0 - frac) if frac >= 0.5 else v_lo + diff * frac)
        return torch.stack(vals) / self._full

    def lut(self, bounds: Tensor) -> Tensor:
        """(2^bits,) float32 table for ``bounds`` = (lo, hi), the float64 expression of the numpy table."""
        lo, hi = bounds[0], bounds[1]
        span = torch.clamp(hi - lo, min=1.0 / self._full)  # guard: hi == lo on a constant frame
        ramp = ((self._levels - lo) / span).clamp_(0.0, 1.0)
        if self._lut_mean != 0.0 or self._lut_std != 1.0:
            ramp = (ramp - self._lut_mean) / self._lut_std
        return ramp.to(torch.float32)

    def __call__(self, raw: Tensor, out: Tensor | None = None) -> Tensor:
        """Preprocess one frame.

        Args:
            raw: (H, W) counts on ``device`` (see :func:`counts_to_index` for the dtypes).
            out: optional (1, 3, h, w) float32 tensor to write into (e.g. a captured network input);
                default ``self.output``.

        Returns:
            ``out`` (or ``self.output``).
        """
        if tuple(raw.shape) != self.in_hw:
            raise ValueError(f"thermal frame shape {tuple(raw.shape)} != configured {self.in_hw}")
        out = self.output if out is None else out
        index = counts_to_index(raw)
        table = self.lut(self.bounds(index))
        mapped = table.index_select(0, index.reshape(-1)).view(1, 1, *self.in_hw)
        if self.out_hw != self.in_hw:
            mapped = F.interpolate(mapped, size=self.out_hw, mode="bilinear", align_corners=True)
        out.copy_(mapped.expand(1, 3, *self.out_hw))
        if self._per_channel is not None:
            mean, std = self._per_channel
            out.sub_(mean).div_(std)
        return out


class DepthPostprocessorTorch:
    """Network depth (+ confidence) -> camera-resolution outputs, as ``core.preprocess.DepthPostprocessor``.

    Bilinear resize (align_corners) of depth and confidence together, confidence clipped to [0, 1],
    depth NaN where it is not finite, not inside ``(min_depth, max_depth)`` or the confidence is below
    ``min_confidence``.

    Args:
        net_hw: network output (h, w); cam_hw: camera (H, W).
        device: where the threshold tensor lives.
    """

    def __init__(self, net_hw: Sequence[int], cam_hw: Sequence[int], *, device: torch.device | str = "cpu") -> None:
        self.net_hw = (int(net_hw[0]), int(net_hw[1]))
        self.cam_hw = (int(cam_hw[0]), int(cam_hw[1]))
        if min(*self.net_hw, *self.cam_hw) <= 0:
            raise ValueError(f"sizes must be positive: {self.net_hw} -> {self.cam_hw}")
        self.device = torch.device(device)
        # (min_depth, max_depth, min_confidence) as float32, the precision numpy compares float32 with.
        self.thresholds = torch.tensor([1e-3, 80.0, 0.0], dtype=torch.float32, device=self.device)

    def set_thresholds(self, min_depth: float, max_depth: float, min_confidence: float) -> None:
        """Change the masking thresholds (an in-place copy: a captured graph sees the new values)."""
        self.thresholds.copy_(torch.tensor([min_depth, max_depth, min_confidence], dtype=torch.float32))

    def __call__(self, depth: Tensor, confidence: Tensor | None = None, *,
                 depth_out: Tensor | None = None, confidence_out: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Resize and mask one frame.

        Args:
            depth: (h, w) or (1, 1, h, w) metres at network resolution (any float dtype).
            confidence: same shape, or None.
            depth_out, confidence_out: optional (H, W) float32 tensors to write into.

        Returns:
            depth (H, W) float32 metres, NaN invalid; confidence (H, W) float32 in [0, 1] or None.
        """
        planes = [depth.reshape(self.net_hw)]
        if confidence is not None:
            planes.append(confidence.reshape(self.net_hw))
        x = torch.stack(planes).to(torch.float32).unsqueeze(0)  # (1, k, h, w)
        if self.cam_hw != self.net_hw:
            x = F.interpolate(x, size=self.cam_hw, mode="bilinear", align_corners=True)
        d = x[0, 0]
        thr = self.thresholds
        # NaN compares False, so non-finite depth (and NaN confidence) end up invalid.
        valid = (d > thr[0]) & (d < thr[1])
        c = None
        if confidence is not None:
            c = x[0, 1].clamp(0.0, 1.0)
            valid &= c >= thr[2]
            if confidence_out is not None:
                c = confidence_out.copy_(c)
        nan = torch.full((), float("nan"), dtype=torch.float32, device=d.device)
        if depth_out is None:
            d = torch.where(valid, d, nan)
        else:
            d = torch.where(valid, d, nan, out=depth_out)
        return d, c


class CloudProjectorTorch:
    """Organised xyz + intensity points of depth images of one camera, as ``core.cloud.CloudProjector``.

    ``x = (u - cx) / fx * z``, ``y = (v - cy) / fy * z`` with the per-column/per-row factors computed in
    float64 and rounded to float32 once (as the numpy projector); depth NaN, inf or <= 0 gives a NaN
    point. ``decimation`` n keeps rows and columns 0, n, 2n, ...; ``max_range_m`` > 0 makes points
    farther than that from the optical centre NaN (range = z * |(x factor, y factor, 1)|, float32, as
    the numpy projector). The ``rgb`` colour option has no torch version (it needs the RGB frame).

    Args:
        width, height: image size in pixels; fx, fy, cx, cy: intrinsics in pixels.
        decimation: keep every n-th row and column.
        max_range_m: range limit in metres (0 = none).
        device: where the factors live.

    Attributes:
        height, width: size of the (decimated) organised cloud.
    """

    def __init__(self, width: int, height: int, fx: float, fy: float, cx: float, cy: float, *,
                 decimation: int = 1, max_range_m: float = 0.0, device: torch.device | str = "cpu") -> None:
        if width <= 0 or height <= 0 or not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise ValueError(f"bad camera: {width}x{height} fx={fx} fy={fy} cx={cx} cy={cy}")
        if int(decimation) != decimation or decimation < 1 or not math.isfinite(max_range_m) or max_range_m < 0:
            raise ValueError(f"need an integer decimation >= 1 and a finite max_range_m >= 0, got {decimation}, {max_range_m}")
        self.camera_hw = (int(height), int(width))
        self.decimation = int(decimation)
        self.max_range_m = float(max_range_m)
        self.device = torch.device(device)
        columns = np.arange(0, width, self.decimation)
        rows = np.arange(0, height, self.decimation)
        self.height, self.width = len(rows), len(columns)
        x = ((columns.astype(np.float64) - cx) / fx).astype(np.float32)
        y = ((rows.astype(np.float64) - cy) / fy).astype(np.float32)
        self._x = torch.from_numpy(x).to(self.device).view(1, self.width)
        self._y = torch.from_numpy(y).to(self.device).view(self.height, 1)
        self._ray_norm = None
        if self.max_range_m:
            self._ray_norm = torch.sqrt(1.0 + self._x ** 2 + self._y ** 2)

    @classmethod
    def from_camera(cls, camera, options=None, *, device: torch.device | str = "cpu") -> "CloudProjectorTorch":
        """From any object with ``width, height, fx, fy, cx, cy`` (``core.camera.PinholeCamera``) and
        optional ``core.cloud.CloudOptions`` (``decimation``, ``max_range_m``; ``rgb`` is refused).

        Raises:
            ValueError: ``options.rgb`` (colouring needs the RGB frame: use ``core.cloud``).
        """
        decimation, max_range = 1, 0.0
        if options is not None:
            if getattr(options, "rgb", False):
                raise ValueError("the torch cloud has no rgb field; colour clouds with core.cloud.CloudProjector")
            decimation, max_range = options.decimation, options.max_range_m
        return cls(camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy,
                   decimation=decimation, max_range_m=max_range, device=device)

    def pack(self, depth: Tensor, intensity: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """(H, W) metres -> (h, w, 4) float32 ``x, y, z, intensity`` (the PointCloud2 layout of
        ``core.cloud.pack_xyzi``; its bytes are the message data on a little-endian host).

        Args:
            depth: (H, W) float32 metres at the camera's full size.
            intensity: (H, W) per-point value, or None for 0.
            out: optional (h, w, 4) float32 tensor to write into (h, w: the decimated size).
        """
        if tuple(depth.shape) != self.camera_hw:
            raise ValueError(f"depth shape {tuple(depth.shape)} != camera {self.camera_hw}")
        n = self.decimation
        z = depth.to(torch.float32)
        if n > 1:
            z = z[::n, ::n]
        bad = (z <= 0) | torch.isinf(z)
        if self._ray_norm is not None:
            bad |= z * self._ray_norm > self.max_range_m
        z = torch.where(bad, torch.full((), float("nan"), dtype=torch.float32, device=z.device), z)
        if intensity is None:
            inten = torch.zeros_like(z)
        else:
            inten = intensity.to(torch.float32)
            if n > 1:
                inten = inten[::n, ::n]
        return torch.stack((z * self._x, z * self._y, z, inten), dim=-1, out=out)

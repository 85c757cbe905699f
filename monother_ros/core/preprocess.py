"""Image preprocessing and depth postprocessing shared by every engine (numpy) and training (torch).

MonoTher-Depth's thermal pipeline (reference ``MS2Dataset.rawthermal_autoScale`` then the model's
``PrepForMidas``), reproduced here:

1. 16-bit counts / 65535 (8-bit: / 255) -> [0, 1];
2. per frame, the 2nd and 98th percentiles ``lo``, ``hi`` of that [0, 1] image (``np.percentile``,
   linear interpolation between order statistics) and ``clip((x - lo) / (hi - lo), 0, 1)``; the
   reference divides by zero on a frame with hi == lo (NaN image); here the divisor is at least one
   count (1/65535), which turns such a frame into a step (0 at lo and below, 1 above);
3. the 1-channel image copied into 3 channels;
4. bilinear resize with ``align_corners=True`` to the network size (multiples of 14, rule below);
5. ``(x - 0.45) / 0.225`` per channel (RGB: ImageNet mean/std on RGB / 255).

The percentiles of integer images come from a histogram of the counts (bincount + cumulative sum),
which gives the same order statistics as a sort; the per-pixel work is then a 65536-entry lookup
table that folds steps 1, 2 and 5 together (bilinear weights sum to one, so normalising before or
after the resize gives the same numbers up to float rounding).

Network size (reference ``Resize`` with ``resize_method="minimal"``, ``keep_aspect_ratio``,
``ensure_multiple_of=14``): each side is ``round(side * scale / 14) * 14`` with numpy's
round-half-to-even; when the target size is the input size (MonoTher's MS2 configuration
``img_size = [256, 640]``) the scale is 1, so 640x256 -> 644x252 and 640x512 -> 644x518.
"""
from __future__ import annotations

import logging
from typing import Literal, Sequence

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside the training-path functions: ONNX-Runtime-only installs lack it
    import torch

__all__ = [
    "PATCH_SIZE",
    "THERMAL_MEAN",
    "THERMAL_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOW_PERCENTILE",
    "HIGH_PERCENTILE",
    "constrain_to_multiple",
    "network_input_size",
    "integer_percentiles",
    "thermal_percentile_bounds",
    "thermal_to_unit",
    "BilinearResizer",
    "resize_bilinear_np",
    "ThermalPreprocessor",
    "RgbPreprocessor",
    "preprocess_thermal",
    "preprocess_rgb",
    "thermal_to_unit_torch",
    "to_network_input_torch",
    "resize_depth",
    "mask_depth",
    "DepthPostprocessor",
    "postprocess_depth",
]

_logger = logging.getLogger(__name__)

PATCH_SIZE = 14
THERMAL_MEAN = 0.45
THERMAL_STD = 0.225
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
LOW_PERCENTILE = 2.0
HIGH_PERCENTILE = 98.0

ResizeMethod = Literal["minimal", "lower_bound", "upper_bound"]


# --------------------------------------------------------------------------- network input size


def constrain_to_multiple(x: float, multiple: int = PATCH_SIZE, *, min_val: int = 0, max_val: int | None = None) -> int:
    """Nearest multiple of ``multiple`` (numpy round-half-to-even), floored when above ``max_val``,
    ceiled when below ``min_val`` (reference ``Resize.constrain_to_multiple_of``)."""
    y = int(np.round(x / multiple) * multiple)
    if max_val is not None and y > max_val:
        y = int(np.floor(x / multiple) * multiple)
    if y < min_val:
        y = int(np.ceil(x / multiple) * multiple)
    return y


def network_input_size(
    height: int,
    width: int,
    *,
    target_hw: tuple[int, int] | None = None,
    multiple: int = PATCH_SIZE,
    keep_aspect_ratio: bool = True,
    resize_method: ResizeMethod = "minimal",
) -> tuple[int, int]:
    """Network input size (h, w) for an image of ``height`` x ``width`` (reference ``Resize.get_size``).

    Args:
        height, width: input image size in pixels.
        target_hw: the configured ``img_size`` (h, w); ``None`` means the input size itself
            (scale 1, the MonoTher MS2 set-up), giving the nearest multiples of ``multiple``.
        multiple: patch size (14).
        keep_aspect_ratio: use one scale for both sides, chosen by ``resize_method``.
        resize_method: ``minimal`` (scale closest to 1), ``lower_bound`` (at least the target),
            ``upper_bound`` (at most the target).

    Returns:
        (h, w), both multiples of ``multiple``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    th, tw = (height, width) if target_hw is None else target_hw
    scale_h = th / height
    scale_w = tw / width
    if keep_aspect_ratio:
        if resize_method == "lower_bound":
            scale_h = scale_w = max(scale_h, scale_w)
        elif resize_method == "upper_bound":
            scale_h = scale_w = min(scale_h, scale_w)
        elif resize_method == "minimal":
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
        else:
            raise ValueError(f"unknown resize_method {resize_method!r}")
    if resize_method == "lower_bound":
        h = constrain_to_multiple(scale_h * height, multiple, min_val=th)
        w = constrain_to_multiple(scale_w * width, multiple, min_val=tw)
    elif resize_method == "upper_bound":
        h = constrain_to_multiple(scale_h * height, multiple, max_val=th)
        w = constrain_to_multiple(scale_w * width, multiple, max_val=tw)
    elif resize_method == "minimal":
        h = constrain_to_multiple(scale_h * height, multiple)
        w = constrain_to_multiple(scale_w * width, multiple)
    else:
        raise ValueError(f"unknown resize_method {resize_method!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"network size for {height}x{width} would be {h}x{w}")
    return h, w


# --------------------------------------------------------------------------- percentiles


def _bits_of(image: np.ndarray) -> int:
    if image.dtype == np.uint16:
        return 16
    if image.dtype == np.uint8:
        return 8
    raise ValueError(f"expected a uint16 (mono16) or uint8 (mono8) image, got {image.dtype}")


def integer_percentiles(image: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Percentiles of a uint8/uint16 image, equal to ``np.percentile(image, qs)`` (linear method).

    Uses a histogram of the counts instead of sorting: O(pixels + 2^bits).

    Args:
        image: uint8 or uint16 array, any shape (non-empty).
        qs: percentiles in [0, 100].

    Returns:
        (len(qs),) float64, in counts.
    """
    bits = _bits_of(image)
    n = image.size
    if n == 0:
        raise ValueError("empty image")
    cdf = np.cumsum(np.bincount(image.reshape(-1), minlength=1 << bits))
    q = np.asarray(qs, dtype=np.float64)
    if np.any((q < 0) | (q > 100)):
        raise ValueError(f"percentiles must be in [0, 100], got {qs}")
    pos = q / 100.0 * (n - 1)
    below = np.floor(pos)
    frac = pos - below
    above = np.minimum(below + 1, n - 1)
    # Value of the k-th order statistic (0-based): the first count whose cdf exceeds k.
    v_lo = np.searchsorted(cdf, below, side="right").astype(np.float64)
    v_hi = np.searchsorted(cdf, above, side="right").astype(np.float64)
    # numpy's lerp: a + (b - a) t, evaluated from the nearer end for t >= 0.5.
    diff = v_hi - v_lo
    return np.where(frac >= 0.5, v_hi - diff * (1.0 - frac), v_lo + diff * frac)


def thermal_percentile_bounds(
    image: np.ndarray, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE
) -> tuple[float, float]:
    """(lo, hi) of the frame on the [0, 1] scale (counts / (2^bits - 1)), as the reference computes them."""
    full = float((1 << _bits_of(image)) - 1)
    lo, hi = integer_percentiles(image, (low, high)) / full
    return float(lo), float(hi)


def _unit_lut(bits: int, lo: float, hi: float, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """(2^bits,) float32 table: ``(clip((c / full - lo) / (hi - lo), 0, 1) - mean) / std``."""
    full = float((1 << bits) - 1)
    span = max(hi - lo, 1.0 / full)  # guard: hi == lo on a constant (or nearly) frame
    n = 1 << bits
    if out is None:
        out = np.empty(n, dtype=np.float32)
    # Only counts within a count of [lo, lo + span] are off the clip limits; the rest of the table is
    # the two constants (a margin of one count keeps float64 rounding at the ends out of the question).
    start = min(max(int(np.floor(lo * full)) - 1, 0), n)
    stop = min(max(int(np.ceil((lo + span) * full)) + 2, start), n)
    # float64 for the ramp, then one rounding to float32.
    ramp = np.arange(start, stop, dtype=np.float64)
    ramp /= full
    ramp -= lo
    ramp /= span
    np.clip(ramp, 0.0, 1.0, out=ramp)
    ends = np.array([0.0, 1.0])
    if mean != 0.0 or std != 1.0:
        ramp -= mean
        ramp /= std
        ends -= mean
        ends /= std
    out[:start] = ends[0]
    out[start:stop] = ramp
    out[stop:] = ends[1]
    return out


def thermal_to_unit(image: np.ndarray, *, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE) -> np.ndarray:
    """The reference dataset step: counts -> [0, 1] clipped at the frame's ``low``/``high`` percentiles.

    Args:
        image: (H, W) uint16 (mono16) or uint8 (mono8).

    Returns:
        (H, W) float32 in [0, 1].
    """
    if image.ndim != 2:
        raise ValueError(f"thermal image must be (H, W), got {image.shape}")
    bits = _bits_of(image)
    lo, hi = thermal_percentile_bounds(image, low, high)
    return _unit_lut(bits, lo, hi, 0.0, 1.0)[image]


# --------------------------------------------------------------------------- resizing (numpy)


# Relative per-element costs of one separable step (two gathers + three in-place ufuncs), measured with
# numpy 2.4 on float32: gathering along the last axis copies element by element, along the row axis it
# copies whole rows (~5x cheaper). Used only to pick the cheaper order; both give the same numbers up to
# float32 rounding.
_COST_COLUMN_STEP = 1.5
_COST_ROW_STEP = 0.66


def _axis_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of a 1-D ``align_corners=True`` bilinear resize, float32 like torch's CPU kernel."""
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0.0)
    src = scale * np.arange(n_out, dtype=np.float32)
    i0 = np.floor(src).astype(np.intp)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    return i0, i1, w0, w1


class BilinearResizer:
    """Separable bilinear resize of (..., H, W) float32 images with ``align_corners=True``.

    Matches ``F.interpolate(mode="bilinear", align_corners=True)`` to float32 rounding. Index and
    weight tables are computed once per (in, out) size, intermediate buffers once per leading shape
    (so a stacked (2, H, W) depth + confidence pair is resized in one pass). The axis done first is
    the one that makes the pass cheaper (columns first when upsampling, rows first when downsampling).

    Args:
        in_hw: input (H, W); out_hw: output (h, w).
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        if min(*in_hw, *out_hw) <= 0:
            raise ValueError(f"sizes must be positive: {in_hw} -> {out_hw}")
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        (H, W), (h, w) = self.in_hw, self.out_hw
        self._r0, self._r1, rw0, rw1 = _axis_taps(H, h)
        self._c0, self._c1, cw0, cw1 = _axis_taps(W, w)
        self._rw0, self._rw1 = rw0[:, None], rw1[:, None]
        self._cw0, self._cw1 = cw0, cw1
        cols_first = _COST_COLUMN_STEP * H * w + _COST_ROW_STEP * h * w
        rows_first = _COST_ROW_STEP * h * W + _COST_COLUMN_STEP * h * w
        self.columns_first = cols_first <= rows_first
        self._mid_hw = (H, w) if self.columns_first else (h, W)
        self._buffers: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _scratch(self, lead: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bufs = self._buffers.get(lead)
        if bufs is None:
            bufs = (np.empty((*lead, *self._mid_hw), np.float32), np.empty((*lead, *self._mid_hw), np.float32),
                    np.empty((*lead, *self.out_hw), np.float32))
            self._buffers[lead] = bufs
        return bufs

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Resize (..., H, W) (any real dtype); writes into ``out`` (..., h, w) float32 when given.

        ``out`` must not overlap ``image``. Reusing one ``out`` across calls is markedly faster than a
        fresh array (no new pages to fault in).
        """
        if image.shape[-2:] != self.in_hw:
            raise ValueError(f"image shape {image.shape} != resizer input (..., {self.in_hw[0]}, {self.in_hw[1]})")
        lead = tuple(image.shape[:-2])
        if out is None:
            out = np.empty((*lead, *self.out_hw), np.float32)
        elif out.shape != (*lead, *self.out_hw) or out.dtype != np.float32:
            raise ValueError(f"out must be {(*lead, *self.out_hw)} float32, got {out.shape} {out.dtype}")
        if image.dtype != np.float32:
            image = image.astype(np.float32)
        a, b, tmp = self._scratch(lead)
        # mode="clip": the indices are in range by construction, and numpy's default mode="raise"
        # copies through a temporary buffer whenever out= is given (several times slower).
        if self.columns_first:
            self._columns(image, a, b)
            self._rows(a, out, tmp)
        else:
            self._rows(image, a, b)
            self._columns(a, out, tmp)
        return out

    def _columns(self, src: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
        np.take(src, self._c0, axis=-1, out=out, mode="clip")
        np.take(src, self._c1, axis=-1, out=tmp, mode="clip")
        np.multiply(out, self._cw0, out=out)
        np.multiply(tmp, self._cw1, out=tmp)
        np.add(out, tmp, out=out)

    def _rows_range(self, src: np.ndarray, start: int, stop: int, out: np.ndarray, tmp: np.ndarray) -> None:
        """Output rows ``start:stop`` of the row pass over a (H, w) ``src`` into (stop - start, w) ``out``."""
        np.take(src, self._r0[start:stop], axis=0, out=out, mode="clip")
        np.take(src, self._r1[start:stop], axis=0, out=tmp, mode="clip")
        np.multiply(out, self._rw0[start:stop], out=out)
        np.multiply(tmp, self._rw1[start:stop], out=tmp)
        np.add(out, tmp, out=out)

    def _rows(self, src: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
        np.take(src, self._r0, axis=-2, out=out, mode="clip")
        np.take(src, self._r1, axis=-2, out=tmp, mode="clip")
        np.multiply(out, self._rw0, out=out)
        np.multiply(tmp, self._rw1, out=tmp)
        np.add(out, tmp, out=out)


def resize_bilinear_np(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear ``align_corners=True`` resize of (H, W) or (H, W, C) to ``out_hw``; float32 result."""
    if image.ndim == 2:
        return BilinearResizer(image.shape, out_hw)(image)
    if image.ndim == 3:
        planes = np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)  # (C, H, W)
        return np.moveaxis(BilinearResizer(image.shape[:2], out_hw)(planes), 0, -1).copy()
    raise ValueError(f"expected (H, W) or (H, W, C), got {image.shape}")


# --------------------------------------------------------------------------- engine preprocessors


class ThermalPreprocessor:
    """mono16/mono8 thermal frame -> (1, 3, h, w) float32 network input, with preallocated buffers.

    Args:
        in_hw: camera image (H, W).
        out_hw: network input (h, w); ``None`` picks :func:`network_input_size` of ``in_hw``.
        low, high: clip percentiles.
        mean, std: normalisation after the [0, 1] scaling (MonoTher: 0.45 / 0.225).

    The returned array is an internal buffer reused by the next call: copy it to keep it.
    """

    def __init__(
        self,
        in_hw: tuple[int, int],
        out_hw: tuple[int, int] | None = None,
        *,
        low: float = LOW_PERCENTILE,
        high: float = HIGH_PERCENTILE,
        mean: float = THERMAL_MEAN,
        std: float = THERMAL_STD,
    ) -> None:
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {low}, {high}")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.in_hw = tuple(in_hw)
        self.out_hw = tuple(out_hw) if out_hw is not None else network_input_size(*in_hw)
        self.low, self.high, self.mean, self.std = low, high, mean, std
        self._resize = BilinearResizer(self.in_hw, self.out_hw)
        self._luts = {8: np.empty(1 << 8, np.float32), 16: np.empty(1 << 16, np.float32)}
        self._mapped = np.empty(self.in_hw if self._resize.columns_first else (0, 0), np.float32)
        # Rows-first resize: the two source rows of each output row as raw counts, per input bit depth.
        rows_hw = (2, self.out_hw[0], self.in_hw[1]) if not self._resize.columns_first else (2, 0, 0)
        self._rows_raw = {8: np.empty(rows_hw, np.uint8), 16: np.empty(rows_hw, np.uint16)}
        self.output = np.empty((1, 3, *self.out_hw), np.float32)
        self.last_bounds: tuple[float, float] = (0.0, 1.0)

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Preprocess one (H, W) uint16 or uint8 frame.

        Args:
            image: (H, W) uint16 or uint8, H, W = ``in_hw``.
            out: optional (1, 3, h, w) float32 C-contiguous array to write into (e.g. an engine's bound
                input); default ``self.output``.

        Returns:
            ``out`` (or ``self.output``), (1, 3, h, w) float32.
        """
        if image.shape != self.in_hw:
            raise ValueError(f"thermal image shape {image.shape} != configured {self.in_hw}")
        if out is None:
            out = self.output
        elif out.shape != self.output.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {self.output.shape} float32 array, got {out.shape} {out.dtype}")
        bits = _bits_of(image)
        lo, hi = thermal_percentile_bounds(image, self.low, self.high)
        self.last_bounds = (lo, hi)
        lut = _unit_lut(bits, lo, hi, self.mean, self.std, out=self._luts[bits])
        r = self._resize
        if r.columns_first:
            np.take(lut, image, out=self._mapped, mode="clip")  # counts < 2^bits: always in range
            r(self._mapped, out=out[0, 0])
        else:
            # Shrinking rows: gather the two source rows of every output row as raw counts first and
            # look up only those (fewer lookups, half the bytes moved), then the usual weighted sum.
            a, b, tmp = r._scratch(())
            raw = self._rows_raw[bits]
            np.take(image, r._r0, axis=0, out=raw[0], mode="clip")
            np.take(image, r._r1, axis=0, out=raw[1], mode="clip")
            np.take(lut, raw[0], out=a, mode="clip")
            np.take(lut, raw[1], out=b, mode="clip")
            np.multiply(a, r._rw0, out=a)
            np.multiply(b, r._rw1, out=b)
            np.add(a, b, out=a)
            r._columns(a, out[0, 0], tmp)
        out[0, 1:] = out[0, 0]  # the thermal image replicated into 3 channels, one broadcast copy
        return out


class RgbPreprocessor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32: /255, resize (align_corners), ImageNet mean/std.

    The returned array is an internal buffer reused by the next call.
    """

    def __init__(
        self,
        in_hw: tuple[int, int],
        out_hw: tuple[int, int] | None = None,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.in_hw = tuple(in_hw)
        self.out_hw = tuple(out_hw) if out_hw is not None else network_input_size(*in_hw)
        self._resize = BilinearResizer(self.in_hw, self.out_hw)
        levels = np.arange(256, dtype=np.float64) / 255.0
        self._luts = [((levels - m) / s).astype(np.float32) for m, s in zip(mean, std)]
        self._mapped = np.empty(self.in_hw, np.float32)
        self.output = np.empty((1, 3, *self.out_hw), np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Preprocess one (H, W, 3) uint8 RGB frame (channel order R, G, B)."""
        if image.shape != (*self.in_hw, 3) or image.dtype != np.uint8:
            h, w = self.in_hw
            raise ValueError(f"expected ({h}, {w}, 3) uint8 RGB, got {image.shape} {image.dtype}")
        for c in range(3):
            np.take(self._luts[c], image[..., c], out=self._mapped, mode="clip")
            self._resize(self._mapped, out=self.output[0, c])
        return self.output


def preprocess_thermal(image: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """One-off :class:`ThermalPreprocessor` call returning a fresh (1, 3, h, w) float32 array."""
    return ThermalPreprocessor(image.shape, out_hw)(image).copy()


def preprocess_rgb(image: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """One-off :class:`RgbPreprocessor` call returning a fresh (1, 3, h, w) float32 array."""
    return RgbPreprocessor(image.shape[:2], out_hw)(image).copy()


# --------------------------------------------------------------------------- torch path (training)


def thermal_to_unit_torch(
    images: torch.Tensor, *, bits: int = 16, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE
) -> torch.Tensor:
    """Batched :func:`thermal_to_unit`: integer counts (B, H, W) -> (B, 1, H, W) float32 in [0, 1].

    Per-image percentiles from one batched histogram (same numbers as the numpy path).

    Args:
        images: (B, H, W) or (H, W) integer tensor of counts in [0, 2^bits - 1].
        bits: 16 (mono16) or 8 (mono8).
    """
    import torch

    if images.dim() == 2:
        images = images.unsqueeze(0)
    if images.dim() != 3 or images.dtype.is_floating_point:
        raise ValueError(f"expected (B, H, W) integer counts, got {tuple(images.shape)} {images.dtype}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    b, h, w = images.shape
    levels = 1 << bits
    n = h * w
    idx = images.reshape(b, n).to(torch.int64)
    offset = torch.arange(b, device=idx.device).unsqueeze(1) * levels
    counts = torch.bincount((idx + offset).reshape(-1), minlength=b * levels).reshape(b, levels)
    cdf = counts.cumsum(dim=1)
    q = torch.tensor([low, high], dtype=torch.float64, device=idx.device)
    pos = q / 100.0 * (n - 1)
    below = torch.floor(pos)
    frac = pos - below
    above = torch.clamp(below + 1, max=n - 1)
    ranks = torch.cat((below, above)).to(torch.int64).unsqueeze(0).expand(b, -1).contiguous()  # (B, 4)
    # Value of the k-th order statistic: the first count whose cdf exceeds k.
    v = torch.searchsorted(cdf, ranks, right=True).to(torch.float64)
    v_lo, v_hi = v[:, :2], v[:, 2:]
    diff = v_hi - v_lo
    vals = torch.where(frac >= 0.5, v_hi - diff * (1.0 - frac), v_lo + diff * frac)  # (B, 2)
    full = float(levels - 1)
    lo = (vals[:, 0] / full).view(b, 1, 1, 1)
    hi = (vals[:, 1] / full).view(b, 1, 1, 1)
    span = torch.clamp(hi - lo, min=1.0 / full)
    x = images.reshape(b, 1, h, w).to(torch.float64) / full
    return ((x - lo) / span).clamp_(0.0, 1.0).to(torch.float32)


def to_network_input_torch(
    images: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
    *,
    modality: Literal["thermal", "rgb"] = "thermal",
) -> torch.Tensor:
    """The model-side step (reference ``PrepForMidas``): [0, 1] images -> resized, normalised input.

    Args:
        images: (B, 1, H, W) thermal or (B, 3, H, W) float in [0, 1].
        out_hw: network size; ``None`` picks :func:`network_input_size`.
        modality: ``thermal`` (0.45 / 0.225, 1 channel copied to 3) or ``rgb`` (ImageNet).

    Returns:
        (B, 3, h, w) float32.
    """
    import torch
    import torch.nn.functional as F

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 1|3, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if out_hw is None:
        out_hw = network_input_size(h, w)
    x = images.to(torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(out_hw) != (h, w):
        x = F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=True)
    if modality == "thermal":
        mean = torch.full((3,), THERMAL_MEAN)
        std = torch.full((3,), THERMAL_STD)
    elif modality == "rgb":
        mean = torch.tensor(IMAGENET_MEAN)
        std = torch.tensor(IMAGENET_STD)
    else:
        raise ValueError(f"unknown modality {modality!r}")
    mean = mean.to(x.device).view(1, 3, 1, 1)
    std = std.to(x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------- postprocessing


def resize_depth(depth: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Network-resolution depth (h, w) -> camera resolution, bilinear ``align_corners=True`` (float32).

    Same interpolation the reference uses to compare predictions with ground truth.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be (h, w), got {depth.shape}")
    if tuple(depth.shape) == tuple(out_hw):
        return depth.astype(np.float32, copy=True)
    return BilinearResizer(depth.shape, out_hw)(depth.astype(np.float32, copy=False))


def mask_depth(
    depth: np.ndarray,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> np.ndarray:
    """Set NaN (in place on a float32 copy) where depth is non-finite, <= ``min_depth``,
    >= ``max_depth`` or the confidence is below ``min_confidence``.

    Args:
        depth: (H, W) metres. confidence: (H, W) in [0, 1] or None.

    Returns:
        (H, W) float32 with NaN for invalid (REP 118).
    """
    out = np.array(depth, dtype=np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        bad = ~((out > min_depth) & (out < max_depth))
        if confidence is not None:
            if confidence.shape != out.shape:
                raise ValueError(f"confidence shape {confidence.shape} != depth shape {out.shape}")
            bad |= ~(confidence >= min_confidence)
    out[bad] = np.nan
    return out


class DepthPostprocessor:
    """Network-resolution depth (+ confidence) -> camera-resolution outputs, with reused buffers.

    Depth and confidence are stacked and their columns resized in one pass (shared index/weight
    tables); the rows are then interpolated in blocks of ``block_rows`` camera rows straight into the
    returned arrays, and each block is clipped (confidence to [0, 1]) and masked (depth NaN where it is
    not finite, outside ``(min_depth, max_depth)`` or the confidence is below ``min_confidence``, as
    :func:`mask_depth`) while it is still in cache: on a 640x512 camera the unblocked version streams
    several 2.6 MB temporaries through memory after the network has evicted the caches.

    Numbers are those of :class:`BilinearResizer` with the columns resized first (``F.interpolate``
    with ``align_corners=True`` to float32 rounding) followed by :func:`mask_depth`.

    Args:
        net_hw: network output (h, w); cam_hw: camera (H, W).
        block_rows: camera rows per block (128 rows of a 640-wide image: 320 KB per plane).
    """

    def __init__(self, net_hw: tuple[int, int], cam_hw: tuple[int, int], *, block_rows: int = 128) -> None:
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.net_hw = (int(net_hw[0]), int(net_hw[1]))
        self.cam_hw = (int(cam_hw[0]), int(cam_hw[1]))
        self.block_rows = int(block_rows)
        # Only the resizer's tables and its column pass are used; the row pass is done here per block.
        self._resize = BilinearResizer(self.net_hw, self.cam_hw)
        (h, _), (_, w) = self.net_hw, self.cam_hw
        self._net = np.empty((2, *self.net_hw), np.float32)
        self._cols = np.empty((2, h, w), np.float32)
        self._cols_tmp = np.empty((2, h, w), np.float32)
        b = min(self.block_rows, self.cam_hw[0])
        self._tmp = np.empty((b, w), np.float32)
        self._valid = np.empty((b, w), bool)
        self._test = np.empty((b, w), bool)

    def __call__(
        self,
        depth: np.ndarray,
        confidence: np.ndarray | None = None,
        *,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
        min_confidence: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Resize and mask one frame.

        Args:
            depth: (h, w) metres at network resolution; confidence: (h, w) or None.

        Returns:
            depth (H, W) float32 metres with NaN for invalid; confidence (H, W) float32 in [0, 1] or
            None. Both are new arrays owned by the caller.
        """
        if depth.shape != self.net_hw:
            raise ValueError(f"depth shape {depth.shape} != postprocessor input {self.net_hw}")
        k = 1
        self._net[0] = depth
        if confidence is not None:
            if confidence.shape != self.net_hw:
                raise ValueError(f"confidence shape {confidence.shape} != depth shape {self.net_hw}")
            self._net[1] = confidence
            k = 2
        r = self._resize
        cols = self._cols[:k]
        r._columns(self._net[:k], cols, self._cols_tmp[:k])
        depth_out = np.empty(self.cam_hw, np.float32)
        conf_out = np.empty(self.cam_hw, np.float32) if k == 2 else None
        nan = np.float32(np.nan)
        for start in range(0, self.cam_hw[0], self.block_rows):
            stop = min(start + self.block_rows, self.cam_hw[0])
            n = stop - start
            tmp, valid, test = self._tmp[:n], self._valid[:n], self._test[:n]
            d = depth_out[start:stop]
            r._rows_range(cols[0], start, stop, d, tmp)
            # NaN compares False, so non-finite depth (and NaN confidence) end up invalid.
            np.greater(d, min_depth, out=valid)
            np.less(d, max_depth, out=test)
            np.logical_and(valid, test, out=valid)
            if conf_out is not None:
                c = conf_out[start:stop]
                r._rows_range(cols[1], start, stop, c, tmp)
                np.clip(c, 0.0, 1.0, out=c)
                np.greater_equal(c, min_confidence, out=test)
                np.logical_and(valid, test, out=valid)
            np.logical_not(valid, out=valid)
            np.copyto(d, nan, where=valid)
        return depth_out, conf_out


def postprocess_depth(
    depth: np.ndarray,
    out_hw: tuple[int, int],
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Engine output -> camera-resolution depth with NaN for invalid, and the resized confidence.

    One-off :class:`DepthPostprocessor` call (use the class for a stream of frames).

    Args:
        depth: (h, w) metres at network resolution; confidence: (h, w) or None.
        out_hw: camera (H, W).

    Returns:
        depth (H, W) float32 metres with NaN; confidence (H, W) float32 in [0, 1] or None.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be (h, w), got {depth.shape}")
    post = DepthPostprocessor(depth.shape, out_hw)
    return post(depth, confidence, min_depth=min_depth, max_depth=max_depth, min_confidence=min_confidence)

"""Is there a scene in this thermal frame? Blind, saturated and frozen frames, detected with numpy only.

Thermal cameras regularly deliver frames that carry no scene: the flat-field-correction shutter closes
every few minutes on most microbolometers (a uniform frame, and many drivers repeat the last frame while
it is closed), a lens cap, a dead or saturated sensor, a frozen driver repeating one frame. A depth
network still answers such a frame with a full, confident-looking depth map. :class:`FrameHealthChecker`
flags them so that callers publish **no depth** for them (see the depth node: a missing message makes
consumers' staleness checks fire, whereas an all-NaN image would read as "nothing there" and some
consumers, e.g. depth-to-laserscan converters, turn NaN into max range and clear obstacles).

Checks, in order (each off when its threshold is 0):

* ``saturated``: the fraction of pixels at the encoding's extreme values (0 or full scale) exceeds
  ``max_saturated_fraction``;
* ``low_contrast``: the robust spread (99th minus 1st percentile, on a strided sample of the frame) is
  below ``min_spread_16bit`` counts (16-bit frames) or ``min_spread_8bit`` levels (8-bit frames). The
  percentiles ignore isolated hot or dead pixels, so a uniform frame with one hot pixel is still blind.
  Simulated day/night/fog frames spread 330-2100 counts; a closed shutter spreads a few counts of noise;
  Limitation: a driver's automatic gain control (8-bit AGC output) stretches even a closed shutter's
  noise to full contrast, so this check sees such frames only when the gain is capped; 16-bit raw output
  keeps the real contrast;
* ``frozen``: the frame is byte-identical to the previous one for ``max_identical_frames`` frames in a
  row (sensor noise makes two real frames differ).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["FrameHealthConfig", "FrameVerdict", "FrameHealthChecker"]

_SAMPLE_STRIDE = 4  # every 4th row and column: ~20k pixels of a 640x512 frame, < 1 ms of percentiles


@dataclass(frozen=True)
class FrameHealthConfig:
    """Thresholds of :class:`FrameHealthChecker` (0 turns a check off).

    Attributes:
        min_spread_16bit: least 1st-99th percentile spread of a 16-bit frame, counts.
        min_spread_8bit: least 1st-99th percentile spread of an 8-bit frame, grey levels.
        max_saturated_fraction: largest fraction of pixels at 0 or full scale, in [0, 1].
        max_identical_frames: identical consecutive frames tolerated before the stream counts as frozen.
    """

    min_spread_16bit: int = 32
    min_spread_8bit: int = 3
    max_saturated_fraction: float = 0.5
    max_identical_frames: int = 10

    def __post_init__(self) -> None:
        if self.min_spread_16bit < 0 or self.min_spread_8bit < 0 or self.max_identical_frames < 0:
            raise ValueError("frame health thresholds must be >= 0")
        if not 0.0 <= self.max_saturated_fraction <= 1.0:
            raise ValueError(f"max_saturated_fraction must be in [0, 1], got {self.max_saturated_fraction}")


class FrameVerdict(NamedTuple):
    """Why a frame has no usable content: ``reason`` in (saturated, low_contrast, frozen), and a sentence."""

    reason: str
    message: str


class FrameHealthChecker:
    """Stateful check of a thermal stream (state: the previous frame, for ``frozen``).

    Args:
        config: thresholds.
    """

    def __init__(self, config: FrameHealthConfig = FrameHealthConfig()) -> None:
        self.config = config
        self._previous: Optional[np.ndarray] = None
        self._identical = 0

    def reset(self) -> None:
        """Forget the previous frame (after a stream restart or a clock jump)."""
        self._previous, self._identical = None, 0

    def check(self, image: np.ndarray) -> Optional[FrameVerdict]:
        """None when the frame carries a scene, else why not.

        Args:
            image: (H, W) uint8 or uint16 thermal frame.

        Raises:
            ValueError: not a 2-D uint8/uint16 array.
        """
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16) or image.size == 0:
            raise ValueError(f"expected a (H, W) uint8/uint16 frame, got {image.dtype} {image.shape}")
        frozen = self._track_repeats(image)
        cfg = self.config
        full_scale = 65535 if image.dtype == np.uint16 else 255
        sample = image[::_SAMPLE_STRIDE, ::_SAMPLE_STRIDE] if min(image.shape) >= 8 * _SAMPLE_STRIDE else image
        if cfg.max_saturated_fraction > 0:
            saturated = float(np.count_nonzero((sample == 0) | (sample == full_scale))) / sample.size
            if saturated > cfg.max_saturated_fraction:
                return FrameVerdict("saturated", f"{saturated:.0%} of the pixels are at 0 or full scale ({full_scale}) "
                                                 f"(limit {cfg.max_saturated_fraction:.0%}): saturated or dead sensor")
        min_spread = cfg.min_spread_16bit if image.dtype == np.uint16 else cfg.min_spread_8bit
        if min_spread > 0:
            low, high = np.percentile(sample, (1.0, 99.0))
            spread = float(high - low)
            if spread < min_spread:
                return FrameVerdict("low_contrast", f"the frame is nearly uniform: 1-99 % spread {spread:.0f} < "
                                                    f"{min_spread} {'counts' if full_scale > 255 else 'levels'} "
                                                    "(closed shutter / flat-field correction, lens cap, dead sensor)")
        if frozen:
            return FrameVerdict("frozen", f"{self._identical + 1} identical frames in a row (limit "
                                          f"{cfg.max_identical_frames}): the driver repeats one frame")
        return None

    def _track_repeats(self, image: np.ndarray) -> bool:
        limit = self.config.max_identical_frames
        if limit <= 0:
            return False
        previous = self._previous
        if previous is not None and previous.shape == image.shape and previous.dtype == image.dtype \
                and np.array_equal(previous, image):
            self._identical += 1
        else:
            self._identical = 0
            self._previous = np.array(image, copy=True)
        return self._identical >= limit

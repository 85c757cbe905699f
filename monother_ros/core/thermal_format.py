"""Thermal frames as drivers send them -> the (H, W) uint8/uint16 intensities the network needs. No ROS.

* ``mono16``/``16UC1``/``mono8``/``8UC1``: used as they are.
* ``rgb8``/``bgr8`` (some drivers send grey as colour): accepted only when the three channels are equal;
  a colour-mapped (false-colour palette) image has lost the intensities and is refused with the driver
  setting to change (:data:`RAW_OUTPUT_HINT`).
* :func:`crop_frame`: rows/columns to drop (e.g. the 2 telemetry rows at the bottom of a FLIR Boson
  640x514 raw frame), applied before everything else; :func:`crop_intrinsics` moves the principal point
  the same way.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from monother_ros.core.image_codec import ImageDecodeError

__all__ = ["THERMAL_ENCODINGS", "GREY_AS_COLOUR_ENCODINGS", "RAW_OUTPUT_HINT", "Crop", "thermal_intensities",
           "crop_frame", "crop_intrinsics"]

THERMAL_ENCODINGS = ("mono16", "16UC1", "mono8", "8UC1")
GREY_AS_COLOUR_ENCODINGS = ("rgb8", "bgr8")
RAW_OUTPUT_HINT = ("set the driver to raw grey output (FLIR Boson/Lepton: video mode Y16 / raw16, no colour "
                   "palette; Optris: use the thermal_image topic (mono16), not thermal_image_view; "
                   "Spinnaker/Teledyne: PixelFormat Mono16)")


def thermal_intensities(image: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W) intensities of a decoded thermal image.

    Args:
        image: (H, W) uint8/uint16 for the mono encodings, (H, W, 3) uint8 for rgb8/bgr8.
        encoding: its encoding.

    Returns:
        (H, W) uint8/uint16: the image itself, or one channel of a grey-as-colour image (a view).

    Raises:
        ImageDecodeError: ``colour_mapped`` (channels differ) or ``bad_encoding`` (anything else).
    """
    if encoding in THERMAL_ENCODINGS:
        return image
    if encoding in GREY_AS_COLOUR_ENCODINGS and image.ndim == 3 and image.shape[2] == 3:
        first = image[..., 0]
        if np.array_equal(first, image[..., 1]) and np.array_equal(first, image[..., 2]):
            return first
        raise ImageDecodeError("colour_mapped", f"thermal image is colour-mapped ({encoding} with different "
                                                f"channels): the raw intensities are lost; {RAW_OUTPUT_HINT}")
    raise ImageDecodeError("bad_encoding", f"thermal image encoding {encoding!r} is not one of "
                                           f"{', '.join(THERMAL_ENCODINGS + GREY_AS_COLOUR_ENCODINGS)} "
                                           "(rgb8/bgr8 only as grey)")


class Crop(NamedTuple):
    """Pixels to drop from each side."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Crop":
        """From ``[top, bottom, left, right]`` (the ``thermal.crop`` parameter).

        Raises:
            ValueError: not four values >= 0.
        """
        values = list(values)
        if len(values) != 4 or any(int(v) != v or v < 0 for v in values):
            raise ValueError(f"crop must be four integers >= 0 [top, bottom, left, right], got {values}")
        return cls(*(int(v) for v in values))

    @property
    def empty(self) -> bool:
        return not any(self)


def crop_frame(image: np.ndarray, crop: Crop) -> np.ndarray:
    """View of ``image`` (H, W[, C]) without the cropped rows/columns.

    Raises:
        ImageDecodeError: ``crop_too_large`` when fewer than 2x2 pixels would remain.
    """
    if crop.empty:
        return image
    h, w = image.shape[:2]
    if h - crop.top - crop.bottom < 2 or w - crop.left - crop.right < 2:
        raise ImageDecodeError("crop_too_large", f"crop {list(crop)} [top, bottom, left, right] leaves less than "
                                                 f"2x2 pixels of a {w}x{h} image")
    return image[crop.top:h - crop.bottom, crop.left:w - crop.right]


def crop_intrinsics(K: Sequence[float], P: Sequence[float], crop: Crop) -> tuple[list[float], list[float]]:
    """K (9 values) and P (12 values) of the cropped image: the principal point moves by (left, top).

    The focal lengths and P's translation column are unchanged (a crop is a pure pixel shift).
    """
    k, p = [float(v) for v in K], [float(v) for v in P]
    if len(k) == 9:
        k[2] -= crop.left
        k[5] -= crop.top
    if len(p) == 12:
        p[2] -= crop.left
        p[6] -= crop.top
    return k, p

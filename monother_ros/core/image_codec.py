"""sensor_msgs/Image payload <-> numpy, with no ROS dependency.

The one pure decoder shared by every layer that sees Image fields: the bag reader (rosbags messages,
``eval/``) and the rclpy conversion layer (``ros/convert.py`` can delegate to it). Callers hand over the
Image fields (data, height, width, step, encoding, is_bigendian) and get an array back.

Decoding honours ``step`` (rows may be padded past ``width * bytes per pixel``) and byte order, and
returns a zero-copy view of ``data`` (read-only when ``data`` is ``bytes``) except when big-endian data
must be swapped into native order.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from monother_ros.errors import MonotherError

# encoding -> (element dtype, channels). Names follow sensor_msgs/image_encodings.hpp; depth per REP 118.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "8UC3": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
}
DEFAULT_MAX_DIMENSION = 16384
_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


class ImageDecodeError(MonotherError, ValueError):
    """An Image payload cannot be decoded; ``reason`` is a short machine-friendly key.

    Reasons: ``unknown_encoding``, ``zero_size``, ``too_large``, ``step_too_small``, ``step_misaligned``,
    ``data_too_short``, ``wrong_shape``, ``wrong_dtype``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EncodedImage(NamedTuple):
    """The sensor_msgs/Image fields describing a payload (``data`` contiguous, little-endian)."""

    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: bytes


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """(element dtype, channels) of a supported encoding.

    Raises:
        ImageDecodeError: reason ``unknown_encoding``.
    """
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageDecodeError(
            "unknown_encoding", f"unknown image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})"
        ) from None


def decode_image_buffer(
    data,
    *,
    height: int,
    width: int,
    step: int,
    encoding: str,
    is_bigendian: bool | int = False,
    max_dimension: int = DEFAULT_MAX_DIMENSION,
    native: bool = True,
) -> np.ndarray:
    """Numpy view of an image held in a raw buffer (the fields of a ``sensor_msgs/Image``).

    Args:
        data: any buffer-protocol object (bytes, ``array.array('B')``, memoryview, uint8 ndarray).
        height, width: image size in pixels.
        step: bytes per row including padding (>= width * bytes per pixel).
        encoding: one of ``ENCODINGS``.
        is_bigendian: byte order of multi-byte elements in ``data``.
        max_dimension: largest accepted width or height (guards against hostile sizes).
        native: swap big-endian data into native order (a copy); else return a ``>``-dtype view.

    Returns:
        (H, W) for one channel or (H, W, C), element dtype from the encoding; channel order is the
        encoding's (bgr8 stays BGR, see ``to_rgb``). Extra bytes after ``height * step`` are ignored.

    Raises:
        ImageDecodeError: with ``reason`` set, for every malformed case.
    """
    dtype, channels = encoding_info(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError("zero_size", f"image has zero size: {width}x{height}")
    if height > max_dimension or width > max_dimension:
        raise ImageDecodeError("too_large", f"image {width}x{height} exceeds the largest accepted dimension {max_dimension}")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            "step_too_small", f"step {step} < width {width} x {channels * dtype.itemsize} bytes per pixel for {encoding}"
        )
    if step % dtype.itemsize:
        raise ImageDecodeError("step_misaligned", f"step {step} is not a multiple of the {dtype.itemsize}-byte {encoding} element")
    raw = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    needed = height * step
    if raw.size < needed:
        raise ImageDecodeError("data_too_short", f"data has {raw.size} bytes, height {height} x step {step} needs {needed}")
    big = bool(is_bigendian) and dtype.itemsize > 1
    stored = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    # (height, step) rows with the padding sliced off: the last axis stays contiguous, so .view()
    # reinterprets the bytes in place even when rows are padded.
    image = raw[:needed].reshape(height, step)[:, :row_bytes].view(stored)
    if channels > 1:
        image = image.reshape(height, width, channels)
    if native and dtype.itemsize > 1 and big != _NATIVE_BIG_ENDIAN:
        image = image.astype(dtype.newbyteorder("="))  # the only copying path
    return image


def to_rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) RGB view/copy of a decoded image (BGR reversed, alpha dropped, mono replicated)."""
    if encoding in ("bgr8", "bgra8"):
        return image[..., 2::-1]
    if encoding in ("rgb8", "8UC3", "rgba8"):
        return image[..., :3]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    raise ImageDecodeError("wrong_shape", f"cannot convert encoding {encoding!r} of shape {image.shape} to RGB")


def encode_image(image: np.ndarray, encoding: str) -> EncodedImage:
    """Image fields (little-endian, unpadded rows) for an array; the inverse of ``decode_image_buffer``.

    Raises:
        ImageDecodeError: reason ``wrong_shape`` / ``wrong_dtype`` when the array does not fit ``encoding``.
    """
    dtype, channels = encoding_info(encoding)
    image = np.asarray(image)
    if image.ndim == 3 and channels == 1 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != (2 if channels == 1 else 3) or (channels > 1 and image.shape[2] != channels):
        raise ImageDecodeError("wrong_shape", f"array of shape {image.shape} does not fit {encoding} ({channels} channels)")
    if image.dtype != dtype:
        raise ImageDecodeError("wrong_dtype", f"array dtype {image.dtype} does not fit {encoding} ({dtype})")
    little = np.ascontiguousarray(image, dtype=dtype.newbyteorder("<"))
    height, width = image.shape[:2]
    return EncodedImage(encoding, height, width, width * channels * dtype.itemsize, False, little.tobytes())

"""sensor_msgs/Image and sensor_msgs/CompressedImage payloads <-> numpy, with no ROS dependency.

The one pure decoder shared by every layer that sees Image fields: the bag reader (rosbags messages,
``eval/``) and the rclpy conversion layer (``ros/convert.py`` can delegate to it). Callers hand over the
Image fields (data, height, width, step, encoding, is_bigendian) and get an array back.

Decoding honours ``step`` (rows may be padded past ``width * bytes per pixel``) and byte order, and
returns a zero-copy view of ``data`` (read-only when ``data`` is ``bytes``) except when big-endian data
must be swapped into native order.

Compressed payloads (``sensor_msgs/CompressedImage``, image_transport's ``compressed`` and
``compressedDepth`` transports) are decoded by Pillow in ``decode_compressed_image``: the one decoder for
the nodes, the bag reader and training data.
"""
from __future__ import annotations

import io
import re
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
    ``data_too_short``, ``wrong_shape``, ``wrong_dtype``; for compressed payloads also ``unknown_format``,
    ``corrupt_payload`` (truncated or not an image), ``depth_mismatch`` (bit depth differs from the one
    the format string declares).
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


# --- sensor_msgs/CompressedImage --------------------------------------------------------------------

COMPRESSED_CODECS = ("png", "jpeg")
# A few hundred KiB of PNG can declare a gigapixel image: cap the pixels decoded per frame (4K UHD fits).
DEFAULT_MAX_COMPRESSED_PIXELS = 4096 * 4096
# image_transport's compressedDepth prepends a 12-byte ConfigHeader (int32 format + float32[2] depth
# quantisation parameters) to the PNG stream.
_COMPRESSED_DEPTH_HEADER_BYTES = 12
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


class CompressedFormat(NamedTuple):
    """A parsed ``CompressedImage.format`` string.

    Attributes:
        encoding: the original Image encoding (``mono16``), or ``""`` when the string names only a codec.
        codec: ``png`` or ``jpeg`` (``""`` when the string does not say).
        content_encoding: encoding of the pixels inside the payload when the string names one
            (``bgr8`` in ``rgb8; jpeg compressed bgr8``), else ``encoding``.
        depth_transport: True for image_transport's ``compressedDepth`` transport.
    """

    encoding: str
    codec: str
    content_encoding: str
    depth_transport: bool


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """Parse a ``CompressedImage.format`` string.

    Accepted forms: ``png`` / ``jpeg`` / ``jpg`` (codec only, as many drivers write),
    ``<encoding>; <codec> compressed [<content encoding>]`` (image_transport ``compressed``) and
    ``<encoding>; compressedDepth [png]`` (image_transport ``compressedDepth``).

    Raises:
        ImageDecodeError: reason ``unknown_format`` for anything else.
    """
    text = (fmt or "").strip()
    lowered = text.lower()
    if lowered in ("png", "jpeg", "jpg"):
        return CompressedFormat("", "jpeg" if lowered == "jpg" else lowered, "", False)
    encoding, sep, rest = text.partition(";")
    encoding, rest = encoding.strip(), rest.strip()
    if sep and encoding in ENCODINGS:
        depth = re.fullmatch(r"compressedDepth(?:\s+(png|rvl))?", rest)
        if depth:
            if depth.group(1) == "rvl":
                raise ImageDecodeError("unknown_format", f"compressedDepth RVL payloads are not supported (format {fmt!r})")
            return CompressedFormat(encoding, "png", encoding, True)
        match = re.fullmatch(r"(png|jpeg|jpg)\s+compressed(?:\s+(\S+))?", rest, flags=re.IGNORECASE)
        if match:
            codec = "jpeg" if match.group(1).lower() == "jpg" else match.group(1).lower()
            content = match.group(2) or encoding
            if content not in ENCODINGS:
                raise ImageDecodeError("unknown_format", f"CompressedImage format {fmt!r} names unknown encoding {content!r}")
            return CompressedFormat(encoding, codec, content, False)
    raise ImageDecodeError(
        "unknown_format",
        f"unrecognised CompressedImage format {fmt!r} (expected 'png', 'jpeg', '<encoding>; png compressed' "
        "or '<encoding>; compressedDepth')",
    )


def _image_bits(dtype: np.dtype) -> int:
    return 8 * dtype.itemsize


def decode_compressed_image(data, fmt: str, *, max_dimension: int = DEFAULT_MAX_DIMENSION,
                            max_pixels: int = DEFAULT_MAX_COMPRESSED_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` payload (PNG or JPEG) with Pillow.

    Args:
        data: the message's ``data`` (bytes, uint8 array or any buffer).
        fmt: the message's ``format`` string (see ``parse_compressed_format``).
        max_dimension: largest accepted width or height, checked from the file header before the
            pixels are decompressed (guards against decompression bombs).
        max_pixels: largest accepted width x height, checked the same way.

    Returns:
        A new array: (H, W) uint16 for 16-bit grey, (H, W) uint8 for 8-bit grey, (H, W, 3) uint8 **RGB**
        for colour (whatever the format string says about BGR: PNG/JPEG files store RGB; palette images
        are expanded, alpha is dropped).

    Raises:
        ImageDecodeError: ``unknown_format`` (bad format string), ``corrupt_payload`` (empty, truncated or
            not an image), ``too_large``, ``zero_size``, ``depth_mismatch`` (e.g. a 16-bit PNG whose
            format says mono8, or an 8-bit one that says mono16).
    """
    from PIL import Image, UnidentifiedImageError

    parsed = parse_compressed_format(fmt)
    payload = bytes(data) if not isinstance(data, bytes) else data
    if not payload:
        raise ImageDecodeError("corrupt_payload", f"empty CompressedImage payload (format {fmt!r})")
    if parsed.depth_transport and not payload.startswith(_PNG_SIGNATURE):
        if parsed.encoding != "16UC1" and parsed.encoding != "mono16":
            raise ImageDecodeError(
                "unknown_format", f"compressedDepth of {parsed.encoding} (quantised inverse depth) is not supported"
            )
        payload = payload[_COMPRESSED_DEPTH_HEADER_BYTES:]
    try:
        with Image.open(io.BytesIO(payload)) as image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError("zero_size", f"compressed image has zero size: {width}x{height}")
            if width > max_dimension or height > max_dimension or width * height > max_pixels:
                raise ImageDecodeError(
                    "too_large", f"compressed image {width}x{height} exceeds the accepted size (each side <= "
                    f"{max_dimension}, at most {max_pixels} pixels)"
                )
            image.load()  # decompresses: truncated or corrupt streams fail here
            array = _pillow_to_array(image)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        kind = "JPEG" if payload.startswith(_JPEG_SIGNATURE) else "PNG" if payload.startswith(_PNG_SIGNATURE) else "unknown"
        raise ImageDecodeError(
            "corrupt_payload", f"cannot decode {len(payload)}-byte CompressedImage ({kind} data, format {fmt!r}): {exc}"
        ) from exc
    expected = parsed.content_encoding
    if expected:
        want_bits = _image_bits(ENCODINGS[expected][0])
        have_bits = _image_bits(array.dtype)
        if want_bits != have_bits:
            raise ImageDecodeError(
                "depth_mismatch",
                f"CompressedImage format {fmt!r} declares {want_bits}-bit {expected} pixels but the payload holds "
                f"{have_bits}-bit ones",
            )
    return array


def _pillow_to_array(image) -> np.ndarray:
    """(H, W) uint8/uint16 or (H, W, 3) uint8 RGB copy of a loaded Pillow image."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.array(image, dtype=np.uint16)
    if mode == "I":
        # Some Pillow versions open 16-bit grey PNGs as 32-bit "I"; the values still fit 16 bits.
        values = np.array(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError("depth_mismatch", "32-bit integer image payloads are not supported (16 bits at most)")
        return values.astype(np.uint16)
    if mode in ("1", "L"):
        return np.array(image.convert("L"), dtype=np.uint8)
    if mode == "LA":
        return np.array(image.convert("L"), dtype=np.uint8)
    if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX"):
        return np.array(image.convert("RGB"), dtype=np.uint8)
    raise ImageDecodeError("depth_mismatch", f"unsupported compressed pixel mode {mode!r}")


def encode_compressed_image(image: np.ndarray, encoding: str, codec: str = "png", *, jpeg_quality: int = 90) -> tuple[bytes, str]:
    """``(data, format)`` of a ``sensor_msgs/CompressedImage`` for an array, as image_transport writes them.

    The inverse of ``decode_compressed_image`` (exactly for PNG; JPEG is lossy and 8-bit only).

    Args:
        image: (H, W) uint8/uint16 or (H, W, 3) uint8 in ``encoding``'s channel order.
        encoding: the Image encoding the array is in (``mono16``, ``mono8``, ``rgb8``, ``bgr8``...).
        codec: ``png`` or ``jpeg``.
        jpeg_quality: 1-100.

    Returns:
        The payload and the format string (``mono16; png compressed``, ``rgb8; jpeg compressed bgr8``).

    Raises:
        ImageDecodeError: ``wrong_shape`` / ``wrong_dtype`` / ``unknown_format`` (16 bits as JPEG, an
            unknown codec).
    """
    from PIL import Image

    if codec not in COMPRESSED_CODECS:
        raise ImageDecodeError("unknown_format", f"unknown codec {codec!r} (expected one of {COMPRESSED_CODECS})")
    dtype, channels = encoding_info(encoding)
    array = np.asarray(image)
    if array.dtype != dtype:
        raise ImageDecodeError("wrong_dtype", f"array dtype {array.dtype} does not fit {encoding} ({dtype})")
    if channels == 1:
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ImageDecodeError("wrong_shape", f"array of shape {array.shape} does not fit {encoding}")
        if dtype.itemsize == 2 and codec == "jpeg":
            raise ImageDecodeError("unknown_format", "JPEG cannot carry 16-bit pixels; use png")
        if dtype.itemsize > 2:
            raise ImageDecodeError("wrong_dtype", f"{encoding} cannot be compressed as {codec}")
        pil = Image.fromarray(np.ascontiguousarray(array))
        suffix = ""
    else:
        if array.ndim != 3 or array.shape[2] != channels:
            raise ImageDecodeError("wrong_shape", f"array of shape {array.shape} does not fit {encoding}")
        pil = Image.fromarray(np.ascontiguousarray(to_rgb(array, encoding)))
        # image_transport converts colour to bgr8 before encoding; the file itself stores RGB.
        suffix = "bgr8"
    buffer = io.BytesIO()
    if codec == "png":
        pil.save(buffer, format="PNG", compress_level=1)
    else:
        pil.save(buffer, format="JPEG", quality=int(jpeg_quality))
    return buffer.getvalue(), f"{encoding}; {codec} compressed {suffix}".rstrip()

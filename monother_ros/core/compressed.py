"""sensor_msgs/CompressedImage payloads (image_transport's ``compressed`` transport) <-> numpy, no ROS.

image_transport's compressed publisher writes ``format`` as ``"<original encoding>; <codec> compressed
[<compressed encoding>]"``, e.g. ``"mono16; png compressed"`` (JPEG cannot carry 16 bits, PNG can),
``"mono8; jpeg compressed mono8"`` or ``"bgr8; jpeg compressed bgr8"``; older publishers write just
``"jpeg"`` or ``"png"``. The payload is a standard PNG or JPEG file: colour files hold R, G, B in the
file's own order whatever the original encoding said (OpenCV's BGR is converted when the file is written),
so a decoded colour image is always returned in R, G, B order with encoding ``rgb8``.

Decoding goes through Pillow. A payload that is not a PNG/JPEG, is truncated or corrupt, whose size
exceeds ``max_dimension``, or whose bit depth contradicts the format (a 16-bit PNG announced as mono8, an
8-bit one announced as mono16) raises :class:`CompressedDecodeError` (an ``ImageDecodeError``) with a
short ``reason``; nothing is guessed.
"""
from __future__ import annotations

import io
from typing import Literal, NamedTuple

import numpy as np

from monother_ros.core.image_codec import DEFAULT_MAX_DIMENSION, ImageDecodeError

__all__ = ["CompressedDecodeError", "CompressedFormat", "parse_format", "decode_compressed", "encode_compressed",
           "COMPRESSED_SUFFIX"]

COMPRESSED_SUFFIX = "/compressed"  # image_transport: <base topic>/compressed

_MONO8 = ("mono8", "8UC1")
_MONO16 = ("mono16", "16UC1")
_COLOUR = ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8")
_KNOWN_ENCODINGS = _MONO8 + _MONO16 + _COLOUR


class CompressedDecodeError(ImageDecodeError):
    """A compressed payload cannot be used. Reasons: ``bad_format``, ``corrupt_payload``, ``too_large``,
    ``zero_size``, ``bit_depth_mismatch``, ``unsupported_mode``."""


class CompressedFormat(NamedTuple):
    """The parsed ``CompressedImage.format``: original encoding ('' when not given) and codec."""

    encoding: str
    codec: str  # "png", "jpeg" or "" (unknown: taken from the payload)


def parse_format(text: str) -> CompressedFormat:
    """Split image_transport's format string.

    Raises:
        CompressedDecodeError: ``bad_format`` for compressedDepth or an unknown original encoding.
    """
    text = (text or "").strip()
    head, _, tail = text.partition(";")
    if not tail:  # "jpeg", "png", "" (old publishers): codec only
        codec = head.strip().lower()
        return CompressedFormat("", "jpeg" if codec in ("jpeg", "jpg") else "png" if codec == "png" else "")
    encoding, rest = head.strip(), tail.strip().lower()
    if "compresseddepth" in rest:
        raise CompressedDecodeError("bad_format", f"format {text!r} is compressedDepth (use the raw or the "
                                                  "compressed transport)")
    if encoding not in _KNOWN_ENCODINGS:
        raise CompressedDecodeError("bad_format", f"format {text!r}: original encoding {encoding!r} is not one of "
                                                  f"{', '.join(_KNOWN_ENCODINGS)}")
    codec = "png" if rest.startswith("png") else "jpeg" if rest.startswith(("jpeg", "jpg")) else ""
    return CompressedFormat(encoding, codec)


def decode_compressed(data, format: str, *, max_dimension: int = DEFAULT_MAX_DIMENSION) -> tuple[np.ndarray, str]:
    """Decode a CompressedImage payload.

    Args:
        data: the PNG/JPEG bytes (any buffer: bytes, ``array.array('B')``, memoryview).
        format: ``CompressedImage.format``.
        max_dimension: largest accepted width or height (checked from the header, before decoding).

    Returns:
        (image, encoding): (H, W) uint16 ``mono16``, (H, W) uint8 ``mono8``, or (H, W, 3) uint8 ``rgb8``
        (R, G, B order, see the module docstring).

    Raises:
        CompressedDecodeError: every unusable payload, with ``reason`` set.
    """
    from PIL import Image, UnidentifiedImageError

    fmt = parse_format(format)
    payload = bytes(data)
    if not payload:
        raise CompressedDecodeError("zero_size", "compressed image has no data")
    try:
        image = Image.open(io.BytesIO(payload))
        width, height = image.size
        if width <= 0 or height <= 0:
            raise CompressedDecodeError("zero_size", f"compressed image has zero size {width}x{height}")
        if width > max_dimension or height > max_dimension:
            raise CompressedDecodeError("too_large", f"compressed image {width}x{height} exceeds the largest "
                                                     f"accepted dimension {max_dimension}")
        image.load()  # truncated / corrupt data fails here, not later in numpy
    except CompressedDecodeError:
        raise
    except UnidentifiedImageError:
        raise CompressedDecodeError("corrupt_payload", f"compressed image ({len(payload)} bytes, format {format!r}) "
                                                       "is corrupt: not a readable PNG or JPEG file") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise CompressedDecodeError("corrupt_payload", f"compressed image ({len(payload)} bytes, format "
                                                       f"{format!r}) is corrupt or truncated: {exc}") from None
    kind = (image.format or "").lower()
    if fmt.codec and kind and fmt.codec != kind:
        raise CompressedDecodeError("bad_format", f"format {format!r} says {fmt.codec} but the payload is {kind}")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array, bits = np.asarray(image), 16
        if mode == "I":  # Pillow's 32-bit mode for some 16-bit files: values must still fit 16 bits
            if array.size and (array.min() < 0 or array.max() > 65535):
                raise CompressedDecodeError("unsupported_mode", "compressed image has values beyond 16 bits")
        array = array.astype(np.uint16, copy=False)
    elif mode in ("L", "LA"):
        array, bits = np.asarray(image.convert("L") if mode == "LA" else image), 8
    elif mode in ("RGB", "RGBA", "P", "PA"):
        array, bits = np.asarray(image if mode == "RGB" else image.convert("RGB")), 24
    else:
        raise CompressedDecodeError("unsupported_mode", f"compressed image mode {mode!r} (from format {format!r}) "
                                                        "is not grey 8/16-bit or RGB")
    if fmt.encoding in _MONO16 and bits != 16:
        raise CompressedDecodeError("bit_depth_mismatch", f"format {format!r} announces 16-bit {fmt.encoding} but "
                                                          f"the {kind or 'image'} payload is {bits}-bit ({mode})")
    if fmt.encoding in _MONO8 and bits != 8:
        raise CompressedDecodeError("bit_depth_mismatch", f"format {format!r} announces 8-bit {fmt.encoding} but "
                                                          f"the {kind or 'image'} payload is {bits}-bit ({mode})")
    if fmt.encoding in _COLOUR and bits == 16:
        raise CompressedDecodeError("bit_depth_mismatch", f"format {format!r} announces {fmt.encoding} but the "
                                                          "payload is a 16-bit grey image")
    encoding = {16: "mono16", 8: "mono8", 24: "rgb8"}[bits]
    return array, encoding


def encode_compressed(image: np.ndarray, encoding: str, codec: Literal["png", "jpeg"] = "png", *,
                      jpeg_quality: int = 90, png_level: int = 1) -> tuple[bytes, str]:
    """Encode an image as image_transport's compressed publisher would (file bytes, format string).

    Args:
        image: (H, W) uint16 (``mono16``, PNG only), (H, W) uint8 (``mono8``) or (H, W, 3) uint8 in the
            channel order of ``encoding`` (``rgb8`` or ``bgr8``).
        encoding: the image's encoding (written into the format string).
        codec: ``png`` or ``jpeg``.
        jpeg_quality: 1-100. png_level: zlib level 0-9 (image_transport's default is 3).

    Raises:
        ValueError: an image that the codec cannot carry (16 bits as JPEG) or does not fit ``encoding``.
    """
    from PIL import Image

    image = np.asarray(image)
    if codec not in ("png", "jpeg"):
        raise ValueError(f"codec must be png or jpeg, got {codec!r}")
    if encoding in _MONO16:
        if image.dtype != np.uint16 or image.ndim != 2:
            raise ValueError(f"{encoding} needs a (H, W) uint16 array, got {image.dtype} {image.shape}")
        if codec == "jpeg":
            raise ValueError("JPEG cannot carry 16-bit images: use png")
        pil = Image.fromarray(np.ascontiguousarray(image))
    elif encoding in _MONO8:
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(f"{encoding} needs a (H, W) uint8 array, got {image.dtype} {image.shape}")
        pil = Image.fromarray(np.ascontiguousarray(image), mode=None)
    elif encoding in ("rgb8", "bgr8"):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{encoding} needs a (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
        pil = Image.fromarray(np.ascontiguousarray(image[..., ::-1] if encoding == "bgr8" else image))
    else:
        raise ValueError(f"cannot compress encoding {encoding!r}")
    out = io.BytesIO()
    if codec == "png":
        pil.save(out, format="PNG", compress_level=int(png_level))
    else:
        pil.save(out, format="JPEG", quality=int(jpeg_quality))
    # What image_transport appends: the compressed file's own encoding (colour is always stored as BGR
    # by OpenCV, i.e. a standard RGB file), none for grey PNG.
    compressed_as = " bgr8" if encoding in ("rgb8", "bgr8") else (" mono8" if codec == "jpeg" else "")
    return out.getvalue(), f"{encoding}; {codec} compressed{compressed_as}"

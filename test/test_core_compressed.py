"""core.image_codec: sensor_msgs/CompressedImage payloads (PNG/JPEG through Pillow)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from monother_ros.core.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    encode_compressed_image,
    parse_compressed_format,
)
from monother_ros.errors import MonotherError


def _thermal16(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(20000, 40000, size=(h, w), dtype=np.uint16)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("png", ("", "png", "", False)),
        ("JPEG", ("", "jpeg", "", False)),
        ("mono16; png compressed ", ("mono16", "png", "mono16", False)),
        ("rgb8; jpeg compressed bgr8", ("rgb8", "jpeg", "bgr8", False)),
        ("16UC1; compressedDepth png", ("16UC1", "png", "16UC1", True)),
        ("16UC1; compressedDepth", ("16UC1", "png", "16UC1", True)),
    ],
)
def test_format_strings_of_image_transport_and_drivers_parse(fmt, expected):
    assert tuple(parse_compressed_format(fmt)) == expected


@pytest.mark.parametrize("fmt", ["", "tiff", "mono16; gzip compressed", "weird; png compressed", "mono8; png compressed xyz"])
def test_unknown_format_strings_are_refused(fmt):
    with pytest.raises(ImageDecodeError) as info:
        parse_compressed_format(fmt)
    assert info.value.reason == "unknown_format"


def test_16bit_png_round_trip_is_exact():
    thermal = _thermal16()
    data, fmt = encode_compressed_image(thermal, "mono16", "png")
    assert fmt == "mono16; png compressed"
    out = decode_compressed_image(data, fmt)
    assert out.dtype == np.uint16 and out.shape == thermal.shape
    np.testing.assert_array_equal(out, thermal)
    # image_transport's own string (trailing space) and a bare codec string decode the same pixels
    np.testing.assert_array_equal(decode_compressed_image(data, "mono16; png compressed "), thermal)
    np.testing.assert_array_equal(decode_compressed_image(np.frombuffer(data, np.uint8), "png"), thermal)


def test_8bit_png_and_jpeg_mono():
    mono = (_thermal16() >> 8).astype(np.uint8)
    data, fmt = encode_compressed_image(mono, "mono8", "png")
    np.testing.assert_array_equal(decode_compressed_image(data, fmt), mono)
    data, fmt = encode_compressed_image(mono, "mono8", "jpeg", jpeg_quality=95)
    out = decode_compressed_image(data, fmt)
    assert out.dtype == np.uint8 and out.shape == mono.shape
    assert np.abs(out.astype(int) - mono.astype(int)).mean() < 6.0


def test_colour_decodes_to_rgb_whatever_the_channel_order_of_the_source():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 30
    for encoding, source in (("rgb8", rgb), ("bgr8", rgb[..., ::-1])):
        data, fmt = encode_compressed_image(source, encoding, "png")
        assert fmt == f"{encoding}; png compressed bgr8"
        np.testing.assert_array_equal(decode_compressed_image(data, fmt), rgb)
        data, fmt = encode_compressed_image(source, encoding, "jpeg", jpeg_quality=95)
        out = decode_compressed_image(data, fmt)
        assert out.shape == rgb.shape and abs(int(out[..., 0].mean()) - 200) < 4 and abs(int(out[..., 2].mean()) - 30) < 4


def test_16bit_payload_claiming_8bit_is_refused():
    data = _png(_thermal16())
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed_image(data, "mono8; png compressed")
    assert info.value.reason == "depth_mismatch" and "16-bit" in str(info.value)
    assert isinstance(info.value, MonotherError)


def test_8bit_payload_claiming_16bit_is_refused():
    data = _png(np.full((8, 8), 7, np.uint8))
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed_image(data, "mono16; png compressed")
    assert info.value.reason == "depth_mismatch"


@pytest.mark.parametrize(
    "payload",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\xff\xd8\xff\xe0" + b"\x13" * 50],
)
def test_garbage_payloads_are_corrupt(payload):
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed_image(payload, "mono16; png compressed")
    assert info.value.reason == "corrupt_payload"


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_truncated_payloads_are_corrupt(codec):
    image = (_thermal16(120, 160) >> 8).astype(np.uint8)
    data, fmt = encode_compressed_image(image, "mono8", codec)
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed_image(data[: len(data) // 2], fmt)
    assert info.value.reason == "corrupt_payload" and "truncated" in str(info.value)


def test_huge_declared_size_is_refused_before_decompressing():
    data = _png(np.zeros((4, 40), np.uint8))
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed_image(data, "png", max_dimension=32)
    assert info.value.reason == "too_large"
    # A decompression bomb: 8192x8192 zeros is 64 MiB of pixels in about 64 KiB of PNG.
    bomb = _png(np.zeros((8192, 8192), np.uint8))
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed_image(bomb, "png")
    assert info.value.reason == "too_large" and "8192x8192" in str(info.value)


def test_compressed_depth_transport_header_is_skipped():
    depth = _thermal16()
    header = np.array([0], np.int32).tobytes() + np.array([0.0, 0.0], np.float32).tobytes()
    out = decode_compressed_image(header + _png(depth), "16UC1; compressedDepth png")
    np.testing.assert_array_equal(out, depth)


def test_encoder_refuses_16bit_jpeg_and_mismatched_arrays():
    with pytest.raises(ImageDecodeError):
        encode_compressed_image(_thermal16(), "mono16", "jpeg")
    with pytest.raises(ImageDecodeError):
        encode_compressed_image(_thermal16(), "mono8", "png")
    with pytest.raises(ImageDecodeError):
        encode_compressed_image(np.zeros((4, 4), np.uint8), "rgb8", "png")

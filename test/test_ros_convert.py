"""Message <-> numpy conversions: images (every encoding, padding, byte order, malformed input),
camera info, point clouds and time stamps. No node, no spinning."""
from __future__ import annotations

import array
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointField, RegionOfInterest

from monother_ros.core.camera import PinholeCamera
from monother_ros.errors import CalibrationError, MonotherError
from monother_ros.ros import convert
from monother_ros.ros.convert import ImageDecodeError

RNG = np.random.default_rng(7)

CASES = {
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "8UC3": (np.uint8, 3),
    "32FC1": (np.float32, 1),
}


def random_image(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    dtype, channels = CASES[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype is np.float32:
        return RNG.normal(size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def padded_message(image: np.ndarray, encoding: str, pad: int, *, big_endian: bool = False) -> Image:
    """Hand-build an Image whose rows carry `pad` junk bytes."""
    stored = image.astype(image.dtype.newbyteorder(">")) if big_endian else image
    rows = stored.reshape(image.shape[0], -1).view(np.uint8).reshape(image.shape[0], -1)
    padded = np.full((rows.shape[0], rows.shape[1] + pad), 0xAB, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=image.shape[0], width=image.shape[1], encoding=encoding, step=padded.shape[1])
    msg.is_bigendian = int(big_endian)
    msg.data = array.array("B", padded.tobytes())
    return msg


@pytest.mark.parametrize("encoding", sorted(CASES))
def test_round_trip_every_encoding_is_exact_and_zero_copy(encoding):
    image = random_image(encoding)
    msg = convert.array_to_image(image, encoding=encoding, stamp_ns=1_500_000_001, frame_id="cam")
    assert msg.encoding == encoding and msg.is_bigendian == 0
    assert msg.step == image.shape[1] * image.dtype.itemsize * (image.shape[2] if image.ndim == 3 else 1)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1, 500_000_001, "cam")
    decoded = convert.image_to_array(msg)
    assert decoded.dtype == image.dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize("encoding", sorted(CASES))
@pytest.mark.parametrize("pad", [4, 12])
def test_step_padding_is_sliced_off(encoding, pad):
    image = random_image(encoding, 4, 6)
    msg = padded_message(image, encoding, pad)
    decoded = convert.image_to_array(msg)
    np.testing.assert_array_equal(decoded, image)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, dtype=np.uint8))  # still a view


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_big_endian_data_decodes_to_native_values(encoding):
    image = random_image(encoding, 3, 5)
    msg = padded_message(image, encoding, 4, big_endian=True)
    native = convert.image_to_array(msg)
    assert native.dtype == image.dtype  # native byte order, a copy
    np.testing.assert_array_equal(native, image)
    view = convert.image_to_array(msg, native=False)
    assert view.dtype.byteorder == ">" and np.shares_memory(view, np.frombuffer(msg.data, dtype=np.uint8))
    np.testing.assert_array_equal(view, image)


def test_big_endian_array_is_flagged_on_encode():
    image = random_image("mono16", 2, 3).astype(">u2")
    msg = convert.array_to_image(image)
    assert msg.is_bigendian == 1
    np.testing.assert_array_equal(convert.image_to_array(msg), image.astype(np.uint16))


def test_new_image_view_writes_into_the_message():
    msg, view = convert.new_image(3, 4, "32FC1", stamp_ns=7, frame_id="f")
    view[...] = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(convert.image_to_array(msg), np.arange(12, dtype=np.float32).reshape(3, 4))
    assert msg.step == 16 and msg.header.stamp.nanosec == 7


def _msg(**fields) -> Image:
    base = dict(height=4, width=5, encoding="mono16", step=10, is_bigendian=0)
    base.update(fields)
    data = base.pop("data", bytes(base["height"] * base["step"]))
    msg = Image(**base)
    msg.data = array.array("B", data)
    return msg


@pytest.mark.parametrize(
    "fields, reason, text",
    [
        (dict(encoding="yuv422"), "unknown_encoding", "unknown image encoding 'yuv422'"),
        (dict(encoding=""), "unknown_encoding", "unknown image encoding ''"),
        (dict(width=0, step=0), "zero_size", "zero size"),
        (dict(height=0, data=b""), "zero_size", "zero size"),
        (dict(width=20000, step=40000, data=b""), "too_large", "16384"),
        (dict(step=8), "step_too_small", "step 8"),
        (dict(step=11, data=bytes(44)), "step_misaligned", "not a multiple"),
        (dict(data=bytes(39)), "data_too_short", "39 bytes"),
        (dict(encoding="rgb8", step=10), "step_too_small", "3 bytes per pixel"),
        (dict(encoding="32FC1", step=22, data=bytes(88)), "step_misaligned", "4-byte"),
    ],
)
def test_malformed_images_give_their_specific_reason(fields, reason, text):
    with pytest.raises(ImageDecodeError) as info:
        convert.image_to_array(_msg(**fields))
    assert info.value.reason == reason
    assert text in str(info.value)
    assert isinstance(info.value, MonotherError)


def test_max_dimension_is_configurable():
    msg = _msg(width=5, height=4)
    convert.image_to_array(msg, max_dimension=5)
    with pytest.raises(ImageDecodeError, match="exceeds"):
        convert.image_to_array(msg, max_dimension=4)


def test_longer_data_is_accepted_and_ignored():
    msg = _msg(data=bytes(40) + b"\xff" * 8)
    assert convert.image_to_array(msg).shape == (4, 5)
    assert int(convert.image_to_array(msg).max()) == 0


@pytest.mark.parametrize(
    "array_, encoding, reason",
    [
        (np.zeros((2, 3), np.float64), None, "wrong_shape"),
        (np.zeros((2, 3), np.uint8), "mono16", "wrong_dtype"),
        (np.zeros((2, 3), np.uint8), "rgb8", "wrong_shape"),
        (np.zeros((0, 3), np.uint8), "mono8", "zero_size"),
        (np.zeros((2, 3), np.uint8), "jpeg", "unknown_encoding"),
    ],
)
def test_array_to_image_refuses_mismatched_arrays(array_, encoding, reason):
    with pytest.raises(ImageDecodeError) as info:
        convert.array_to_image(array_, encoding=encoding)
    assert info.value.reason == reason


# ------------------------------------------------------------------------------------------ camera info


def _info(**kw) -> CameraInfo:
    msg = CameraInfo(width=640, height=512, distortion_model="plumb_bob")
    msg.k = [500.0, 0.0, 320.0, 0.0, 510.0, 250.0, 0.0, 0.0, 1.0]
    msg.p = [400.0, 0.0, 300.0, 0.0, 0.0, 410.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.d = [0.0] * 5
    for key, value in kw.items():
        setattr(msg, key, value)
    return msg


def test_camera_info_round_trip():
    camera = PinholeCamera(640, 512, 500.5, 501.5, 319.25, 255.75)
    msg = convert.camera_to_info(camera, stamp_ns=3_000_000_004, frame_id="thermal_optical_frame")
    assert msg.header.frame_id == "thermal_optical_frame" and msg.header.stamp.sec == 3
    assert list(msg.p) == [500.5, 0, 319.25, 0, 0, 501.5, 255.75, 0, 0, 0, 1, 0]
    assert list(msg.r) == [1, 0, 0, 0, 1, 0, 0, 0, 1] and list(msg.d) == [0.0] * 5
    assert convert.camera_from_info(msg, image_size=(640, 512)) == camera
    assert not convert.has_distortion(msg)


def test_camera_info_uses_k_or_p():
    assert convert.camera_from_info(_info()) == PinholeCamera(640, 512, 500.0, 510.0, 320.0, 250.0)
    assert convert.camera_from_info(_info(), use_rectified=True) == PinholeCamera(640, 512, 400.0, 410.0, 300.0, 240.0)


def test_camera_info_binning_and_roi_follow_image_geometry():
    roi = RegionOfInterest(x_offset=100, y_offset=50, width=400, height=300)
    camera = convert.camera_from_info(_info(binning_x=2, binning_y=2, roi=roi))
    assert camera == PinholeCamera(200, 150, 250.0, 255.0, 110.0, 100.0)


def test_distortion_is_reported():
    assert convert.has_distortion(_info(d=[0.1, 0.0, 0.0, 0.0, 0.0]))
    assert convert.distortion_note(_info()) is None
    assert "plumb_bob distortion [0.1, 0, 0, 0, 0] is not modelled" in convert.distortion_note(_info(d=[0.1, 0.0, 0.0, 0.0, 0.0]))
    assert "unknown distortion model 'fisheye9'" in convert.distortion_note(_info(distortion_model="fisheye9"))


@pytest.mark.parametrize(
    "fields, text",
    [
        (dict(k=[math.nan, 0, 320, 0, 510, 250, 0, 0, 1]), "non-finite"),
        (dict(k=[0.0] * 9), "all zero"),
        (dict(k=[0.0, 0, 320, 0, 510, 250, 0, 0, 1]), "focal lengths must be positive"),
        (dict(k=[-5.0, 0, 320, 0, 510, 250, 0, 0, 1]), "focal lengths must be positive"),
        (dict(k=[500.0, 3.0, 320, 0, 510, 250, 0, 0, 1]), "skew"),
        (dict(k=[500.0, 0, 320, 0, 510, 250, 0, 0, 2.0]), "upper-triangular"),
        (dict(width=0), "zero size"),
        (dict(d=[math.inf, 0.0, 0.0, 0.0, 0.0]), "distortion has non-finite"),
        (dict(roi=RegionOfInterest(x_offset=600, y_offset=0, width=100, height=100)), "ROI"),
    ],
)
def test_bad_camera_info_raises_calibration_error(fields, text):
    with pytest.raises(CalibrationError, match=text):
        convert.camera_from_info(_info(**fields))


def test_camera_info_size_must_match_the_image():
    with pytest.raises(CalibrationError, match="640x512 image but the image is 320x256"):
        convert.camera_from_info(_info(), image_size=(320, 256))


def test_rectified_needs_a_valid_p():
    with pytest.raises(CalibrationError, match="P is all zero"):
        convert.camera_from_info(_info(p=[0.0] * 12), use_rectified=True)


# ---------------------------------------------------------------------------------------- point clouds


def test_point_cloud_layout_and_values():
    xyz = RNG.normal(size=(3, 4, 3)).astype(np.float32)
    xyz[1, 2] = np.nan
    value = RNG.random((3, 4)).astype(np.float32)
    msg = convert.point_cloud_from_xyz(xyz, value, value_field="confidence", stamp_ns=9, frame_id="f")
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (3, 4, 16, 64)
    assert not msg.is_dense and not msg.is_bigendian
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("confidence", 12, PointField.FLOAT32, 1),
    ]
    assert len(msg.data) == 3 * 4 * 16
    back = convert.point_cloud_to_array(msg)
    np.testing.assert_array_equal(back[..., :3], xyz)
    np.testing.assert_array_equal(back[..., 3], value)
    # Independent decode of one point from raw bytes: offset = row * row_step + col * point_step.
    raw = bytes(msg.data)
    off = 2 * 64 + 3 * 16
    assert np.frombuffer(raw[off : off + 16], dtype="<f4").tolist() == [*xyz[2, 3].tolist(), float(value[2, 3])]


def test_point_cloud_from_four_channels_and_default_value():
    xyzv = RNG.normal(size=(2, 2, 4))
    np.testing.assert_allclose(convert.point_cloud_to_array(convert.point_cloud_from_xyz(xyzv)), xyzv.astype(np.float32))
    zero = convert.point_cloud_to_array(convert.point_cloud_from_xyz(np.ones((2, 2, 3))))
    assert np.all(zero[..., 3] == 0) and np.all(zero[..., :3] == 1)
    with pytest.raises(ValueError):
        convert.point_cloud_from_xyz(np.ones((2, 2)))
    with pytest.raises(ValueError):
        convert.point_cloud_from_xyz(np.ones((2, 2, 3)), np.ones((3, 2)))


def test_point_cloud_written_in_place_by_core_cloud_projector():
    from monother_ros.core.cloud import CloudProjector, pack_xyzi

    camera = PinholeCamera(4, 3, 2.0, 2.0, 1.5, 1.0)
    depth = np.array([[1, 2, 3, 4], [np.nan, 2, 2, 2], [5, 5, 0, 5]], np.float32)
    confidence = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    msg, view = convert.new_point_cloud(3, 4, value_field="confidence", frame_id="thermal_optical_frame")
    CloudProjector(camera).points(depth, out=view[..., :3])
    view[..., 3] = confidence
    got = convert.point_cloud_to_array(msg)
    # Hand-computed: x = (u - 1.5) / 2 * z, y = (v - 1) / 2 * z at (u=3, v=0, z=4) and (u=0, v=2, z=5).
    np.testing.assert_allclose(got[0, 3], [3.0, -2.0, 4.0, confidence[0, 3]])
    np.testing.assert_allclose(got[2, 0], [-3.75, 2.5, 5.0, confidence[2, 0]])
    assert np.all(np.isnan(got[1, 0, :3])) and np.all(np.isnan(got[2, 2, :3]))  # NaN and 0 depth invalid
    assert [f.name for f in msg.fields] == ["x", "y", "z", "confidence"] and not msg.is_dense

    packed = convert.point_cloud_from_packed(pack_xyzi(got[..., :3], confidence), 3, 4, frame_id="f")
    np.testing.assert_array_equal(bytes(packed.data), bytes(msg.data))
    with pytest.raises(ValueError, match="need 192"):
        convert.point_cloud_from_packed(np.zeros(10, np.uint8), 3, 4)


# ------------------------------------------------------------------------------------------------ time


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789])
def test_time_round_trip(ns):
    stamp = convert.ns_to_stamp(ns)
    assert isinstance(stamp, Time)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert convert.stamp_to_ns(stamp) == ns


def test_time_out_of_range():
    with pytest.raises(ValueError):
        convert.ns_to_stamp(-1)
    with pytest.raises(ValueError):
        convert.ns_to_stamp(2**31 * 1_000_000_000)
    assert convert.seconds_to_ns(1.5) == 1_500_000_000

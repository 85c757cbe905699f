"""Property-based fuzzing (hypothesis) of the bad-input boundaries of the rclpy layer.

* Image decoding: arbitrary fields and bytes raise nothing but ``ImageDecodeError``; valid images with
  any padding and byte order decode to exactly the pixels encoded.
* CameraInfo: arbitrary numbers raise nothing but ``CalibrationError``; accepted ones give finite
  positive intrinsics; any valid camera round-trips.
* TF buffer and pairing: arbitrary inputs never raise and keep their invariants.
"""
from __future__ import annotations

import array
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest

from monother_ros.core.camera import PinholeCamera
from monother_ros.errors import CalibrationError
from monother_ros.ros import convert
from monother_ros.ros.convert import ImageDecodeError
from monother_ros.ros.pairing import ApproximateTimeSynchronizer
from monother_ros.ros.tf import TransformBuffer, TransformError

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODINGS = sorted(convert.ENCODINGS)


@FAST
@given(
    encoding=st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=8)),
    height=st.integers(-3, 40),
    width=st.integers(-3, 40),
    step=st.integers(-5, 200),
    is_bigendian=st.integers(0, 1),
    data=st.binary(max_size=2000),
)
def test_arbitrary_image_fields_raise_only_decode_errors(encoding, height, width, step, is_bigendian, data):
    msg = Image(encoding=encoding, is_bigendian=is_bigendian)
    # The message's own integer fields are unsigned: clamp what the wire could never carry.
    msg.height, msg.width, msg.step = max(height, 0), max(width, 0), max(step, 0)
    msg.data = array.array("B", data)
    try:
        image = convert.image_to_array(msg, max_dimension=32)
    except ImageDecodeError as exc:
        assert exc.reason in {"unknown_encoding", "zero_size", "too_large", "step_too_small", "step_misaligned",
                              "data_too_short"}
        return
    dtype, channels = convert.ENCODINGS[encoding]
    assert image.dtype == dtype
    assert image.shape == ((msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels))
    assert msg.step >= msg.width * channels * dtype.itemsize and len(data) >= msg.height * msg.step


@st.composite
def valid_images(draw):
    encoding = draw(st.sampled_from(ENCODINGS))
    dtype, channels = convert.ENCODINGS[encoding]
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    shape = (height, width) if channels == 1 else (height, width, channels)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        pixels = rng.normal(scale=100.0, size=shape).astype(dtype)
        pixels.flat[0] = np.nan if draw(st.booleans()) else pixels.flat[0]  # NaN depth is valid data
    else:
        pixels = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    pad_elements = draw(st.integers(0, 5))
    big = draw(st.booleans()) and dtype.itemsize > 1
    return encoding, pixels, pad_elements * dtype.itemsize, big


@FAST
@given(valid_images())
def test_valid_images_decode_to_the_encoded_pixels(case):
    encoding, pixels, pad, big = case
    stored = pixels.astype(pixels.dtype.newbyteorder(">")) if big else pixels
    rows = np.ascontiguousarray(stored).reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=padded.shape[1],
                is_bigendian=int(big))
    msg.data = array.array("B", padded.tobytes())
    decoded = convert.image_to_array(msg)
    assert decoded.dtype == pixels.dtype and decoded.shape == pixels.shape
    np.testing.assert_array_equal(decoded, pixels)  # NaN == NaN for assert_array_equal
    # And the reverse direction gives the same bytes back.
    np.testing.assert_array_equal(convert.image_to_array(convert.array_to_image(decoded, encoding=encoding)), pixels)


wild_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, 1e-300, 1e300, -1.0]),
)


@FAST
@given(
    k=st.lists(wild_floats, min_size=9, max_size=9),
    p=st.lists(wild_floats, min_size=12, max_size=12),
    d=st.lists(wild_floats, max_size=8),
    width=st.integers(0, 5000),
    height=st.integers(0, 5000),
    binning=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    roi=st.tuples(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 3000)),
    rectified=st.booleans(),
)
def test_arbitrary_camera_info_raises_only_calibration_errors(k, p, d, width, height, binning, roi, rectified):
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.k, msg.p, msg.d = k, p, d
    msg.binning_x, msg.binning_y = binning
    msg.roi = RegionOfInterest(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3])
    try:
        camera = convert.camera_from_info(msg, use_rectified=rectified)
    except CalibrationError:
        return
    assert all(math.isfinite(v) for v in (camera.fx, camera.fy, camera.cx, camera.cy))
    assert camera.fx > 0 and camera.fy > 0 and camera.width > 0 and camera.height > 0


@FAST
@given(
    width=st.integers(1, 4000),
    height=st.integers(1, 4000),
    fx=st.floats(1e-3, 1e5),
    fy=st.floats(1e-3, 1e5),
    cx=st.floats(-1e4, 1e4),
    cy=st.floats(-1e4, 1e4),
)
def test_valid_cameras_round_trip(width, height, fx, fy, cx, cy):
    camera = PinholeCamera(width, height, fx, fy, cx, cy)
    assert convert.camera_from_info(convert.camera_to_info(camera), image_size=(width, height)) == camera
    assert convert.camera_from_info(convert.camera_to_info(camera), use_rectified=True) == camera


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None, width=64)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "", "/a"]),
            st.sampled_from(["a", "b", "c", "d", "/b"]),
            st.integers(0, 50),
            st.tuples(finite_or_not, finite_or_not, finite_or_not),
            st.tuples(finite_or_not, finite_or_not, finite_or_not, finite_or_not),
            st.booleans(),
        ),
        max_size=25,
    ),
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 60),
)
def test_tf_buffer_never_raises_on_input_and_lookups_fail_cleanly(inserts, target, source, time_s):
    buf = TransformBuffer(cache_time_ns=20 * 10**9)
    for parent, child, stamp_s, t, q, static in inserts:
        assert buf.set_transform(parent, child, stamp_s * 10**9, t, q, static=static) in (True, False)
    assert buf.accepted + sum(buf.rejected.values()) == len(inserts)
    try:
        T = buf.lookup_transform(target, source, time_s * 10**9)
    except TransformError:
        return
    # Rotations stay orthonormal; translations are summed as given (1e308 + 1e308 may overflow, as in tf2).
    assert T.shape == (4, 4) and np.all(np.isfinite(T[:3, :3]))
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 30)), max_size=80),
    st.integers(1, 6),
    st.one_of(st.none(), st.integers(0, 40)),
)
def test_pairing_invariants(steps, queue_size, max_interval):
    """Sets: one message per stream, spread <= max interval, each message used once, in time order;
    and every message is accounted for: received = emitted + dropped + still queued."""
    sync = ApproximateTimeSynchronizer(2, queue_size=queue_size, max_interval_ns=max_interval)
    clocks = [0, 0]
    used = set()
    last_set = None
    for serial, (stream, gap) in enumerate(steps):
        clocks[stream] += gap
        for items in sync.add(stream, clocks[stream], payload=(stream, serial)):
            assert [item.payload[0] for item in items] == [0, 1]
            spread = max(i.stamp_ns for i in items) - min(i.stamp_ns for i in items)
            assert max_interval is None or spread <= max_interval
            for item in items:
                assert item.payload not in used
                used.add(item.payload)
            stamps = tuple(i.stamp_ns for i in items)
            if last_set is not None:
                assert all(a >= b for a, b in zip(stamps, last_set))
            last_set = stamps
    c = sync.counters
    for stream in range(2):
        assert c.received[stream] == c.emitted + c.dropped[stream] + sync.queued(stream)

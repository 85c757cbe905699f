"""Depth -> points against hand-computed points; PointCloud2 byte layout; NaN handling."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from monother_ros.core.camera import PinholeCamera
from monother_ros.core.cloud import POINT_FIELDS, POINT_STEP, CloudProjector, depth_to_points, pack_xyzi

CAM = PinholeCamera(width=3, height=2, fx=2.0, fy=4.0, cx=1.0, cy=0.5)


def test_points_hand_computed():
    depth = np.array([[2.0, 4.0, np.nan], [1.0, 0.0, np.inf]], np.float32)
    pts = depth_to_points(depth, CAM)
    assert pts.shape == (2, 3, 3) and pts.dtype == np.float32
    # (u, v) = (0, 0), z = 2: x = (0 - 1)/2 * 2 = -1, y = (0 - 0.5)/4 * 2 = -0.25
    np.testing.assert_allclose(pts[0, 0], [-1.0, -0.25, 2.0])
    # (1, 0), z = 4: x = 0, y = -0.5
    np.testing.assert_allclose(pts[0, 1], [0.0, -0.5, 4.0])
    # (0, 1), z = 1: x = -0.5, y = 0.125
    np.testing.assert_allclose(pts[1, 0], [-0.5, 0.125, 1.0])
    # NaN, 0 and inf depths are invalid points (all three coordinates NaN)
    for v, u in [(0, 2), (1, 1), (1, 2)]:
        assert np.isnan(pts[v, u]).all()


def test_agrees_with_camera_backproject():
    rng = np.random.default_rng(0)
    cam = PinholeCamera(width=17, height=11, fx=13.0, fy=12.0, cx=8.3, cy=4.9)
    depth = rng.uniform(0.5, 50, size=(11, 17)).astype(np.float32)
    np.testing.assert_allclose(depth_to_points(depth, cam), cam.backproject(depth.astype(np.float64)), rtol=1e-6)


def test_pack_layout_matches_pointcloud2():
    assert POINT_STEP == 16
    assert [(f.name, f.offset, f.datatype, f.count) for f in POINT_FIELDS] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)
    ]
    depth = np.array([[2.0, 4.0, np.nan], [1.0, 3.0, 5.0]], np.float32)
    conf = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    proj = CloudProjector(CAM)
    data = proj.pack(depth, conf)
    assert data.dtype == np.uint8 and data.size == 2 * 3 * POINT_STEP
    raw = data.tobytes()
    row_step = 3 * POINT_STEP
    # Point (u=1, v=1): bytes at v * row_step + u * point_step.
    x, y, z, i = struct.unpack_from("<4f", raw, 1 * row_step + 1 * POINT_STEP)
    assert (x, y, z) == pytest.approx((0.0, 0.375, 3.0)) and i == pytest.approx(0.4)
    x, y, z, i = struct.unpack_from("<4f", raw, 0 * row_step + 2 * POINT_STEP)
    assert np.isnan([x, y, z]).all() and i == pytest.approx(0.2)
    # The free function gives the same bytes from precomputed points.
    assert pack_xyzi(depth_to_points(depth, CAM), conf).tobytes() == raw


def test_pack_without_intensity_and_shape_checks():
    proj = CloudProjector(CAM)
    data = proj.pack(np.ones((2, 3), np.float32))
    vals = np.frombuffer(data.tobytes(), "<f4").reshape(2, 3, 4)
    assert (vals[..., 3] == 0).all() and (vals[..., 2] == 1).all()
    with pytest.raises(ValueError):
        proj.pack(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError):
        proj.pack(np.ones((2, 3), np.float32), np.ones((3, 3), np.float32))
    with pytest.raises(ValueError):
        pack_xyzi(np.ones((2, 3)))


# ------------------------------------------------------------------ options: decimation, range, rgb

from monother_ros.core.cloud import (  # noqa: E402 - grouped with the tests that use them
    POINT_FIELDS_RGB,
    POINT_STEP_RGB,
    CloudOptions,
    RgbView,
    colour_points,
    pack_rgb,
    unpack_rgb,
)

CAM5 = PinholeCamera(width=5, height=4, fx=2.0, fy=4.0, cx=2.0, cy=1.5)


def read_points_reference(data: bytes, fields, point_step: int, height: int, width: int) -> np.ndarray:
    """sensor_msgs_py.point_cloud2.read_points semantics, written out: a structured dtype from the
    fields (name, offset, FLOAT32 -> '<f4', count 1) with itemsize point_step, over the bytes,
    reshaped to (height, width) for an organised cloud."""
    dtype = np.dtype({"names": [f.name for f in fields], "formats": ["<f4"] * len(fields),
                      "offsets": [f.offset for f in fields], "itemsize": point_step})
    return np.frombuffer(data, dtype=dtype, count=height * width).reshape(height, width)


def test_decimation_keeps_every_nth_row_and_column_at_their_own_pixels():
    depth = np.arange(1, 21, dtype=np.float32).reshape(4, 5)  # z = 1 + v * 5 + u
    proj = CloudProjector(CAM5, CloudOptions(decimation=2))
    assert (proj.height, proj.width) == (2, 3)  # rows 0, 2; columns 0, 2, 4
    pts = proj.points(depth)
    # (u, v) = (4, 2): z = 15, x = (4 - 2) / 2 * 15 = 15, y = (2 - 1.5) / 4 * 15 = 1.875
    np.testing.assert_allclose(pts[1, 2], [15.0, 1.875, 15.0])
    # (0, 0): z = 1, x = -1, y = -0.375
    np.testing.assert_allclose(pts[0, 0], [-1.0, -0.375, 1.0])
    # A decimated cloud is the full cloud's subset.
    np.testing.assert_array_equal(pts, depth_to_points(depth, CAM5)[::2, ::2])
    conf = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    got = np.frombuffer(proj.pack(depth, conf).tobytes(), "<f4").reshape(2, 3, 4)
    np.testing.assert_array_equal(got[..., :3], pts)
    np.testing.assert_array_equal(got[..., 3], conf[::2, ::2])
    # decimation 3 on 4 x 5: rows 0, 3; columns 0, 3
    third = CloudProjector(CAM5, CloudOptions(decimation=3))
    assert (third.height, third.width) == (2, 2)


def test_max_range_is_the_euclidean_distance_from_the_optical_centre():
    depth = np.array([[2.0, 4.0, np.nan], [1.0, 3.0, 5.0]], np.float32)
    # (0, 0): (-1, -0.25, 2) -> range sqrt(1 + 0.0625 + 4) = 2.25
    for limit, kept in ((2.26, True), (2.24, False)):
        pts = CloudProjector(CAM, CloudOptions(max_range_m=limit)).points(depth)
        assert bool(np.isfinite(pts[0, 0]).all()) == kept
        # z = 1 at (0, 1): (-0.5, 0.125, 1): range 1.125 < limit: always kept
        assert np.isfinite(pts[1, 0]).all()
        # z = 5 at (2, 1): far beyond: NaN
        assert np.isnan(pts[1, 2]).all()
    data = CloudProjector(CAM, CloudOptions(max_range_m=2.24)).pack(depth, np.ones((2, 3), np.float32))
    vals = np.frombuffer(data.tobytes(), "<f4").reshape(2, 3, 4)
    assert np.isnan(vals[0, 0, :3]).all() and vals[0, 0, 3] == 1.0


def test_options_are_validated():
    for bad in (dict(decimation=0), dict(decimation=1.5), dict(decimation=True), dict(max_range_m=-1.0),
                dict(max_range_m=math.inf)):
        with pytest.raises(ValueError):
            CloudOptions(**bad)


def test_pack_rgb_convention():
    # PCL / sensor_msgs_py: 0x00RRGGBB in a float32 field.
    assert int(pack_rgb(np.array([255, 0, 0], np.uint8))) == 0xFF0000
    assert int(pack_rgb(np.array([1, 2, 3], np.uint8))) == (1 << 16) | (2 << 8) | 3
    packed = pack_rgb(np.array([[12, 34, 56]], np.uint8))
    np.testing.assert_array_equal(unpack_rgb(packed.view(np.float32)), [[12, 34, 56]])


RGB_CAM = PinholeCamera(width=4, height=3, fx=2.0, fy=2.0, cx=1.5, cy=1.0)


def rgb_image() -> np.ndarray:
    rows, cols = np.mgrid[0:3, 0:4]
    return np.stack([10 * rows + cols, 100 + rows, 200 + cols], axis=-1).astype(np.uint8)


def test_colour_points_hand_computed():
    T = np.eye(4)
    T[0, 3] = 0.5  # p_rgb = p_thermal + (0.5, 0, 0)
    view = RgbView(rgb_image(), RGB_CAM, T)
    points = np.array([[
        [-1.0, -0.25, 2.0],   # -> (-0.5, -0.25, 2): u = 2 * -0.25 + 1.5 = 1.0, v = 2 * -0.125 + 1 = 0.75 -> (1, 1)
        [0.5, 0.9, 1.0],      # -> (1.0, 0.9, 1): u = 3.5 -> floor(4.0) = 4: outside (width 4) -> black
        [0.0, 0.0, -1.0],     # behind the RGB camera -> black
        [np.nan, np.nan, np.nan],  # invalid -> black
        [0.2, -0.45, 1.0],    # -> (0.7, -0.45, 1): u = 2.9 -> 3, v = 0.1 -> 0
    ]])
    got = colour_points(points, view)
    assert got.dtype == np.uint32 and got.shape == (1, 5)
    np.testing.assert_array_equal(unpack_rgb(got)[0], [[11, 101, 201], [0, 0, 0], [0, 0, 0], [0, 0, 0], [3, 100, 203]])


def test_rgb_cloud_layout_decodes_like_sensor_msgs_py():
    assert POINT_STEP_RGB == 20
    assert [(f.name, f.offset, f.datatype, f.count) for f in POINT_FIELDS_RGB] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1), ("rgb", 16, 7, 1)
    ]
    depth = np.array([[2.0, 4.0, np.nan], [1.0, 3.0, 5.0]], np.float32)
    conf = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    T = np.eye(4)
    T[0, 3] = 0.5
    view = RgbView(rgb_image(), RGB_CAM, T)
    proj = CloudProjector(CAM, CloudOptions(rgb=True))
    assert proj.fields == POINT_FIELDS_RGB and proj.point_step == 20
    data = proj.pack(depth, conf, rgb=view).tobytes()
    assert len(data) == 2 * 3 * 20
    cloud = read_points_reference(data, proj.fields, proj.point_step, 2, 3)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    np.testing.assert_array_equal(xyz, depth_to_points(depth, CAM))
    np.testing.assert_array_equal(cloud["intensity"], conf)
    np.testing.assert_array_equal(cloud["rgb"].view(np.uint32), colour_points(xyz, view))
    # Point (0, 0) = (-1, -0.25, 2): the colour of RGB pixel (row 1, column 1), by hand above.
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"][0, 0]), [11, 101, 201])
    # Byte level: the rgb of point (u=0, v=0) is the uint32 at offset 16.
    assert struct.unpack_from("<I", data, 16)[0] == (11 << 16) | (101 << 8) | 201
    # Without an RGB frame: black everywhere, the rest unchanged.
    black = read_points_reference(proj.pack(depth, conf).tobytes(), proj.fields, 20, 2, 3)
    assert (black["rgb"].view(np.uint32) == 0).all()
    np.testing.assert_array_equal(black["z"], cloud["z"])
    # The 16-byte layout decodes the same way.
    plain = CloudProjector(CAM)
    xyzi = read_points_reference(plain.pack(depth, conf).tobytes(), plain.fields, 16, 2, 3)
    np.testing.assert_array_equal(xyzi["x"], cloud["x"])


def test_rgb_view_checks():
    with pytest.raises(ValueError, match="uint8"):
        RgbView(np.zeros((3, 4, 3), np.float32), RGB_CAM, np.eye(4))
    with pytest.raises(ValueError, match="but the image is"):
        RgbView(np.zeros((4, 4, 3), np.uint8), RGB_CAM, np.eye(4))
    with pytest.raises(ValueError, match="finite 4x4"):
        RgbView(rgb_image(), RGB_CAM, np.full((4, 4), np.nan))

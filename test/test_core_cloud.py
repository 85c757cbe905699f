"""Depth -> points against hand-computed points; PointCloud2 byte layout; NaN handling."""
from __future__ import annotations

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

"""Ground truth for evaluation: depth image decoding, LiDAR z-buffer projection, stamp matching, and the
projection checked against the simulator's rendered depth."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.errors import BagError
from monother_ros.eval.ground_truth import StampMatcher, depth_image_to_metres, project_points


def test_depth_image_to_metres_encodings():
    f = np.array([[1.5, 0.0, np.nan, -2.0, np.inf]], np.float32)
    out = depth_image_to_metres(f, "32FC1")
    assert out[0, 0] == 1.5 and np.isnan(out[0, 1:]).all()
    mm = np.array([[1500, 0, 65535]], np.uint16)
    out = depth_image_to_metres(mm, "16UC1")
    assert out.dtype == np.float32 and out[0, 0] == pytest.approx(1.5) and np.isnan(out[0, 1])
    assert out[0, 2] == pytest.approx(65.535)
    with pytest.raises(BagError, match="not supported"):
        depth_image_to_metres(mm, "rgb8")


def test_depth_image_to_metres_clean_input_is_a_read_only_view():
    clean = np.array([[1.5, np.nan, 80.0], [0.25, 3.0, np.nan]], np.float32)
    out = depth_image_to_metres(clean, "32FC1")
    assert np.shares_memory(out, clean) and not out.flags.writeable
    np.testing.assert_array_equal(out, clean)
    assert clean.flags.writeable  # the caller's array is untouched
    for bad in (-0.0, 0.0, np.inf, -1.0):  # any value to invalidate: a new array, input untouched
        dirty = clean.copy()
        dirty[1, 1] = bad
        out = depth_image_to_metres(dirty, "32FC1")
        assert not np.shares_memory(out, dirty) and np.isnan(out[1, 1]) and dirty[1, 1] == bad
        np.testing.assert_array_equal(np.delete(out.ravel(), 4), np.delete(clean.ravel(), 4))
    out = depth_image_to_metres(np.full((2, 2), np.nan, np.float32), "32FC1")
    assert np.isnan(out).all()
    out = depth_image_to_metres(np.array([[1000, 2]], np.uint16), "mono16")  # no zero: no masking pass
    np.testing.assert_array_equal(out, np.array([[1000, 2]], np.float32) * np.float32(1e-3))


def test_project_points_nearest_return_wins_and_drops_outside():
    cam = PinholeCamera(8, 6, 4.0, 4.0, 3.5, 2.5)
    pts = np.array([
        [0.0, 0.0, 5.0],      # lands on (round(3.5), round(2.5)) = (4, 2) (numpy rounds half to even)
        [0.0, 0.0, 3.0],      # same pixel, nearer: wins
        [0.0, 0.0, 9.0],      # same pixel, farther
        [0.0, 0.0, -3.0],     # behind the camera
        [100.0, 0.0, 1.0],    # outside the image
        [1.0, 0.5, 2.0],      # u = 4*0.5+3.5 = 5.5 -> 6, v = 4*0.25+2.5 = 3.5 -> 4
        [np.nan, 0.0, 2.0],   # NaN row
    ])
    out = project_points(pts, cam, np.eye(4))
    assert out.shape == (6, 8) and out.dtype == np.float32
    assert out[2, 4] == 3.0 and out[4, 6] == 2.0
    assert np.count_nonzero(np.isfinite(out)) == 2


def test_project_points_applies_the_extrinsic():
    cam = PinholeCamera(8, 6, 4.0, 4.0, 3.5, 2.5)
    # Points in a LiDAR-like frame (x forward): T_cam_lidar maps x -> z.
    T_cam_lidar = se3.make_transform(se3.OPTICAL_FROM_BODY_ROTATION, np.array([0.0, 0.0, 0.5]))
    out = project_points(np.array([[4.0, 0.0, 0.0]]), cam, T_cam_lidar)
    assert out[2, 4] == pytest.approx(4.5)


def test_stamp_matcher_nearest_within_tolerance_streaming():
    m: StampMatcher = StampMatcher(tolerance_ns=5)
    m.add_frame(0, "f0")
    m.add_truth(1, "g1")
    assert list(m.ready()) == []  # a nearer truth could still come
    m.add_frame(33, "f33")
    m.add_frame(66, "f66")
    m.add_truth(40, "g40")  # beyond f0's window: f0 decided; f33 still open (window up to 38 < 40: decided)
    got = list(m.ready())
    assert got == [("f0", "g1", 1), ("f33", None, None)]
    m.add_truth(64, "g64")
    m.add_truth(67, "g67")
    assert list(m.ready()) == []
    assert list(m.finish()) == [("f66", "g67", 67)]
    assert m.pending == 0


def test_stamp_matcher_tie_goes_to_earlier_and_bounded_memory():
    m: StampMatcher = StampMatcher(tolerance_ns=10)
    m.add_frame(100, "f")
    m.add_truth(95, "early")
    m.add_truth(105, "late")
    assert list(m.finish()) == [("f", "early", 95)]
    for k in range(500):  # truth with no frame needing it is not hoarded
        m.add_truth(1000 + k, k)
    assert len(m._truth) <= StampMatcher.MAX_UNCLAIMED


def test_lidar_projection_equals_simulator_depth_away_from_edges():
    from numpy.lib.stride_tricks import sliding_window_view

    from monother_ros.sim.rig import SimRig

    rig = SimRig(5, "day", "urban")
    cam = rig.thermal_camera.resized(320, 256)
    t = 0.425
    gt = rig.render_thermal(t, camera=cam, noise=False).depth
    points = rig.lidar_scan(t, noise=False)
    T_thermal_lidar = se3.invert(rig.T_base_thermal) @ rig.T_base_lidar
    lidar = project_points(points, cam, T_thermal_lidar)
    # Away from edges: the rendered depth is locally smooth (3x3 spread < 2 %).
    win = sliding_window_view(np.pad(gt, 1, mode="edge"), (3, 3))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows (sky)
        spread = np.nanmax(win, axis=(2, 3)) - np.nanmin(win, axis=(2, 3))
        smooth = np.isfinite(spread) & (spread < 0.02 * gt)
    sel = np.isfinite(lidar) & np.isfinite(gt) & smooth
    assert sel.sum() > 500
    rel = np.abs(lidar[sel] - gt[sel]) / gt[sel]
    # Sub-pixel rounding only: the projected return equals the rendered depth at that pixel.
    assert np.median(rel) < 2e-3
    assert np.mean(rel < 0.01) > 0.9
    # The rest (~5 %, scene dependent) is parallax (the LiDAR sits 0.5 m higher and sees background the
    # camera cannot): such returns are behind the camera's surface, never in front of it.
    off = rel >= 0.01
    assert np.all(lidar[sel][off] > gt[sel][off])
    # A wrong extrinsic (the inverse) does not agree.
    wrong = project_points(points, cam, se3.invert(T_thermal_lidar))
    sel_w = np.isfinite(wrong) & np.isfinite(gt) & smooth
    if sel_w.sum():
        assert np.mean(np.abs(wrong[sel_w] - gt[sel_w]) / gt[sel_w] < 0.01) < 0.5

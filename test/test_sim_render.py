"""Simulated rig images: shapes, determinism, sensor noise, scenario and family statistics, timing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from monother_ros.sim.rig import COUNTS_PER_K, THERMAL_NOISE_COUNTS, SimRig

T = 2.0


def _small(rig: SimRig):
    return rig.thermal_camera.resized(320, 256), rig.rgb_camera.resized(640, 360)


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


@pytest.fixture(scope="module")
def renders() -> dict:
    """Clean and noisy small renders of one seed at one time for every scenario (same geometry)."""
    out = {}
    for scenario in ("day", "night", "fog"):
        rig = SimRig(4, scenario, "urban")
        th_cam, rgb_cam = _small(rig)
        out[scenario] = {
            "rgb": rig.render_rgb(T, rgb_cam, noise=False), "rgb_noisy": rig.render_rgb(T, rgb_cam),
            "th": rig.render_thermal(T, th_cam, noise=False), "th_noisy": rig.render_thermal(T, th_cam),
        }
    return out


def test_full_size_outputs() -> None:
    rig = SimRig(0, "day", "urban")
    th = rig.render_thermal(1.0)
    rgb = rig.render_rgb(1.0)
    assert th.counts.shape == (512, 640) and th.counts.dtype == np.uint16
    assert th.depth.shape == (512, 640) and th.depth.dtype == np.float32
    assert rgb.rgb.shape == (720, 1280, 3) and rgb.rgb.dtype == np.uint8
    assert rgb.depth.shape == (720, 1280) and rgb.depth.dtype == np.float32
    for d in (th.depth, rgb.depth):
        assert np.isnan(d[0]).mean() > 0.1  # the top row sees some sky (NaN), even in the street canyon
        assert np.nanmax(d) <= 80.0 and np.nanmin(d) > 1.0
        assert not np.isnan(d[-1]).any()  # the bottom row sees the road
    assert 5000 < th.counts.mean() < 12000 and th.counts.std() > 100


def test_cameras_and_extrinsics_differ_as_specified() -> None:
    rig = SimRig(0, "day", "urban")
    assert (rig.thermal_camera.width, rig.thermal_camera.height) == (640, 512)
    assert (rig.rgb_camera.width, rig.rgb_camera.height) == (1280, 720)
    assert abs(rig.thermal_camera.hfov_deg - 50) < 2 and abs(rig.rgb_camera.hfov_deg - 70) < 2
    baseline = np.linalg.norm(rig.T_rgb_thermal[:3, 3])
    angle = math.degrees(math.acos((np.trace(rig.T_rgb_thermal[:3, :3]) - 1) / 2))
    assert 0.02 < baseline < 0.12 and 1.0 <= angle <= 2.0
    np.testing.assert_allclose(rig.T_base_rgb @ rig.T_rgb_thermal, rig.T_base_thermal, atol=1e-12)
    # Optical frames (REP 103): the optical z axis points forward (base x), optical y down.
    for T in (rig.T_base_thermal, rig.T_base_rgb):
        assert T[0, 2] > 0.99 and T[2, 1] < -0.99
    assert rig.T_base_lidar[2, 3] > rig.T_base_thermal[2, 3]


def test_deterministic_and_seeded() -> None:
    a, b, c = SimRig(9, "night", "campus"), SimRig(9, "night", "campus"), SimRig(10, "night", "campus")
    cam = a.thermal_camera.resized(160, 128)
    fa, fb, fc = a.render_thermal(1.5, cam), b.render_thermal(1.5, cam), c.render_thermal(1.5, cam)
    np.testing.assert_array_equal(fa.counts, fb.counts)
    np.testing.assert_array_equal(fa.depth, fb.depth)
    assert not np.array_equal(fa.depth, fc.depth)
    rgb_cam = a.rgb_camera.resized(320, 180)
    np.testing.assert_array_equal(a.render_rgb(1.5, rgb_cam).rgb, b.render_rgb(1.5, rgb_cam).rgb)
    np.testing.assert_array_equal(a.lidar_scan(1.5), b.lidar_scan(1.5))


def test_thermal_noise_models() -> None:
    rig = SimRig(2, "day", "urban")
    cam = rig.thermal_camera.resized(320, 256)
    clean = rig.render_thermal(1.0, cam, noise=False).counts.astype(np.float64)
    noisy = rig.render_thermal(1.0, cam).counts.astype(np.float64)
    temporal = (noisy - clean).std()
    assert 0.6 * THERMAL_NOISE_COUNTS < temporal < 1.6 * THERMAL_NOISE_COUNTS
    # Temporal noise changes from frame to frame; the fixed pattern is seeded per camera and constant.
    other = rig.render_thermal(1.0 + 1 / 30, cam).counts.astype(np.float64) - rig.render_thermal(
        1.0 + 1 / 30, cam, noise=False).counts
    assert abs(np.corrcoef((noisy - clean).ravel(), other.ravel())[0, 1]) < 0.1
    gain, offset = rig._thermal_fpn(cam)
    gain2, offset2 = SimRig(2, "night", "campus")._thermal_fpn(cam)
    np.testing.assert_array_equal(gain, gain2)
    np.testing.assert_array_equal(offset, offset2)
    assert not np.array_equal(offset, SimRig(3, "day", "urban")._thermal_fpn(cam)[1])
    assert offset.std() > 5 and np.abs(offset.mean(axis=0)).std() > 2  # pixel and column stripes
    # Vignetting: with the scene removed (same counts everywhere) corners read lower than the centre.
    r2 = rig._vignetting_r2(cam)
    assert r2[0, 0] > 0.5 and r2[128, 160] < 1e-3


def test_night_thermal_keeps_contrast_and_changes_from_day(renders) -> None:
    night = renders["night"]["th_noisy"].counts.astype(np.float64)
    lo, mid, hi = np.percentile(night, [2, 50, 99.5])
    assert (hi - lo) / COUNTS_PER_K > 10  # sky to warm objects
    assert (hi - mid) / COUNTS_PER_K > 6  # warm people / engines / lamps stand out
    day = renders["day"]["th"].counts.astype(np.float64)
    valid = np.isfinite(renders["day"]["th"].depth)
    # Not a global offset / gain: the pattern of contrast itself changes between day and night.
    assert np.corrcoef(day[valid], night[valid])[0, 1] < 0.9
    # By day the sun-heated road is much warmer than the sky-lit walls at the image edges.
    assert (np.median(day[-40:]) - np.median(day[valid])) > 0


def test_night_rgb_dark_and_noisy(renders) -> None:
    day_clean, night_clean = _lum(renders["day"]["rgb"].rgb), _lum(renders["night"]["rgb"].rgb)
    day_noise = (_lum(renders["day"]["rgb_noisy"].rgb) - day_clean).std()
    night_noise = (_lum(renders["night"]["rgb_noisy"].rgb) - night_clean).std()
    assert night_clean.mean() < 0.45 * day_clean.mean()
    assert np.median(night_clean) < 40
    assert day_clean.mean() / day_noise > 4 * (night_clean.mean() / night_noise)
    # A few lit areas (lamps, windows, headlights) are bright.
    assert 0.0005 < (night_clean > 200).mean() < 0.1


def test_fog_contrast_falls_with_distance(renders) -> None:
    depth = renders["day"]["rgb"].depth
    near = (depth > 3) & (depth < 12)
    far = (depth > 35) & (depth < 80)
    assert near.sum() > 1000 and far.sum() > 1000
    day, fog = _lum(renders["day"]["rgb"].rgb), _lum(renders["fog"]["rgb"].rgb)
    ratio_near = fog[near].std() / day[near].std()
    ratio_far = fog[far].std() / day[far].std()
    assert ratio_far < 0.5 * ratio_near and ratio_far < 0.4
    assert fog[far].std() < fog[near].std()


def test_families_have_different_statistics() -> None:
    stats = {}
    for family in ("urban", "campus"):
        rig = SimRig(1, "day", family)
        cam = rig.thermal_camera.resized(160, 128)
        depths = np.stack([rig.render_thermal(t, cam, noise=False).depth for t in (0.5, 3.0, 6.0)])
        stats[family] = (np.isnan(depths[:, :64]).mean(), np.nanmean(depths[:, 32:64]))
    # The campus is open (more sky above the horizon); the urban canyon is closed by tall buildings.
    assert stats["campus"][0] > stats["urban"][0] + 0.1, stats


def test_schedule_rates_and_jitter() -> None:
    rig = SimRig(0)
    events = rig.schedule(10.0)
    kinds = [e.kind for e in events]
    assert (kinds.count("thermal"), kinds.count("rgb"), kinds.count("lidar")) == (300, 200, 100)
    stamps = [e.stamp_ns for e in events]
    assert stamps == sorted(stamps) and all(0 <= s < 10**10 for s in stamps)
    th = np.array([e.stamp_ns for e in events if e.kind == "thermal"])
    rgb = np.array([e.stamp_ns for e in events if e.kind == "rgb"])
    np.testing.assert_allclose(np.diff(th), 1e9 / 30, atol=1)
    assert np.diff(rgb).std() > 1e6 and abs(np.diff(rgb).mean() - 5e7) < 1e6
    assert np.min(np.abs(rgb[:, None] - th[None, :])) > 4e6  # never synchronised
    assert rig.schedule(0.0) == []
    with pytest.raises(ValueError):
        rig.schedule(-1.0)
    assert rig.schedule(1.0)[0].t == 0.0


def test_trajectory_smooth_and_plausible() -> None:
    rig = SimRig(0, "day", "urban")
    ts = np.arange(0.0, 20.0, 0.01)
    pos = np.array([rig.pose(t)[:3, 3] for t in ts])
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) / 0.01
    assert 3.0 < speed.min() and speed.max() < 8.5
    accel = np.diff(speed) / 0.01
    assert np.abs(accel).max() < 3.0  # no jumps
    yaw = np.unwrap([math.atan2(rig.pose(t)[1, 0], rig.pose(t)[0, 0]) for t in ts])
    assert np.abs(yaw).max() < math.radians(15) and np.abs(np.diff(yaw) / 0.01).max() < math.radians(20)


def test_scale_shorthand_renders_resized_camera() -> None:
    rig = SimRig(0, "day", "urban")
    half = rig.render_thermal(1.0, scale=0.5, noise=False)
    same = rig.render_thermal(1.0, rig.thermal_camera.resized(320, 256), noise=False)
    assert half.counts.shape == (256, 320)
    np.testing.assert_array_equal(half.counts, same.counts)
    assert rig.render_rgb(1.0, scale=0.25).rgb.shape == (180, 320, 3)
    with pytest.raises(ValueError):
        rig.render_rgb(1.0, rig.rgb_camera, scale=0.5)


def test_bad_rig_arguments() -> None:
    with pytest.raises(ValueError, match="scenario"):
        SimRig(0, "dusk", "urban")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="family"):
        SimRig(0, "day", "forest")  # type: ignore[arg-type]


def test_ground_shadows_follow_the_sun() -> None:
    """Ground right behind a tall building (away from the sun) is shaded; shadows exist only by day."""
    from monother_ros.sim.scene import COL_CX, COL_CY, COL_HX, COL_HY, COL_Z1
    from monother_ros.sim.shadows import GroundShadows

    rig = SimRig(0, "day", "urban")
    shadows = rig._shadows
    assert isinstance(shadows, GroundShadows)
    assert SimRig(0, "night", "urban")._shadows is None and SimRig(0, "fog", "urban")._shadows is None
    seg = rig.scene.segment(3)
    k = int(np.argmax(seg.params[:, COL_Z1]))  # the tallest building of the segment
    cx, cy, hx, hy, h = seg.params[k, [COL_CX, COL_CY, COL_HX, COL_HY, COL_Z1]]
    sun = np.array(rig.params.sun)
    away = -sun[:2] / np.linalg.norm(sun[:2])
    reach = 0.5 * h * np.linalg.norm(sun[:2]) / sun[2]  # half way along its shadow
    # Start from the footprint edge facing away from the sun.
    edge = np.array([cx, cy]) + away * (abs(away[0]) * hx + abs(away[1]) * hy)
    shaded = edge + away * reach
    value = shadows.sunlit(np.array([shaded[0]], np.float32), np.array([shaded[1]], np.float32))
    assert value[0] < 0.05
    frac = shadows.segment_map(3).mean()  # part of the ground is lit, part shaded
    assert 0.05 < frac < 0.97


def test_moving_objects_move_smoothly_and_exist_at_any_time() -> None:
    from monother_ros.sim.scene import COL_CX, COL_CY, FLOWS, Scene

    scene = Scene(7, "urban")
    a = _moving_xy(scene, 0.0)
    b = _moving_xy(scene, 0.5)
    # Same objects (same order, same y) moved by their flow's speed; static objects do not move.
    assert a.shape == b.shape and len(a) > 10
    shifts = b[:, 0] - a[:, 0]
    np.testing.assert_allclose(a[:, 1], b[:, 1])
    speeds = {round(f.vx * 0.5, 6) for f in FLOWS["urban"]}
    assert set(np.round(shifts, 6)) <= speeds and len(set(np.round(shifts, 6))) >= 3
    # Far in the future the flows still populate the street around any x.
    late = scene.primitives_near(500.0, 700.0, t=3600.0)
    static = scene.primitives_near(500.0, 700.0)
    assert len(late) > len(static)
    moving = late.params[len(static):]
    # (whole 100 m flow segments are returned, like static segments)
    assert np.all((moving[:, COL_CX] > 500.0 - 106.0) & (moving[:, COL_CX] < 700.0 + 106.0))
    assert np.any((moving[:, COL_CX] > 500.0) & (moving[:, COL_CX] < 700.0))
    assert np.all(np.abs(moving[:, COL_CY]) > 1.0)  # never in our lane (y < 0 near -1.75 is kept free)


def _moving_xy(scene, t: float) -> np.ndarray:
    from monother_ros.sim.scene import COL_CX, COL_CY, Primitives

    # A window that loads the same flow segments at both times (shifts stay < 5 m).
    moving = Primitives.concat(scene.moving_at(20.0, 280.0, t))
    return moving.params[:, [COL_CX, COL_CY]]

"""Geometry of the simulated rig: the two cameras' ground truth, the renderer's culling and the LiDAR agree."""
from __future__ import annotations

import numpy as np
import pytest

from monother_ros.core.se3 import invert, make_transform, rotation_about_axis, transform_points
from monother_ros.sim.rig import SimRig

T_CHECK = 2.0


@pytest.fixture(scope="module")
def rig() -> SimRig:
    return SimRig(3, "day", "urban")


def _cast_z(rig: SimRig, t: float, T_world_cam: np.ndarray, rays_cam: np.ndarray) -> np.ndarray:
    """z-depth along camera rays (N, 3) with z = 1, cast without any culling."""
    dirs = rays_cam @ T_world_cam[:3, :3].T
    tt, _ = rig.cast_rays(t, T_world_cam[:3, 3], dirs)
    return np.where(np.isfinite(tt), tt, np.nan)


def _thermal_to_rgb(rig: SimRig, depth: np.ndarray, cam, T_rgb_thermal: np.ndarray):
    pts = cam.backproject(depth.astype(np.float64))
    valid = np.isfinite(depth)
    p_rgb = transform_points(T_rgb_thermal, pts[valid])
    uv, z = rig.rgb_camera.project(p_rgb)
    return uv, z


def _consistent_fraction(rig: SimRig, T_rgb_thermal: np.ndarray, small) -> tuple[float, float, int]:
    """Back-project every pixel of a thermal render, move it to the RGB camera with ``T_rgb_thermal`` and
    cast a ray from the RGB camera through the projected sub-pixel position; returns (fraction agreeing
    within 1e-3, max relative error among those, number of pixels landing in the RGB image)."""
    frame = rig.render_thermal(T_CHECK, small, noise=False)
    uv, z = _thermal_to_rgb(rig, frame.depth, small, T_rgb_thermal)
    cam = rig.rgb_camera
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= cam.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= cam.height - 0.5)
    uv, z = uv[inside], z[inside]
    rays = np.stack(((uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy, np.ones(len(uv))), axis=1)
    T_world_rgb = rig.pose(T_CHECK) @ rig.T_base_rgb
    z_cast = _cast_z(rig, T_CHECK, T_world_rgb, rays)
    rel = np.abs(z_cast - z) / z
    ok = rel < 1e-3  # NaN (nothing hit) counts as inconsistent
    return float(ok.mean()), float(np.nanmax(np.where(ok, rel, np.nan))), int(inside.sum())


def test_thermal_depth_reprojects_onto_rgb_depth(rig: SimRig) -> None:
    small = rig.thermal_camera.resized(160, 128)
    frac, worst, n = _consistent_fraction(rig, rig.T_rgb_thermal, small)
    assert n > 0.9 * 160 * 128 * 0.5  # most valid thermal pixels land in the wider RGB view
    # Pixels seen by both cameras (not occluded in the RGB view) agree to 1e-3; they are the vast majority.
    assert 0.97 < frac < 1.0, frac  # < 1: the views differ, some thermal pixels are occluded for the RGB camera
    assert worst < 1e-3


def test_wrong_extrinsic_is_detected(rig: SimRig) -> None:
    """The same check with the extrinsic off by 1 cm / 0.3 deg fails for most pixels (the test can fail).

    (The error must leave no plane invariant: a yaw or an in-plane shift alone would keep the ground
    consistent.)"""
    small = rig.thermal_camera.resized(160, 128)
    bad = make_transform(rotation_about_axis(np.array([1.0, 0.0, 0.0]), np.radians(0.3)), np.array([0.01, 0.01, 0.01]))
    frac, _, _ = _consistent_fraction(rig, bad @ rig.T_rgb_thermal, small)
    assert frac < 0.3, frac
    frac_inverted, _, _ = _consistent_fraction(rig, invert(rig.T_rgb_thermal), small)
    assert frac_inverted < 0.3, frac_inverted


def test_full_resolution_images_agree(rig: SimRig) -> None:
    """Full-size thermal GT depth against the full-size RGB GT depth image: inverse depth is affine in the
    image over a plane, so it is interpolated bilinearly inside 2x2 cells that pass a planarity check."""
    th = rig.render_thermal(T_CHECK, noise=False)
    rgb = rig.render_rgb(T_CHECK, noise=False)
    uv, z = _thermal_to_rgb(rig, th.depth, rig.thermal_camera, rig.T_rgb_thermal)
    inv = 1.0 / rgb.depth.astype(np.float64)
    u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (u0 >= 0) & (v0 >= 0) & (u0 < rgb.depth.shape[1] - 1) & (v0 < rgb.depth.shape[0] - 1)
    u0, v0, uv, z = u0[inside], v0[inside], uv[inside], z[inside]
    a, b = inv[v0, u0], inv[v0, u0 + 1]
    c, d = inv[v0 + 1, u0], inv[v0 + 1, u0 + 1]
    # Planar cells: the two diagonals' sums agree (an affine function has a + d = b + c).
    planar = np.abs((a + d) - (b + c)) < 1e-4 * np.abs(a + d)
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    interp = (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv
    rel = np.abs(1.0 / interp - z) / z
    usable = planar & np.isfinite(rel)
    assert usable.sum() > 0.6 * len(z)
    agree = rel[usable] < 1e-3
    assert agree.mean() > 0.97, agree.mean()


@pytest.mark.parametrize("camera", ["thermal", "rgb"])
def test_rendered_depth_matches_unculled_ray_cast(rig: SimRig, camera: str) -> None:
    """Screen-space culling never drops an object: z-depth at random pixel centres equals a ray cast
    against every primitive."""
    cam = rig.thermal_camera if camera == "thermal" else rig.rgb_camera
    T_world_cam = rig.pose(T_CHECK) @ (rig.T_base_thermal if camera == "thermal" else rig.T_base_rgb)
    render = rig.render_thermal if camera == "thermal" else rig.render_rgb
    depth = render(T_CHECK, noise=False).depth
    rng = np.random.default_rng(0)
    u = rng.integers(0, cam.width, 4000)
    v = rng.integers(0, cam.height, 4000)
    rays = np.stack(((u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(len(u))), axis=1)
    z_cast = _cast_z(rig, T_CHECK, T_world_cam, rays)
    z_cast[z_cast > 80.0] = np.nan
    z_img = depth[v, u]
    np.testing.assert_array_equal(np.isnan(z_img), np.isnan(z_cast))
    both = np.isfinite(z_img)
    # float32 rays built two ways differ in the last bits; at grazing incidence that is ~1e-4 in depth.
    np.testing.assert_allclose(z_img[both], z_cast[both], rtol=2e-4)


def test_lidar_points_agree_with_thermal_ground_truth(rig: SimRig) -> None:
    th = rig.render_thermal(T_CHECK, noise=False)
    pts = rig.lidar_scan(T_CHECK)
    assert pts.dtype == np.float32 and pts.shape[1] == 4 and len(pts) > 5000
    T_thermal_lidar = invert(rig.T_base_thermal) @ rig.T_base_lidar
    p = transform_points(T_thermal_lidar, pts[:, :3].astype(np.float64))
    uv, z = rig.thermal_camera.project(p)
    u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    inside = (z > 0.5) & (u >= 1) & (v >= 1) & (u < 639) & (v < 511)
    u, v, z = u[inside].astype(int), v[inside].astype(int), z[inside]
    d = th.depth
    # Away from depth edges: the 3x3 neighbourhood is within 2 % of its centre.
    nb = np.stack([d[v + dv, u + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])
    smooth = np.all(np.abs(nb - d[v, u]) < 0.02 * d[v, u], axis=0)
    assert smooth.sum() > 1000
    rel = np.abs(d[v, u][smooth] - z[smooth]) / z[smooth]
    # Points are rounded to the nearest pixel (up to half a pixel off) and carry 1 cm range noise.
    assert np.median(rel) < 0.005
    assert np.quantile(rel, 0.95) < 0.03

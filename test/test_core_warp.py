"""Warping tests with analytic truth: ray-cast planes and a box seen by two different cameras."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monother_ros.core import se3
from monother_ros.core.warp import (
    OUT_OF_IMAGE,
    backward_warp,
    backward_warp_np,
    project_pixels,
    scale_intrinsics,
    splat_depth_np,
    warp_depth,
    warp_depth_np,
)


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# Thermal camera is the world frame. RGB: different size and intrinsics, offset and slightly rotated.
K_T = _K(70.0, 70.0, 47.3, 35.6)
HW_T = (72, 96)
K_R = _K(55.0, 56.0, 39.1, 30.2)
HW_R = (60, 80)
T_RGB_T = se3.make_transform(
    se3.rotation_about_axis(np.array([0.2, 1.0, 0.1]), math.radians(2.0)), np.array([-0.12, 0.03, 0.02])
)

# Box (axis-aligned in the thermal frame) standing on a ground plane y = 1.4 m (y down).
BOX_MIN = np.array([-1.0, -0.6, 5.0])
BOX_MAX = np.array([0.6, 1.4, 6.5])
GROUND_Y = 1.4
WALL_Z = 14.0  # a back wall so that every ray hits something


def _raycast(K: np.ndarray, hw: tuple[int, int], T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-depth (H, W) in the camera and an id (H, W) of the plane hit (per box face)."""
    h, w = hw
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_c = np.stack((u, v, np.ones_like(u)), -1) @ np.linalg.inv(K).T  # z = 1 in the camera
    R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays_c @ R.T  # world directions; parameter s along the ray equals camera z
    best = np.full((h, w), np.inf)
    ident = np.full((h, w), -1)
    # Planes: (axis, value, id, bounds on the other axes or None)
    def consider(s: np.ndarray, ok: np.ndarray, pid: int) -> None:
        nonlocal best, ident
        better = ok & (s > 1e-6) & (s < best)
        best = np.where(better, s, best)
        ident = np.where(better, pid, ident)

    with np.errstate(divide="ignore", invalid="ignore"):
        s = (GROUND_Y - o[1]) / d[..., 1]
        consider(s, np.isfinite(s), 0)
        s = (WALL_Z - o[2]) / d[..., 2]
        consider(s, np.isfinite(s), 1)
        for axis in range(3):
            for k, bound in enumerate((BOX_MIN[axis], BOX_MAX[axis])):
                s = (bound - o[axis]) / d[..., axis]
                p = o + d * s[..., None]
                ok = np.isfinite(s)
                for other in range(3):
                    if other != axis:
                        ok &= (p[..., other] >= BOX_MIN[other]) & (p[..., other] <= BOX_MAX[other])
                consider(s, ok, 2 + 2 * axis + k)
    return best, ident


@pytest.fixture(scope="module")
def scene():
    T_t_rgb = se3.invert(T_RGB_T)
    depth_t, id_t = _raycast(K_T, HW_T, np.eye(4))
    depth_r, id_r = _raycast(K_R, HW_R, T_t_rgb)
    return depth_t, id_t, depth_r, id_r


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))[None, None]


def _same_surface_mask(
    grid: torch.Tensor,
    id_src: np.ndarray,
    id_dst: np.ndarray,
    depth_src: np.ndarray,
    max_spread: float = 0.06,
    planar_tol: float = 1e-4,
) -> np.ndarray:
    """dst pixels whose bilinear taps in src lie on the dst pixel's surface, one plane, smoothly.

    * the four taps see the primitive the dst pixel sees (non-occluded, not across an edge);
    * inverse depth, which is affine in (u, v) on a plane, has second differences below
      ``planar_tol`` (relative) in the 4x4 window around the taps: one plane, not a crease between
      two faces of one primitive;
    * bilinear interpolation of depth (the reference's sampling) is exact only where depth is affine
      in the pixel coordinates; on a plane it is 1/affine, so the error grows like spread^2/8 where
      spread is the relative depth change between taps (the ground near the horizon). Pixels with a
      spread above ``max_spread`` (error bound ~4.5e-4) are left out.
    """
    hs, ws = id_src.shape
    g = grid[0].numpy()
    u = (g[..., 0] + 1) * (ws - 1) / 2
    v = (g[..., 1] + 1) * (hs - 1) / 2
    inside = (u >= 1) & (u <= ws - 3) & (v >= 1) & (v <= hs - 3)  # room for the 4x4 window
    u0 = np.clip(np.floor(u), 1, ws - 3).astype(int)
    v0 = np.clip(np.floor(v), 1, hs - 3).astype(int)
    ok = inside.copy()
    taps = []
    for dv in (0, 1):
        for du in (0, 1):
            ok &= id_src[v0 + dv, u0 + du] == id_dst
            taps.append(depth_src[v0 + dv, u0 + du])
    taps = np.stack(taps)
    ok &= (taps.max(0) - taps.min(0)) / taps.min(0) < max_spread
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / depth_src
        centre = inv[v0, u0]
        for k in (0, 1):
            for j in (-1, 0, 1, 2):
                # second differences along u (row v0 + j) and along v (column u0 + j)
                d2u = inv[v0 + j, u0 + k - 1] - 2 * inv[v0 + j, u0 + k] + inv[v0 + j, u0 + k + 1]
                d2v = inv[v0 + k - 1, u0 + j] - 2 * inv[v0 + k, u0 + j] + inv[v0 + k + 1, u0 + j]
                ok &= (np.abs(d2u) < planar_tol * centre) & (np.abs(d2v) < planar_tol * centre)
    return ok


def test_thermal_depth_warped_to_rgb_reproduces_rgb_depth(scene):
    depth_t, id_t, depth_r, id_r = scene
    res = warp_depth(_t(depth_t), _t(depth_r), K_T, K_R, T_RGB_T)
    assert res.depth.shape == (1, 1, *HW_R)
    mask = _same_surface_mask(res.grid, id_t, id_r, depth_t)
    assert mask.sum() > 0.5 * mask.size  # the comparison covers most of the image
    assert res.valid[0, 0].numpy()[mask].all()
    rel = np.abs(res.depth[0, 0].numpy() - depth_r) / depth_r
    assert rel[mask].max() < 1e-3
    # Occluded / disoccluded pixels exist and are far off: the test can fail.
    assert rel[~mask & res.valid[0, 0].numpy()].max() > 0.05


def test_rgb_depth_warped_to_thermal_reproduces_thermal_depth(scene):
    depth_t, id_t, depth_r, id_r = scene
    res = warp_depth(_t(depth_r), _t(depth_t), K_R, K_T, se3.invert(T_RGB_T))
    mask = _same_surface_mask(res.grid, id_r, id_t, depth_r)
    assert mask.sum() > 0.4 * mask.size
    rel = np.abs(res.depth[0, 0].numpy() - depth_t) / depth_t
    assert rel[mask].max() < 1e-3


def test_identity_extrinsic_and_equal_K_is_identity():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 30.0, size=(1, 1, 9, 13))
    d = torch.from_numpy(depth)
    K = _K(20.0, 21.0, 6.0, 4.0)
    res = warp_depth(d, d, K, K, np.eye(4))
    torch.testing.assert_close(res.depth, d, rtol=1e-9, atol=1e-9)
    assert bool(res.valid.all())
    img = torch.from_numpy(rng.normal(size=(1, 5, 9, 13)))
    warped, _ = backward_warp(img, d, K, K, np.eye(4))
    torch.testing.assert_close(warped, img, rtol=1e-9, atol=1e-9)


def test_gradient_reaches_sampled_depth_not_positions(scene):
    depth_t, _, depth_r, _ = scene
    src = _t(depth_t).requires_grad_(True)
    guide = _t(depth_r).requires_grad_(True)
    res = warp_depth(src, guide, K_T, K_R, T_RGB_T)
    (res.depth * res.valid).sum().backward()
    assert src.grad is not None and float(src.grad.abs().sum()) > 0
    assert guide.grad is None  # positions (from the guide) are detached
    assert not res.grid.requires_grad


def test_gradient_value_is_dz_dd_times_bilinear_weight():
    # Pure translation along z: output z = d_s + tz, so d(out)/d(src) is the bilinear weight.
    K = _K(10.0, 10.0, 3.0, 3.0)
    T = se3.make_transform(np.eye(3), np.array([0.0, 0.0, 0.5]))
    src = torch.full((1, 1, 7, 7), 4.0, dtype=torch.float64, requires_grad=True)
    guide = torch.full((1, 1, 7, 7), 4.5, dtype=torch.float64)
    res = warp_depth(src, guide, K, K, T)
    # The src plane seen 0.5 m further away: the dst image is a zoom-out, its border falls outside.
    torch.testing.assert_close(res.depth[..., 2:5, 2:5], guide[..., 2:5, 2:5])
    assert not bool(res.valid[0, 0, 0, 0])
    res.depth[0, 0, 3, 3].backward()
    # dst centre pixel maps to the src centre pixel exactly: all weight on one tap.
    assert src.grad[0, 0, 3, 3].item() == pytest.approx(1.0)
    assert float(src.grad.abs().sum()) == pytest.approx(1.0)


def test_points_behind_or_too_close_are_dropped():
    K = _K(10.0, 10.0, 2.0, 2.0)
    depth = torch.full((1, 1, 5, 5), 2.0, dtype=torch.float64)
    T = se3.make_transform(np.eye(3), np.array([0.0, 0.0, -1.995]))  # z_dst = 0.005 < 0.01
    uv, z = project_pixels(depth, K, K, T)
    assert bool((uv == OUT_OF_IMAGE).all()) and bool((z == 0).all())
    T_ok = se3.make_transform(np.eye(3), np.array([0.0, 0.0, -1.9]))
    uv, z = project_pixels(depth, K, K, T_ok)
    torch.testing.assert_close(z, torch.full_like(z, 0.1))


def test_out_of_image_samples_are_zero_and_invalid():
    K = _K(10.0, 10.0, 2.0, 2.0)
    src = torch.full((1, 1, 5, 5), 3.0, dtype=torch.float64)
    T = se3.make_transform(np.eye(3), np.array([5.0, 0.0, 0.0]))  # far to the side: nothing overlaps
    res = warp_depth(src, src, K, K, T, zero_invalid=True)
    assert not bool(res.valid.any())
    assert bool((res.depth == 0).all())
    warped, _ = backward_warp(src, src, K, K, T)
    assert bool((warped == 0).all())


def test_batched_matches_per_item(scene):
    depth_t, _, depth_r, _ = scene
    src = torch.cat([_t(depth_t), _t(depth_t * 1.1)])
    dst = torch.cat([_t(depth_r), _t(depth_r * 0.9)])
    T2 = np.stack([T_RGB_T, se3.invert(se3.invert(T_RGB_T))])
    res = warp_depth(src, dst, np.stack([K_T, K_T]), np.stack([K_R, K_R]), T2)
    for i in range(2):
        one = warp_depth(src[i : i + 1], dst[i : i + 1], K_T, K_R, T_RGB_T)
        torch.testing.assert_close(res.depth[i : i + 1], one.depth)


def test_numpy_helpers_match_torch(scene):
    depth_t, _, depth_r, _ = scene
    res = warp_depth(_t(depth_t), _t(depth_r), K_T, K_R, T_RGB_T)
    d_np, valid_np = warp_depth_np(depth_t, depth_r, K_T, K_R, T_RGB_T)
    valid = res.valid[0, 0].numpy()
    assert (valid == valid_np).all()
    np.testing.assert_allclose(d_np[valid], res.depth[0, 0].numpy()[valid], rtol=1e-6)
    assert np.isnan(d_np[~valid]).all()
    conf = np.random.default_rng(1).uniform(size=HW_R)
    warped_t, _ = backward_warp(_t(conf), _t(depth_t), K_R, K_T, se3.invert(T_RGB_T))
    warped_np, _ = backward_warp_np(conf, depth_t, K_R, K_T, se3.invert(T_RGB_T))
    np.testing.assert_allclose(warped_np, warped_t[0, 0].numpy(), atol=1e-6)


def test_numpy_nan_guide_is_invalid(scene):
    depth_t, _, depth_r, _ = scene
    guide = depth_r.copy()
    guide[:10] = np.nan
    d_np, valid = warp_depth_np(depth_t, guide, K_T, K_R, T_RGB_T)
    assert not valid[:10].any() and np.isnan(d_np[:10]).all()
    assert valid[10:].any()


def test_splat_identity_and_scene(scene):
    depth_t, _, depth_r, _ = scene
    out = splat_depth_np(depth_t, K_T, K_T, np.eye(4), HW_T)
    np.testing.assert_allclose(out, depth_t, rtol=1e-6)
    splat = splat_depth_np(depth_t, K_T, K_R, T_RGB_T, HW_R)
    hit = np.isfinite(splat)
    assert hit.mean() > 0.5
    # Nearest-pixel splatting is approximate; most pixels are within 5 % of the RGB truth.
    assert np.median(np.abs(splat[hit] - depth_r[hit]) / depth_r[hit]) < 0.05


def test_scale_intrinsics_modes():
    K = torch.tensor(_K(100.0, 100.0, 320.0, 128.0))
    r = scale_intrinsics(K, (256, 640), (252, 644), mode="ratio")
    assert r[0, 0].item() == pytest.approx(100 * 644 / 640)
    assert r[1, 2].item() == pytest.approx(128 * 252 / 256)
    a = scale_intrinsics(K, (256, 640), (252, 644), mode="align_corners")
    assert a[0, 2].item() == pytest.approx(320 * 643 / 639)
    assert K[0, 0].item() == 100.0  # input untouched


def _sim_ids(rig, camera, T_world_cam, t):
    """Primitive id hit by every pixel (sim ray caster), and the hit's z-depth."""
    h, w = camera.height, camera.width
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack((u, v, np.ones_like(u)), -1) @ np.linalg.inv(camera.K).T
    dirs = rays.reshape(-1, 3) @ T_world_cam[:3, :3].T
    tt, prim = rig.cast_rays(t, T_world_cam[:3, 3], dirs)
    return prim.reshape(h, w), tt.reshape(h, w)


def test_simulated_rig_thermal_gt_warped_to_rgb_reproduces_rgb_gt():
    from monother_ros.sim.rig import SimRig

    rig = SimRig(3, "day", "urban")
    t = 1.0
    cam_t = rig.thermal_camera.resized(160, 128)
    cam_r = rig.rgb_camera.resized(256, 144)
    depth_t = rig.render_thermal(t, cam_t, noise=False).depth
    depth_r = rig.render_rgb(t, cam_r, noise=False).depth
    id_t, z_t = _sim_ids(rig, cam_t, rig.pose(t) @ rig.T_base_thermal, t)
    id_r, _ = _sim_ids(rig, cam_r, rig.pose(t) @ rig.T_base_rgb, t)
    finite = np.isfinite(depth_t)
    np.testing.assert_allclose(z_t[finite], depth_t[finite], rtol=1e-3)  # ids belong to these depths
    src = np.nan_to_num(depth_t, nan=0.0)
    guide = np.nan_to_num(depth_r, nan=0.0)
    res = warp_depth(_t(src), _t(guide), cam_t.K, cam_r.K, rig.T_rgb_thermal)
    mask = _same_surface_mask(res.grid, np.where(finite, id_t, -1), id_r, np.where(finite, src, 1e9))
    seen = np.isfinite(depth_r) & res.valid[0, 0].numpy()
    mask &= seen
    # The RGB view (70 deg) is wider than the thermal one (50 deg): compare where both see.
    assert mask.sum() > 0.5 * seen.sum() and seen.mean() > 0.3
    rel = np.abs(res.depth[0, 0].numpy() - depth_r) / depth_r
    assert np.nanmax(rel[mask]) < 1e-3

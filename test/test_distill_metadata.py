"""Metadata: channel order, detachment, gradients, and agreement with the reference algorithm
(re-stated op by op below from ZoeDepthDual.forward / depth_utils in the official repository)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monother_ros.core import se3
from monother_ros.distill.losses import consistency_loss
from monother_ros.distill.masks import consistency_mask
from monother_ros.distill.metadata import METADATA_CHANNELS, MetadataBuilder, build_metadata, cosine_similarity_map

MIN_D, MAX_D = 1e-3, 80.0


# ----------------------------------------------------------------- reference algorithm, restated


def _ref_remap(depth_bhw1, uv_or_none, K1, K2, T12, depth_for_invalid=None):
    b, h, w, _ = depth_bhw1.shape
    ones = torch.ones((b, h, w), dtype=depth_bhw1.dtype)
    if uv_or_none is None:
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pix = torch.stack((xx.to(depth_bhw1.dtype), yy.to(depth_bhw1.dtype), ones[0]), -1).unsqueeze(0)
    else:
        pix = torch.stack((uv_or_none[..., 0], uv_or_none[..., 1], ones), -1)
    pts = (depth_bhw1.repeat(1, 1, 1, 3) * pix).view(b, -1, 3)
    pts = torch.bmm(torch.inverse(K1), pts.permute(0, 2, 1)).permute(0, 2, 1)
    homo = torch.cat([pts, ones.view(b, -1, 1)], dim=-1)
    tp = torch.bmm(homo, T12.permute(0, 2, 1))
    p2 = torch.bmm(tp[:, :, :3], K2.permute(0, 2, 1))
    z = p2[:, :, 2]
    invalid = z < 1e-2
    if depth_for_invalid is not None:
        invalid = invalid & (depth_for_invalid.view(b, -1) < 1e-2)
    zz = torch.where(z.abs() < 1e-4, z + 1e-6, z)
    uv = p2[:, :, :2] / zz.unsqueeze(2).repeat(1, 1, 2)
    uv[invalid] = 1e5
    d2 = p2[:, :, 2].clone()
    d2[invalid] = 0.0
    return uv.view(b, h, w, 2), d2.view(b, h, w).unsqueeze(3)


def _ref_top_mask(x, top):
    sub = x[:, :, ::10, ::10]
    b, _, h, w = sub.shape
    s, _ = torch.sort(sub.reshape(b, -1), dim=1)
    thr = s[:, int((1 - top) * h * w)].view(b, 1, 1, 1)
    return x <= thr


def _ref_cos(f1, f2):
    b, c, h, w = f1.shape
    a, bb = f1.view(b, c, -1), f2.view(b, c, -1)
    return (torch.sum(a * bb, 1) / (torch.norm(a, p=2, dim=1) * torch.norm(bb, p=2, dim=1) + 1e-8)).view(b, 1, h, w)


def _gs(x, grid, mode="bilinear"):
    return torch.nn.functional.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def _ref_warp_sample(pred_a, pred_b, Ka, Kb, Tab):
    h, w = pred_b.shape[-2:]
    pix, dep = _ref_remap(pred_a.permute(0, 2, 3, 1).contiguous(), None, Ka, Kb, Tab)
    grid = torch.stack([2 * pix[..., 0] / (w - 1) - 1, 2 * pix[..., 1] / (h - 1) - 1], dim=-1)
    return grid, dep.permute(0, 3, 1, 2), _gs(pred_b, grid)


def _reference(d_t, d_r, f_t, f_r, img, K_t, K_r, T_tr, conf):
    T_rt = torch.inverse(T_tr)
    a_grid, _, _ = _ref_warp_sample(d_t, d_r, K_t, K_r, T_tr)
    b_grid, _, a_c2b = _ref_warp_sample(d_r, d_t, K_r, K_t, T_rt)
    h, w = a_c2b.shape[-2:]
    uv = torch.stack([(b_grid[..., 0] + 1) * (w - 1) / 2, (b_grid[..., 1] + 1) * (h - 1) / 2], -1)
    a_c2b_hw1 = a_c2b.permute(0, 2, 3, 1).contiguous()
    _, geta = _ref_remap(a_c2b_hw1, uv, K_t, K_r, T_tr, depth_for_invalid=a_c2b_hw1)
    geta = geta.permute(0, 3, 1, 2).contiguous()
    diff = (d_r - geta).abs()
    s_b = _ref_cos(f_r, _gs(f_t, b_grid))
    s_a = _ref_cos(f_t, _gs(f_r, a_grid))
    s_a_c2b = _gs(s_a, b_grid, mode="nearest")
    excl = _ref_top_mask(diff, 0.2)
    mdd = (d_r > MIN_D) & (geta > MIN_D)
    diff[~mdd] = -1.0
    mdd = mdd & (d_r < MAX_D) & (geta < MAX_D)
    geta_meta = geta.clone()
    geta_meta[geta_meta < MIN_D] = 0.0
    meta = torch.cat([s_b, s_a_c2b, diff, geta_meta, d_r, img], dim=1)
    sbm = (s_b > 1e-2) & ~_ref_top_mask(s_b, 0.8)
    cm = (diff > 1e-2) & sbm & (conf > 1e-3)
    cm = mdd & cm & excl
    loss = (conf * diff)[cm].mean()
    return meta, cm, loss


# ----------------------------------------------------------------- inputs


def _K(fx, cx, cy):
    return np.array([[fx, 0, cx], [0, fx, cy], [0, 0, 1.0]])


H, W = 28, 36
K_T = _K(30.0, 17.5, 13.2)
K_R = _K(33.0, 18.1, 14.0)
T_RT = se3.make_transform(se3.rotation_about_axis(np.array([0.1, 1, 0]), math.radians(3)), np.array([0.35, 0.02, 0.03]))


def _inputs(seed=0, b=2, c=7):
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, H, dtype=torch.float64).view(1, 1, H, 1)
    base = 3.0 + 6.0 * yy + torch.zeros(b, 1, H, W, dtype=torch.float64)
    d_t = base + 0.3 * torch.rand(b, 1, H, W, generator=g, dtype=torch.float64)
    d_r = base + 0.3 * torch.rand(b, 1, H, W, generator=g, dtype=torch.float64)
    d_r[:, :, :3, :5] = 100.0  # out of range (sky)
    f_t = torch.randn(b, c, H, W, generator=g, dtype=torch.float64)
    f_r = f_t + 0.5 * torch.randn(b, c, H, W, generator=g, dtype=torch.float64)
    img = torch.rand(b, 3, H, W, generator=g, dtype=torch.float64)
    conf = torch.rand(b, 1, H, W, generator=g, dtype=torch.float64)
    return d_t, d_r, f_t, f_r, img, conf


def _batched(m, b=2):
    return torch.from_numpy(np.stack([m] * b))


def test_matches_reference_algorithm():
    d_t, d_r, f_t, f_r, img, conf = _inputs()
    res = build_metadata(f_t, f_r, d_t, d_r, img, K_T, K_R, T_RT, min_depth=MIN_D, max_depth=MAX_D)
    meta_ref, cm_ref, loss_ref = _reference(d_t, d_r, f_t, f_r, img, _batched(K_T), _batched(K_R), _batched(T_RT), conf)
    assert res.metadata.shape == (2, 8, H, W) and len(METADATA_CHANNELS) == 8
    torch.testing.assert_close(res.metadata, meta_ref, rtol=1e-9, atol=1e-9)
    cm = consistency_mask(res.diff, res.s_b, res.depth_ok, conf)
    assert torch.equal(cm, cm_ref)
    assert 0 < int(cm.sum()) < cm.numel()
    torch.testing.assert_close(consistency_loss(conf, res.diff, cm), loss_ref)


def test_channel_contents_on_a_plane():
    # Fronto-parallel plane 5 m in front of both cameras; pure sideways baseline; identical features.
    b = 1
    K = _K(20.0, 9.5, 7.5)
    T = se3.make_transform(np.eye(3), np.array([1.0, 0.0, 0.0]))
    d = torch.full((b, 1, 16, 20), 5.0, dtype=torch.float64)
    f = torch.randn(1, 4, 1, 1, dtype=torch.float64).expand(b, 4, 16, 20).contiguous()
    img = torch.rand(b, 3, 32, 40, dtype=torch.float64)  # image at twice the prediction size
    res = build_metadata(f, f, d, d, img, K, K, T)
    m = res.metadata[0]
    # u_thermal = u_rgb - fx * 1 / 5 = u_rgb - 4: RGB columns 0..3 are not seen by the thermal camera.
    seen = torch.zeros(16, 20, dtype=torch.bool)
    seen[:, 4:] = True
    torch.testing.assert_close(m[0][seen], torch.ones(int(seen.sum()), dtype=torch.float64))  # S_b = 1
    assert bool((m[0][~seen].abs() < 1e-5).all())  # zero-padded features: similarity ~0
    torch.testing.assert_close(m[3][seen], torch.full((int(seen.sum()),), 5.0, dtype=torch.float64))
    assert bool((m[3][~seen].abs() < 1e-5).all())
    assert bool((m[2][seen].abs() < 1e-9).all()) and bool((m[2][~seen] == -1).all())
    assert bool((m[4] == 5.0).all())
    img_small = torch.nn.functional.interpolate(img, size=(16, 20), mode="bilinear", align_corners=True)
    torch.testing.assert_close(m[5:], img_small[0])
    assert bool(res.depth_ok[0, 0][seen].all()) and not bool(res.depth_ok[0, 0][~seen].any())


def test_metadata_is_detached_and_gradients_reach_only_the_thermal_depth():
    d_t, d_r, f_t, f_r, img, _ = _inputs(1)
    d_t.requires_grad_(True)
    d_r.requires_grad_(True)
    f_t.requires_grad_(True)
    f_r.requires_grad_(True)
    res = build_metadata(f_t, f_r, d_t, d_r, img, K_T, K_R, T_RT)
    assert not res.metadata.requires_grad and not res.s_b.requires_grad and not res.s_a_in_rgb.requires_grad
    res.diff[res.depth_ok].sum().backward()
    assert d_t.grad is not None and float(d_t.grad.abs().sum()) > 0
    assert d_r.grad is None and f_t.grad is None and f_r.grad is None


def test_builder_for_the_dual_model_and_input_checks():
    d_t, d_r, f_t, f_r, img, _ = _inputs(2)

    class Out:
        def __init__(self, depth, feats):
            self.depth, self.similarity_features = depth, feats

    builder = MetadataBuilder(img, K_T, K_R, T_RT)
    meta = builder(Out(d_t, f_t), Out(d_r, f_r))
    assert meta is builder.last.metadata and meta.shape == (2, 8, H, W)
    with pytest.raises(ValueError):
        build_metadata(f_t[:, :3], f_r, d_t, d_r, img, K_T, K_R, T_RT)
    with pytest.raises(ValueError):
        builder(Out(d_t, None), Out(d_r, f_r))


def test_cosine_similarity_values():
    a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    assert cosine_similarity_map(a, b).item() == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity_map(a, -a).item() == pytest.approx(-1.0)
    assert cosine_similarity_map(a, torch.zeros_like(a)).item() == 0.0

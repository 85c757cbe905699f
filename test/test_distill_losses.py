"""Losses: analytic values, the SILog scale property, the NLL minimiser, gradient paths, totals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monother_ros.core import se3
from monother_ros.distill.losses import (
    LabelFreeWeights,
    SupervisedWeights,
    confidence_nll_loss,
    consistency_loss,
    edge_aware_smoothness,
    label_free_loss,
    silog_loss,
    supervised_loss,
    teacher_target_in_thermal,
)
from monother_ros.distill.metadata import build_metadata


def _depths(seed=0, shape=(2, 1, 12, 16)):
    g = torch.Generator().manual_seed(seed)
    gt = 1.0 + 20.0 * torch.rand(shape, generator=g, dtype=torch.float64)
    noise = torch.exp(0.1 * torch.randn(shape, generator=g, dtype=torch.float64))
    return gt, gt * noise


def test_silog_zero_for_perfect_prediction():
    gt, _ = _depths()
    assert silog_loss(gt.clone(), gt).item() == 0.0
    assert silog_loss(gt.clone(), gt, exclude_top=0.0).item() == 0.0


def test_silog_formula_with_mask_and_unbiased_variance():
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]], dtype=torch.float64)
    gt = torch.tensor([[[[2.0, 2.0], [2.0, 1.0]]]], dtype=torch.float64)
    mask = torch.tensor([[[[True, True], [True, False]]]])
    g = [math.log(1 / 2), 0.0, math.log(2)]
    mean = sum(g) / 3
    var = sum((x - mean) ** 2 for x in g) / 2  # unbiased (torch.var)
    expected = 10 * math.sqrt(var + 0.15 * mean**2)
    assert silog_loss(pred, gt, mask, exclude_top=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_silog_global_scale_moves_only_the_mean_term():
    gt, pred = _depths(1)
    base = silog_loss(pred, gt, exclude_top=0.0)
    g = torch.log(pred + 1e-7) - torch.log(gt + 1e-7)
    var, mean = torch.var(g), g.mean()
    assert (base / 10) ** 2 == pytest.approx(float(var + 0.15 * mean**2), rel=1e-9)
    for s in (0.5, 1.7, 3.0):
        scaled = silog_loss(s * pred, gt, exclude_top=0.0)
        lhs = float((scaled / 10) ** 2 - (base / 10) ** 2)
        rhs = 0.15 * ((float(mean) + math.log(s)) ** 2 - float(mean) ** 2)
        assert lhs == pytest.approx(rhs, rel=1e-6, abs=1e-9)  # eps 1e-7 in the logs only
        assert scaled.item() != pytest.approx(base.item())


def test_silog_resizes_prediction_and_excludes_top_residuals():
    gt = torch.full((1, 1, 20, 20), 4.0, dtype=torch.float64)
    small = torch.full((1, 1, 10, 10), 4.0, dtype=torch.float64)
    assert silog_loss(small, gt).item() == pytest.approx(0.0, abs=1e-6)
    pred = gt.clone()
    pred[..., :2, :] = 400.0  # 10 % gross outliers, at stride-10 sample rows 0 and 10? only row 0
    with_outliers = silog_loss(pred, gt, exclude_top=0.0)
    assert with_outliers.item() > 1.0
    assert silog_loss(pred, gt, exclude_top=0.2, stride=1).item() == pytest.approx(0.0, abs=1e-6)


def test_nll_minimiser_is_beta_over_r():
    r = torch.tensor([0.004, 0.01, 0.1, 0.5, 2.0, 0.001], dtype=torch.float64).view(1, 1, 1, 6)
    target = torch.zeros_like(r) + 5.0
    pred = target + r
    c_star = 0.002 / r
    c = c_star.clone().clamp(max=1.0).requires_grad_(True)
    loss = confidence_nll_loss(c, pred, target, exclude_top=0.0)
    loss.backward()
    grad = c.grad.view(-1)
    # Stationary where c* < 1; at the cap (r < beta) the loss still decreases towards c > 1.
    interior = (c_star < 1).view(-1)
    assert bool((grad[interior].abs() < 1e-12).all())
    assert bool((grad[~interior] < 0).all())
    # Optimise a sigmoid-parameterised confidence: it converges to min(beta / r, 1).
    # (Adam written out: constructing torch.optim.Adam costs ~2 s of imports on first use.)
    theta = torch.zeros_like(r, requires_grad=True)
    m = torch.zeros_like(r)
    v = torch.zeros_like(r)
    for step in range(1, 301):
        loss = confidence_nll_loss(torch.sigmoid(theta), pred, target, exclude_top=0.0)
        (g_theta,) = torch.autograd.grad(loss, theta)
        m = 0.9 * m + 0.1 * g_theta
        v = 0.999 * v + 0.001 * g_theta**2
        with torch.no_grad():
            theta -= 0.2 * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
    got = torch.sigmoid(theta).detach().view(-1)
    want = c_star.clamp(max=1.0).view(-1)
    assert bool(((got - want).abs() < 0.02 * want + 5e-3).all())


def test_nll_trains_only_the_confidence():
    gt, pred = _depths(2)
    pred.requires_grad_(True)
    conf = torch.full_like(gt, 0.3, requires_grad=True)
    confidence_nll_loss(conf, pred, gt).backward()
    assert pred.grad is None and conf.grad is not None


def test_smoothness_values():
    ramp = torch.arange(8, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 6, 8)
    flat = torch.zeros(1, 3, 6, 8, dtype=torch.float64)
    # |dx d| = 1 everywhere, |dy d| = 0, flat image: weight 1, ties keep everything.
    assert edge_aware_smoothness(ramp, flat).item() == pytest.approx(1.0)
    assert edge_aware_smoothness(torch.full_like(ramp, 3.0), flat).item() == 0.0
    # A vertical image edge down-weights the depth step there: exp(-1) instead of 1 when kept.
    step = torch.zeros(1, 1, 6, 8, dtype=torch.float64)
    step[..., 4:] = 5.0
    edge = torch.zeros(1, 3, 6, 8, dtype=torch.float64)
    edge[..., 4:] = 1.0
    s_edge = edge_aware_smoothness(step, edge, exclude_top=0.0)
    assert s_edge.item() == pytest.approx(5.0 * math.exp(-1.0) / 7.0)
    # With the reference's top-20 % exclusion on image gradients the edge column is dropped.
    assert edge_aware_smoothness(step, edge, stride=1).item() == pytest.approx(0.0)


K_T = np.array([[30.0, 0, 17.5], [0, 30.0, 13.0], [0, 0, 1]])
K_R = np.array([[32.0, 0, 18.0], [0, 32.0, 13.5], [0, 0, 1]])
T_RT = se3.make_transform(se3.rotation_about_axis(np.array([0, 1.0, 0]), math.radians(2)), np.array([0.3, 0.0, 0.02]))


def _branch_tensors(seed=3, b=2, h=28, w=36):
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h, dtype=torch.float64).view(1, 1, h, 1)
    base = 3.0 + 8.0 * yy + torch.zeros(b, 1, h, w, dtype=torch.float64)
    d_t = (base * torch.exp(0.05 * torch.randn(b, 1, h, w, generator=g, dtype=torch.float64))).requires_grad_(True)
    d_r = (base * torch.exp(0.05 * torch.randn(b, 1, h, w, generator=g, dtype=torch.float64))).requires_grad_(True)
    f_t = torch.randn(b, 5, h, w, generator=g, dtype=torch.float64)
    f_r = (f_t + 0.3 * torch.randn(b, 5, h, w, generator=g, dtype=torch.float64))
    img = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64)
    conf = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64).requires_grad_(True)
    rel = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64)
    return d_t, d_r, f_t, f_r, img, conf, rel, base


def test_consistency_gradients_only_into_the_thermal_depth():
    d_t, d_r, f_t, f_r, img, conf, _, _ = _branch_tensors()
    f_t.requires_grad_(True)
    f_r.requires_grad_(True)
    meta = build_metadata(f_t, f_r, d_t, d_r, img, K_T, K_R, T_RT)
    out = label_free_loss(meta, conf, img, weights=LabelFreeWeights(smoothness=0.0))
    assert set(out) == {"consistency", "total"}
    out["total"].backward()
    assert out["consistency"].item() > 0
    assert d_t.grad is not None and float(d_t.grad.abs().sum()) > 0
    for t in (d_r, conf, f_t, f_r):
        assert t.grad is None


def test_consistency_loss_empty_mask_and_no_confidence():
    diff = torch.rand(1, 1, 4, 4, requires_grad=True)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    zero = consistency_loss(None, diff, mask)
    assert zero.item() == 0.0
    zero.backward()
    mask[0, 0, 0, :2] = True
    assert consistency_loss(None, diff, mask).item() == pytest.approx(diff[0, 0, 0, :2].mean().item())
    conf = torch.full_like(diff, 0.5)
    assert consistency_loss(conf, diff, mask).item() == pytest.approx(0.5 * diff[0, 0, 0, :2].mean().item())


@pytest.mark.parametrize("mode", ["none", "no_confidence", "full"])
def test_supervised_loss_terms_and_total(mode):
    d_t, d_r, f_t, f_r, img, conf, rel, base = _branch_tensors(4)
    meta = build_metadata(f_t, f_r, d_t, d_r, img, K_T, K_R, T_RT)
    student_conf = torch.full_like(base, 0.5, requires_grad=True)
    w = SupervisedWeights()
    out = supervised_loss(
        d_t, d_r, base, base, img, metadata=meta, confidence=conf, rgb_rel_depth=rel,
        student_confidence=student_conf, distillation=mode,
    )
    expected = {"silog_rgb", "silog_thermal", "smoothness", "student_nll", "total"}
    if mode != "none":
        expected.add("consistency")
    if mode == "full":
        expected |= {"nll", "confidence_smoothness"}
    assert set(out) == expected
    weight = {
        "silog_rgb": w.silog_rgb, "silog_thermal": w.silog_thermal, "smoothness": w.smoothness,
        "consistency": w.consistency, "nll": w.nll, "confidence_smoothness": w.confidence_smoothness,
        "student_nll": w.student_nll,
    }
    total = sum(weight[k] * v for k, v in out.items() if k != "total")
    torch.testing.assert_close(out["total"], total)
    out["total"].backward()
    assert d_t.grad is not None and d_r.grad is not None  # SILog trains both branches
    if mode == "full":
        assert conf.grad is not None and float(conf.grad.abs().sum()) > 0  # NLL + smoothness train it
    else:
        assert conf.grad is None


def test_no_confidence_ablation_uses_unit_confidence():
    d_t, d_r, f_t, f_r, img, conf, _, _ = _branch_tensors(5)
    meta = build_metadata(f_t, f_r, d_t, d_r, img, K_T, K_R, T_RT)
    ones = torch.ones_like(conf)
    a = label_free_loss(meta, None, img, distillation="no_confidence")["consistency"]
    b = label_free_loss(meta, ones, img, distillation="full")["consistency"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        label_free_loss(meta, conf, img, distillation="none")
    with pytest.raises(ValueError):
        label_free_loss(meta, None, img, distillation="full")


def test_student_confidence_against_teacher_in_thermal_frame():
    d_t, d_r, f_t, f_r, img, conf, _, _ = _branch_tensors(6)
    depth, tconf, valid = teacher_target_in_thermal(d_r, conf, d_t, K_T, K_R, T_RT)
    assert depth.shape == d_t.shape and tconf.shape == d_t.shape and valid.dtype == torch.bool
    assert not depth.requires_grad and bool((depth[~valid] == 0).all())
    rel = (depth - d_t.detach()).abs()[valid] / depth[valid]
    assert float(rel.median()) < 0.2  # the two noisy branches describe the same surface
    meta = build_metadata(f_t, f_r, d_t, d_r, img, K_T, K_R, T_RT)
    student_conf = torch.full_like(d_t, 0.5, requires_grad=True)
    out = label_free_loss(
        meta, conf, img, student_confidence=student_conf, thermal_depth=d_t,
        teacher_depth_in_thermal=depth, teacher_mask_in_thermal=valid & (tconf > 0.5),
    )
    assert "student_nll" in out
    out["total"].backward()
    assert student_conf.grad is not None and float(student_conf.grad.abs().sum()) > 0


def test_nll_stays_finite_when_a_confidence_saturates_to_zero():
    import torch

    from monother_ros.distill.losses import confidence_nll_loss

    pred = torch.tensor([[[[1.0, 2.0]]]])
    gt = torch.tensor([[[[1.5, 2.0]]]])
    logits = torch.tensor([[[[-200.0, 0.0]]]], requires_grad=True)  # sigmoid(-200) == 0 in float32
    confidence = torch.sigmoid(logits)
    assert confidence[0, 0, 0, 0].item() == 0.0
    loss = confidence_nll_loss(confidence, pred, gt)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()

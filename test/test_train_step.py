"""distill.step: the shared training step (terms per stage and ablation, freezing, no optimiser inside)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.distill.step import prepare_stage, rgb_to_unit, training_step
from monother_ros.model.dual import MonotherDual
from monother_ros.model.variants import IMAGENET_MEAN, IMAGENET_STD, get_preset

H, W = 28, 42


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MonotherDual(get_preset("test-tiny").replace(input_size=(H, W)))


def _batch(b: int = 2):
    g = torch.Generator().manual_seed(1)
    K = torch.tensor(PinholeCamera.from_hfov(W, H, 60.0).K, dtype=torch.float32)
    T = torch.tensor(se3.make_transform(np.eye(3), [-0.1, 0.0, 0.0]), dtype=torch.float32)
    gt = 4.0 + 10.0 * torch.rand(b, H, W, generator=g)
    return {
        "thermal": torch.randn(b, 3, H, W, generator=g), "rgb": torch.randn(b, 3, H, W, generator=g),
        "K_thermal": K.expand(b, 3, 3), "K_rgb": K.expand(b, 3, 3), "T_rgb_thermal": T.expand(b, 4, 4),
        "gt_depth_thermal": gt, "gt_depth_rgb": gt.clone(), "meta": [{}] * b,
    }


SUPERVISED_BASE = {"silog_rgb", "silog_thermal", "smoothness", "student_nll", "total"}


@pytest.mark.parametrize(
    "distillation,extra",
    [("none", set()), ("no_confidence", {"consistency"}), ("full", {"consistency", "nll", "confidence_smoothness"})],
)
def test_supervised_terms_follow_the_ablation_switch(model, distillation, extra):
    prepare_stage(model, "supervised")
    weights = {"silog_rgb": 1.0, "silog_thermal": 0.5, "consistency": 0.2, "nll": 0.1, "smoothness": 0.01,
               "confidence_smoothness": 1e-4, "student_nll": 0.3}
    r = training_step(model, _batch(), stage="supervised", distillation=distillation, weights=weights)
    assert set(r.losses) == SUPERVISED_BASE | extra
    expected = sum(weights[k] * v for k, v in r.losses.items() if k != "total")
    assert r.losses["total"] == pytest.approx(expected, rel=1e-5)
    assert r.total.requires_grad and r.student_depth.shape == (2, 1, H, W)
    model.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_confidence_weighting_changes_the_consistency_term(model):
    prepare_stage(model, "supervised")
    plain = training_step(model, _batch(), stage="supervised", distillation="no_confidence")
    weighted = training_step(model, _batch(), stage="supervised", distillation="full")
    # Confidence in (0, 1) scales the per-pixel differences down (and the mask drops c <= 1e-3).
    assert 0 < weighted.losses["consistency"] < plain.losses["consistency"]
    no_consistency = training_step(model, _batch(), stage="supervised", distillation="full", weights={"consistency": 0.0})
    assert "consistency" not in no_consistency.losses


@pytest.mark.slow
def test_step_does_not_update_weights_and_label_free_freezes_teacher(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_stage(model, "label_free")
    assert not model.teacher.training and not model.confidence_net.training and model.student.training
    model.zero_grad(set_to_none=True)
    r = training_step(model, _batch(), stage="label_free", distillation="full")
    assert set(r.losses) == {"consistency", "smoothness", "student_nll", "total"}
    r.total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is None for p in model.confidence_net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.pretrained.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.confidence_head.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # no optimiser inside the step
    model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="needs distillation"):
        training_step(model, _batch(), stage="label_free", distillation="none")
    prepare_stage(model, "supervised")
    assert all(p.requires_grad for n, p in model.teacher.named_parameters() if "bn" not in n and "norm" not in n)


def test_supervised_stage_needs_ground_truth(model):
    batch = _batch()
    batch["gt_depth_rgb"] = None
    with pytest.raises(ValueError, match="needs gt_depth_thermal and gt_depth_rgb"):
        training_step(model, batch, stage="supervised", distillation="full")
    with pytest.raises(ValueError, match="stage must be"):
        training_step(model, _batch(), stage="finetune")


def test_rgb_to_unit_inverts_the_imagenet_normalisation():
    unit = torch.rand(1, 3, 4, 5)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb_to_unit((unit - mean) / std, IMAGENET_MEAN, IMAGENET_STD), unit)

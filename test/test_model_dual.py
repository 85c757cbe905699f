"""MonotherDual: forward shapes per branch, teacher confidence from a metadata callable, no gradient
from the confidence into the branches, BatchNorm freezing, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monother_ros.model.branch import BranchOutput, DepthBranch
from monother_ros.model.confidence import ConfidenceUNet
from monother_ros.model.dual import DualOutput, MonotherDual, freeze_batchnorm, teacher_config_for
from monother_ros.model.variants import IMAGENET_MEAN, get_preset

H, W = 28, 42


@pytest.fixture(autouse=True)
def _grad_enabled():
    # Some test modules switch autograd off globally at import; these tests need it on.
    with torch.enable_grad():
        yield



def _student_cfg(confidence_head: bool = False):
    return get_preset("test-tiny").replace(name="tiny-student", head="zoe_bins",
                                           confidence_head=confidence_head, modality="thermal",
                                           mean=(0.45,) * 3, std=(0.225,) * 3)


def _metadata(student: BranchOutput, teacher: BranchOutput) -> torch.Tensor:
    """Stand-in for distill.metadata.build_metadata (identity extrinsic): 8 channels on the RGB grid."""
    fs, ft = student.similarity_features.detach(), teacher.similarity_features.detach()
    s = F.cosine_similarity(fs, ft, dim=1).unsqueeze(1)
    ds, dt = student.depth.detach(), teacher.depth.detach()
    rgb = torch.zeros(ds.shape[0], 3, *ds.shape[-2:])
    return torch.cat([s, s, (dt - ds).abs(), ds, dt, rgb], dim=1)


@pytest.fixture(scope="module")
def dual() -> MonotherDual:
    torch.manual_seed(0)
    return MonotherDual(_student_cfg(confidence_head=True)).eval()


def test_teacher_config_is_rgb_with_imagenet_normalisation():
    t = teacher_config_for(_student_cfg(confidence_head=True))
    assert t.modality == "rgb" and t.mean == IMAGENET_MEAN and not t.confidence_head
    assert t.n_bins == 64 and t.head == "zoe_bins"


def test_forward_shapes_without_confidence(dual):
    x, y = torch.randn(2, 3, H, W), torch.randn(2, 3, H, W)
    with torch.no_grad():
        out = dual(x, y)
    assert isinstance(out, DualOutput)
    assert out.teacher_confidence is None and out.metadata is None
    for branch in (out.student, out.teacher):
        assert branch.depth.shape == (2, 1, H, W)
        assert branch.similarity_features.shape == (2, 8 + 1 + 128, H, W)
        assert float(branch.depth.min()) >= 1e-3 and float(branch.depth.max()) <= 80.0
    assert out.student.confidence.shape == (2, 1, H, W)  # the student config has its own head
    assert out.teacher.confidence is None


def test_forward_with_teacher_confidence(dual):
    x, y = torch.randn(1, 3, H, W), torch.randn(1, 3, H, W)
    with torch.no_grad():
        out = dual(x, y, need_confidence=True, metadata_fn=_metadata, features=False)
    assert out.metadata.shape == (1, 8, H, W)
    assert out.teacher_confidence.shape == (1, 1, H, W)
    assert float(out.teacher_confidence.min()) > 0 and float(out.teacher_confidence.max()) < 1
    with torch.no_grad():
        again = dual.teacher_confidence(out.metadata)
    torch.testing.assert_close(again, out.teacher_confidence)


def test_branches_work_alone_and_match_the_dual_forward(dual):
    x, y = torch.randn(1, 3, H, W), torch.randn(1, 3, H, W)
    with torch.no_grad():
        out = dual(x, y)
        torch.testing.assert_close(dual.student(x).depth, out.student.depth)
        torch.testing.assert_close(dual.teacher(y).depth, out.teacher.depth)
    assert isinstance(dual.student, DepthBranch) and isinstance(dual.confidence_net, ConfidenceUNet)


def test_confidence_loss_sends_no_gradient_into_the_branches():
    torch.manual_seed(1)
    model = MonotherDual(_student_cfg()).train()

    def live_metadata(s: BranchOutput, t: BranchOutput) -> torch.Tensor:  # deliberately not detached
        d_s, d_t = s.depth, t.depth
        return torch.cat([d_s, d_t, d_s - d_t, d_s, d_t, d_s, d_t, d_s], 1)

    out = model(torch.randn(2, 3, H, W), torch.randn(2, 3, H, W), need_confidence=True,
                metadata_fn=live_metadata, features=False)
    out.teacher_confidence.mean().backward()
    assert all(p.grad is None for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.confidence_net.inc.double_conv[0].weight.grad is not None


def test_errors():
    model = MonotherDual(_student_cfg(), confidence=False)
    x = torch.randn(1, 3, H, W)
    with pytest.raises(ValueError, match="metadata_fn"):
        model(x, x, need_confidence=True)
    with pytest.raises(ValueError, match="share batch and size"):
        model(x, torch.randn(1, 3, H, W + 14))
    with pytest.raises(RuntimeError, match="no confidence network"):
        model.teacher_confidence(torch.randn(1, 8, H, W))
    assert model.confidence_net is None


def test_freeze_batchnorm_survives_train():
    model = MonotherDual(_student_cfg(), freeze_bn=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 18  # the U-Net's; the DPT has use_bn=False
    assert all(not m.training and not m.weight.requires_grad and not m.bias.requires_grad for m in bns)
    assert model.confidence_net.inc.double_conv[0].weight.requires_grad  # convs still train
    # BatchNorm statistics do not move in a training-mode forward.
    before = model.confidence_net.inc.double_conv[1].running_mean.clone()
    model.teacher_confidence(torch.randn(2, 8, 16, 16))
    assert torch.equal(before, model.confidence_net.inc.double_conv[1].running_mean)


def test_freeze_batchnorm_helper_counts_and_can_be_off():
    net = ConfidenceUNet().train()
    assert freeze_batchnorm(net) == 18
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model = MonotherDual(_student_cfg(), freeze_bn=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_saved_dual_with_a_narrow_confidence_net_loads_back(tmp_path):
    """Our small trainings use a narrower confidence U-Net; load_model must rebuild it at that width."""
    from monother_ros.model.checkpoints import load_model, save_model
    from monother_ros.model.confidence import ConfidenceUNet
    from monother_ros.model.dual import MonotherDual, teacher_config_for
    from monother_ros.model.variants import get_preset

    cfg = get_preset("test-tiny")
    dual = MonotherDual(cfg, teacher_config_for(cfg), confidence=True, confidence_width=8)
    save_model(dual, cfg, tmp_path / "dual", kind=dual.checkpoint_kind)
    loaded, _ = load_model(tmp_path / "dual")
    assert loaded.confidence_net.base_width == 8
    for k, v in dual.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    net = ConfidenceUNet(base_width=16)
    save_model(net, cfg, tmp_path / "conf", kind=net.checkpoint_kind)
    assert load_model(tmp_path / "conf")[0].base_width == 16

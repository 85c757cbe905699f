"""Import of the official MonoTher-Depth dual checkpoint: a random file in the official key layout
(tiny widths, ``{"model": ..., "optimizer": None, "epoch": n}``, ``module.`` prefixes) loads strictly
into each part; missing / extra / mis-shaped keys raise ``CheckpointError`` naming them."""
from __future__ import annotations

import pytest
import torch

from monother_ros.errors import CheckpointError
from monother_ros.model.branch import DepthBranch
from monother_ros.model.confidence import ConfidenceUNet
from monother_ros.model.dual import MonotherDual, teacher_config_for
from monother_ros.model.import_monother import (
    import_monother_checkpoint,
    import_monother_state_dict,
    official_to_part_key,
    part_key_to_official,
)
from monother_ros.model.variants import ModelConfig, get_preset

HEAD_MODULES = ("conv2", "seed_bin_regressor", "seed_projector", "projectors", "attractors",
                "conditional_log_binomial")


def _tiny() -> ModelConfig:
    return get_preset("test-tiny").replace(
        name="tiny-monother", generation="v1", head="zoe_bins", confidence_head=False,
        modality="thermal", mean=(0.45,) * 3, std=(0.225,) * 3)


def _official_branch_keys(sd: dict[str, torch.Tensor], extra: bool) -> dict[str, torch.Tensor]:
    """Our DepthBranch keys -> the official ZoeDepthDual names (written from the reference tree)."""
    sfx = "_extra" if extra else ""
    out = {}
    for k, v in sd.items():
        if k.startswith("pretrained."):
            out[f"core.core.pretrained{sfx}." + k[len("pretrained."):]] = v
        elif k.startswith("depth_head."):
            out[f"core.core.depth_head{sfx}." + k[len("depth_head."):]] = v
        elif k.startswith("bins_head."):
            module, rest = k[len("bins_head."):].split(".", 1)
            assert module in HEAD_MODULES
            out[f"{module}{sfx}.{rest}"] = v
        else:
            raise AssertionError(f"unexpected branch key {k}")
    return out


@pytest.fixture(scope="module")
def official():
    """A random official-layout state dict at tiny widths and the source modules."""
    torch.manual_seed(0)
    cfg = _tiny()
    thermal = DepthBranch(cfg)
    rgb = DepthBranch(teacher_config_for(cfg))
    conf = ConfidenceUNet()
    for m in (thermal, rgb, conf):  # make every tensor distinct from a fresh init
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.01)
            for name, b in m.named_buffers():
                if name.endswith(("running_mean", "running_var")):
                    b.uniform_(0.5, 1.5)
    sd = {}
    sd.update(_official_branch_keys(thermal.state_dict(), extra=False))
    sd.update(_official_branch_keys(rgb.state_dict(), extra=True))
    sd.update({"conf_net." + k: v for k, v in conf.state_dict().items()})
    return cfg, sd, thermal, rgb, conf


def _write(tmp_path, sd, name="ZoeDepthDualv1_test.pt"):
    path = tmp_path / name
    wrapped = {"module." + k: v.clone() for k, v in sd.items()}  # as saved from DataParallel
    torch.save({"model": wrapped, "optimizer": None, "epoch": 5}, path)
    return path


def _assert_same(module: torch.nn.Module, ref: torch.nn.Module):
    got, want = module.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_official_names_present_in_the_generated_layout(official):
    _, sd, *_ = official
    for key in [
        "core.core.pretrained.blocks.0.attn.qkv.weight", "core.core.pretrained_extra.pos_embed",
        "core.core.depth_head.scratch.output_conv2.0.weight", "core.core.depth_head_extra.projects.3.bias",
        "conv2.weight", "conv2_extra.bias", "seed_bin_regressor._net.2.weight",
        "seed_bin_regressor_extra._net.0.weight", "seed_projector_extra._net.2.bias",
        "projectors.3._net.0.weight", "projectors_extra.0._net.2.weight", "attractors_extra.3._net.2.bias",
        "conditional_log_binomial.mlp.0.weight",
        "conditional_log_binomial_extra.log_binomial_transform.k_idx",
        "conditional_log_binomial.log_binomial_transform.K_minus_1",
        "conf_net.inc.double_conv.0.weight", "conf_net.inc.double_conv.1.running_var",
        "conf_net.down4.maxpool_conv.1.double_conv.4.num_batches_tracked",
        "conf_net.up1.conv.double_conv.0.weight", "conf_net.outc_unc.0.conv.weight",
    ]:
        assert key in sd, key


def test_key_mapping_round_trip():
    cases = {
        "core.core.pretrained.norm.weight": ("thermal", "pretrained.norm.weight"),
        "core.core.pretrained_extra.norm.weight": ("rgb", "pretrained.norm.weight"),
        "core.core.depth_head_extra.scratch.layer4_rn.weight": ("rgb", "depth_head.scratch.layer4_rn.weight"),
        "projectors.2._net.0.bias": ("thermal", "bins_head.projectors.2._net.0.bias"),
        "projectors_extra.2._net.0.bias": ("rgb", "bins_head.projectors.2._net.0.bias"),
        "conv2_extra.weight": ("rgb", "bins_head.conv2.weight"),
        "conf_net.up4.conv.double_conv.3.weight": ("confidence", "up4.conv.double_conv.3.weight"),
    }
    for official, (part, ours) in cases.items():
        assert official_to_part_key(official) == (part, ours)
        assert part_key_to_official(part, ours) == official
    assert official_to_part_key("core.core.fusion_block.0.weight") is None
    assert official_to_part_key("nll_loss.weight") is None


def test_each_part_imports_strictly_from_a_file(official, tmp_path):
    cfg, sd, thermal, rgb, conf = official
    path = _write(tmp_path, sd)
    m, c = import_monother_checkpoint(path, cfg, part="thermal")
    assert isinstance(m, DepthBranch) and c == cfg and not m.training
    _assert_same(m, thermal)
    m, c = import_monother_checkpoint(path, cfg, part="rgb")
    assert c.modality == "rgb" and c.mean == (0.485, 0.456, 0.406)
    _assert_same(m, rgb)
    m, _ = import_monother_checkpoint(path, cfg, part="confidence")
    assert isinstance(m, ConfidenceUNet)
    _assert_same(m, conf)
    m, _ = import_monother_checkpoint(path, cfg, part="dual")
    assert isinstance(m, MonotherDual)
    _assert_same(m.student, thermal)
    _assert_same(m.teacher, rgb)
    _assert_same(m.confidence_net, conf)


def test_imported_student_reproduces_the_source_outputs(official):
    cfg, sd, thermal, *_ = official
    m, _ = import_monother_state_dict(sd, cfg, "thermal")
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        assert torch.equal(m(x).depth, thermal.eval()(x).depth)


def test_generic_import_checkpoint_dispatches_to_monother(official, tmp_path):
    from monother_ros.model.checkpoints import import_checkpoint, load_model, save_model

    cfg, sd, thermal, rgb, conf = official
    path = _write(tmp_path, sd)
    m, c = import_checkpoint(path, cfg)  # branch None -> thermal
    _assert_same(m, thermal)
    m, c = import_checkpoint(path, cfg, branch="confidence")
    _assert_same(m, conf)
    out = save_model(m, c, tmp_path / "conf_model", kind=m.checkpoint_kind)
    loaded, _ = load_model(out)
    assert isinstance(loaded, ConfidenceUNet)
    _assert_same(loaded, conf)
    m, c = import_checkpoint(path, cfg, branch="dual")
    out = save_model(m, c, tmp_path / "dual_model", kind=m.checkpoint_kind)
    loaded, c2 = load_model(out)
    assert isinstance(loaded, MonotherDual) and c2 == cfg
    _assert_same(loaded, m)


def test_single_branch_zoedepth_file_imports_as_thermal(official):
    cfg, sd, thermal, *_ = official
    single = {k: v for k, v in sd.items() if official_to_part_key(k)[0] == "thermal"}
    m, _ = import_monother_state_dict(single, cfg, "thermal")
    _assert_same(m, thermal)
    with pytest.raises(CheckpointError, match="no tensors of the 'rgb' part"):
        import_monother_state_dict(single, cfg, "rgb")


@pytest.mark.parametrize("part", ["thermal", "rgb", "confidence", "dual"])
def test_missing_key_is_named(official, part):
    cfg, sd, *_ = official
    victim = {"thermal": "attractors.1._net.0.weight", "rgb": "seed_projector_extra._net.2.bias",
              "confidence": "conf_net.up2.conv.double_conv.1.running_mean",
              "dual": "core.core.pretrained_extra.blocks.3.ls2.gamma"}[part]
    broken = {k: v for k, v in sd.items() if k != victim}
    with pytest.raises(CheckpointError, match="missing") as err:
        import_monother_state_dict(broken, cfg, part)
    assert victim in str(err.value)


def test_unknown_key_is_named(official):
    cfg, sd, *_ = official
    broken = dict(sd)
    broken["core.core.fusion_block.layers.0.weight"] = torch.zeros(3)
    for part in ("thermal", "dual"):
        with pytest.raises(CheckpointError, match="core.core.fusion_block.layers.0.weight"):
            import_monother_state_dict(broken, cfg, part)


def test_extra_key_inside_a_part_is_named(official):
    cfg, sd, *_ = official
    broken = dict(sd)
    broken["attractors.4._net.0.weight"] = torch.zeros(128, 128, 1, 1)  # a fifth attractor
    with pytest.raises(CheckpointError, match=r"unexpected.*attractors\.4\._net\.0\.weight"):
        import_monother_state_dict(broken, cfg, "thermal")


def test_misshaped_key_is_named_with_shapes(official):
    cfg, sd, *_ = official
    broken = dict(sd)
    broken["conf_net.outc_unc.0.conv.weight"] = torch.zeros(2, 64, 1, 1)
    with pytest.raises(CheckpointError, match=r"conf_net\.outc_unc\.0\.conv\.weight \(2, 64, 1, 1\)"):
        import_monother_state_dict(broken, cfg, "confidence")
    # A softplus-bins checkpoint has n (not 2 n) attractor outputs: the hint says why.
    broken = dict(sd)
    broken["attractors_extra.0._net.2.weight"] = torch.zeros(16, 128, 1, 1)
    with pytest.raises(CheckpointError, match="bin_centers_type"):
        import_monother_state_dict(broken, cfg, "rgb")


def test_non_zoe_preset_and_unknown_part_are_refused(official):
    cfg, sd, *_ = official
    with pytest.raises(CheckpointError, match="zoe_bins"):
        import_monother_state_dict(sd, get_preset("test-tiny"), "thermal")
    with pytest.raises(CheckpointError, match="unknown MonoTher checkpoint part"):
        import_monother_state_dict(sd, cfg, "fusion")


def test_full_size_student_layout_has_335_8_m_parameters():
    with torch.device("meta"):
        branch = DepthBranch(get_preset("monother-ms2-vitl"))
    n = sum(p.numel() for p in branch.parameters())
    assert n == 335_797_535  # the reference thermal-only branch: ~335.8 M
    assert sum(p.numel() for p in branch.bins_head.parameters()) == 481_886

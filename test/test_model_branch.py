"""DepthBranch: official key layout and size, heads, outputs, configs and presets."""
from __future__ import annotations

import pytest
import torch

from monother_ros.errors import ConfigError
from monother_ros.model.branch import DepthBranch, ExportableBranch
from monother_ros.model.variants import PRESETS, ModelConfig, get_preset

@pytest.fixture(autouse=True)
def _no_autograd():
    """Inference-only tests; scoped per test so autograd is not switched off for the whole session."""
    with torch.no_grad():
        yield



def official_layout(
    *, embed: int, depth: int, mlp_hidden: int, grid: int = 37, patch: int = 14, in_chans: int = 3,
    features: int, out_channels: tuple[int, int, int, int], hf2: int = 32,
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official Depth Anything (v1/v2, relative or metric) state dict.

    Written from the published layout (the reference DAv2 layout), independent of the package's modules.
    """
    c, f, oc = embed, features, out_channels
    lay: dict[str, tuple[int, ...]] = {
        "pretrained.cls_token": (1, 1, c),
        "pretrained.pos_embed": (1, 1 + grid * grid, c),
        "pretrained.mask_token": (1, c),
        "pretrained.patch_embed.proj.weight": (c, in_chans, patch, patch),
        "pretrained.patch_embed.proj.bias": (c,),
        "pretrained.norm.weight": (c,),
        "pretrained.norm.bias": (c,),
    }
    for i in range(depth):
        b = f"pretrained.blocks.{i}."
        lay.update({
            b + "norm1.weight": (c,), b + "norm1.bias": (c,),
            b + "attn.qkv.weight": (3 * c, c), b + "attn.qkv.bias": (3 * c,),
            b + "attn.proj.weight": (c, c), b + "attn.proj.bias": (c,),
            b + "ls1.gamma": (c,),
            b + "norm2.weight": (c,), b + "norm2.bias": (c,),
            b + "mlp.fc1.weight": (mlp_hidden, c), b + "mlp.fc1.bias": (mlp_hidden,),
            b + "mlp.fc2.weight": (c, mlp_hidden), b + "mlp.fc2.bias": (c,),
            b + "ls2.gamma": (c,),
        })
    h = "depth_head."
    for i in range(4):
        lay[h + f"projects.{i}.weight"] = (oc[i], c, 1, 1)
        lay[h + f"projects.{i}.bias"] = (oc[i],)
        lay[h + f"scratch.layer{i + 1}_rn.weight"] = (f, oc[i], 3, 3)
        r = h + f"scratch.refinenet{i + 1}."
        lay[r + "out_conv.weight"] = (f, f, 1, 1)
        lay[r + "out_conv.bias"] = (f,)
        for u in (1, 2):
            for k in (1, 2):
                lay[r + f"resConfUnit{u}.conv{k}.weight"] = (f, f, 3, 3)
                lay[r + f"resConfUnit{u}.conv{k}.bias"] = (f,)
    lay.update({
        h + "resize_layers.0.weight": (oc[0], oc[0], 4, 4), h + "resize_layers.0.bias": (oc[0],),
        h + "resize_layers.1.weight": (oc[1], oc[1], 2, 2), h + "resize_layers.1.bias": (oc[1],),
        h + "resize_layers.3.weight": (oc[3], oc[3], 3, 3), h + "resize_layers.3.bias": (oc[3],),
        h + "scratch.output_conv1.weight": (f // 2, f, 3, 3), h + "scratch.output_conv1.bias": (f // 2,),
        h + "scratch.output_conv2.0.weight": (hf2, f // 2, 3, 3), h + "scratch.output_conv2.0.bias": (hf2,),
        h + "scratch.output_conv2.2.weight": (1, hf2, 1, 1), h + "scratch.output_conv2.2.bias": (1,),
    })
    return lay


def layout_for(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    return official_layout(embed=cfg.embed_dim, depth=cfg.depth, mlp_hidden=int(cfg.embed_dim * cfg.mlp_ratio),
                           grid=cfg.pos_embed_grid, features=cfg.features, out_channels=cfg.out_channels,
                           hf2=cfg.head_features_2)


def test_full_vits_matches_official_layout_and_size():
    model = DepthBranch(get_preset("dav2-metric-vits"))
    sd = model.state_dict()
    assert len(sd) == 239
    assert sum(v.numel() for v in sd.values()) == 24_785_089
    assert {k: tuple(v.shape) for k, v in sd.items()} == layout_for(get_preset("dav2-vits"))
    expected = official_layout(embed=384, depth=12, mlp_hidden=1536, features=64, out_channels=(48, 96, 192, 384))
    assert sum(torch.Size(s).numel() for s in expected.values()) == 24_785_089


def _tiny(**kw) -> DepthBranch:
    torch.manual_seed(0)
    return DepthBranch(get_preset("test-tiny").replace(**kw)).eval()


@pytest.mark.parametrize("hw", [(70, 70), (42, 112)])  # square (518-like) and 252x644-like aspect
def test_metric_sigmoid_outputs(hw):
    model = _tiny(max_depth_m=20.0)
    x = torch.randn(2, 3, *hw)
    out = model(x)
    assert out.depth.shape == (2, 1, *hw)
    assert ((out.depth > 0) & (out.depth < 20.0)).all()
    assert out.confidence is not None and out.confidence.shape == (2, 1, *hw)
    assert ((out.confidence > 0) & (out.confidence < 1)).all()
    assert out.rel_depth is None
    hf2 = model.config.head_features_2
    assert out.similarity_features.shape == (2, hf2 + 1, *hw)
    # last channel = depth / max_depth; the others = the DPT out_conv activation
    torch.testing.assert_close(out.similarity_features[:, -1:], out.depth / 20.0)
    raw, inter = model.forward_dpt(x)
    torch.testing.assert_close(out.similarity_features[:, :hf2], inter.out_conv)
    torch.testing.assert_close(out.depth, raw * 20.0)


@pytest.mark.parametrize("hw", [(518, 518), (252, 644)])
def test_tiny_branch_at_official_input_sizes(hw):
    model = _tiny(features=8, out_channels=(4, 4, 8, 8), head_features_2=4, confidence_head=False)
    out = model(torch.randn(1, 3, *hw), features=False)
    assert out.depth.shape == (1, 1, *hw) and torch.isfinite(out.depth).all()


def test_max_depth_scales_linearly():
    a = _tiny(max_depth_m=80.0)
    b = _tiny(max_depth_m=20.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 42, 56)
    torch.testing.assert_close(a(x).depth, b(x).depth * 4.0)


def test_relative_head_is_relu_output():
    model = _tiny(head="relative", confidence_head=False)
    out = model(torch.randn(1, 3, 42, 56))
    assert out.confidence is None
    assert (out.depth >= 0).all()
    assert out.rel_depth is out.depth


class _FakeBins(torch.nn.Module):
    """Stands in for the ZoeDepth head: a fixed metric map and an embedding at 1/4 resolution."""

    def __init__(self, config):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, rel_depth, dpt):
        h, w = rel_depth.shape[-2:]
        emb = torch.arange(128.0).view(1, 128, 1, 1).expand(rel_depth.shape[0], 128, h // 2, w // 2)
        return rel_depth * self.scale + 1.0, emb.contiguous()


def test_zoe_bins_branch_assembles_161_channel_features(monkeypatch):
    import monother_ros.model.branch as branch_mod

    monkeypatch.setattr(branch_mod, "make_bins_head", lambda cfg: _FakeBins(cfg))
    model = _tiny(head="zoe_bins", head_features_2=32, confidence_head=False, generation="v2")
    out = model(torch.randn(1, 3, 28, 42))
    assert out.similarity_features.shape == (1, 161, 28, 42)
    torch.testing.assert_close(out.depth, out.rel_depth * 2.0 + 1.0)
    torch.testing.assert_close(out.similarity_features[:, 32:33], out.rel_depth)
    # the embedding is upsampled bilinearly with align_corners=True (constant maps stay constant)
    torch.testing.assert_close(out.similarity_features[0, 33 + 7], torch.full((28, 42), 7.0))
    assert any(k.startswith("bins_head.") for k in model.state_dict())


def test_export_wrapper_returns_plain_tuple():
    model = _tiny()
    exp = ExportableBranch(model).eval()
    x = torch.randn(1, 3, 28, 28)
    depth, conf = exp(x)
    assert exp.output_names == ("depth", "confidence")
    torch.testing.assert_close(depth, model(x).depth)
    assert ExportableBranch(_tiny(confidence_head=False)).output_names == ("depth",)


def test_input_checks():
    model = _tiny()
    with pytest.raises(ValueError, match="multiple"):
        model(torch.zeros(1, 3, 30, 28))
    with pytest.raises(ValueError, match="input"):
        model(torch.zeros(1, 1, 28, 28))


def test_v1_and_v2_taps():
    assert get_preset("dav1-vitl").taps == (20, 21, 22, 23)
    assert get_preset("monother-ms2-vitl").taps == (20, 21, 22, 23)
    assert get_preset("dav2-vitl").taps == (4, 11, 17, 23)
    assert get_preset("dav2-vitb").taps == (2, 5, 8, 11)
    ms2 = get_preset("monother-ms2-vitl")
    assert (ms2.head, ms2.max_depth_m, ms2.input_size, ms2.mean) == ("zoe_bins", 80.0, (252, 644), (0.45,) * 3)
    # the branch only runs the blocks up to the last tap: later blocks cannot change the output
    model = _tiny(taps=(0, 1, 2, 3), depth=5)
    x = torch.randn(1, 3, 28, 28)
    before = model(x).depth
    for p in model.pretrained.blocks[4].parameters():
        p.add_(1.0)
    torch.testing.assert_close(model(x).depth, before)


def test_config_json_round_trip_and_overrides():
    for name, cfg in PRESETS.items():
        again = ModelConfig.from_json(cfg.to_json())
        assert again == cfg, name
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    indoor = get_preset("dav2-metric-vits").replace(max_depth_m=20.0)
    assert indoor.max_depth_m == 20.0 and get_preset("dav2-metric-vits").max_depth_m == 80.0
    with pytest.raises(ConfigError):
        get_preset("dav2-metric-vits").replace(nope=1)
    with pytest.raises(ConfigError, match="unknown model preset"):
        get_preset("vit-huge")
    with pytest.raises(ConfigError):
        ModelConfig.from_json('{"embed_dim": 10, "num_heads": 3}')
    with pytest.raises(ConfigError):
        ModelConfig(input_size=(500, 518))
    with pytest.raises(ConfigError):
        ModelConfig(head="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ModelConfig(taps=(1, 2, 3))
    with pytest.raises(ConfigError):
        ModelConfig.from_json("{not json")


def test_presets_official_sizes():
    for size, (c, d, heads, f, oc) in {
        "vits": (384, 12, 6, 64, (48, 96, 192, 384)),
        "vitb": (768, 12, 12, 128, (96, 192, 384, 768)),
        "vitl": (1024, 24, 16, 256, (256, 512, 1024, 1024)),
    }.items():
        for name in (f"dav2-{size}", f"dav2-metric-{size}", f"dav1-{size}"):
            cfg = get_preset(name)
            assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.features, cfg.out_channels) == (c, d, heads, f, oc)
            assert cfg.pos_embed_grid == 37 and cfg.patch_size == 14 and cfg.mlp_hidden_dim == 4 * c
    assert get_preset("dav2-metric-vitl").head == "metric_sigmoid"
    assert get_preset("dav2-vitl").head == "relative"
    default = get_preset("monother-default")
    assert default.confidence_head and default.head == "metric_sigmoid"
    assert all(s % 14 == 0 for s in default.input_size)


def test_default_student_builds_and_runs():
    cfg = get_preset("monother-default")
    model = DepthBranch(cfg).eval()
    out = model(torch.randn(1, 3, *cfg.input_size), features=False)
    assert out.depth.shape == (1, 1, *cfg.input_size) and out.confidence is not None
    n = sum(p.numel() for p in model.parameters())
    assert n < 3_000_000  # small enough for a CPU real-time budget (~28 ms ORT, 1 thread)


def test_gradients_reach_encoder_but_confidence_loss_stays_in_its_head():
    model = _tiny().train()
    x = torch.randn(1, 3, 28, 42)
    with torch.enable_grad():
        out = model(x, features=False)
        out.depth.mean().backward()
        assert model.pretrained.pos_embed.grad is not None and model.pretrained.pos_embed.grad.abs().sum() > 0
        assert model.pretrained.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        model.zero_grad(set_to_none=True)
        out = model(x, features=False)
        out.confidence.mean().backward()
        assert model.confidence_head.net[2].weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.pretrained.parameters())
        assert all(p.grad is None for p in model.depth_head.parameters())

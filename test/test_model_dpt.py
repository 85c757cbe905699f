"""DPT head: shapes at both official aspect ratios, a hand-wired functional re-computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monother_ros.model.dpt import DPTHead

@pytest.fixture(autouse=True)
def _no_autograd():
    """Inference-only tests; scoped per test so autograd is not switched off for the whole session."""
    with torch.no_grad():
        yield


C, FEAT, OC, HF2 = 24, 16, (8, 12, 16, 20), 8


def _head(final="relu", **kw) -> DPTHead:
    torch.manual_seed(0)
    head = DPTHead(C, features=FEAT, out_channels=OC, head_features_2=HF2, final_activation=final, **kw)
    for p in head.parameters():  # default init gives near-zero maps; make every path matter
        p.copy_(torch.randn_like(p) * 0.2)
    return head.eval()


def _tokens(ph: int, pw: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, ph * pw, C, generator=g), torch.randn(1, C, generator=g)) for _ in range(4)]


def _by_hand(head: DPTHead, tokens, ph: int, pw: int) -> torch.Tensor:
    """Written from the DPT description, with F.* calls and the module's weights only."""
    s = head.scratch

    def conv(m, x, stride=1, pad=0):
        return F.conv2d(x, m.weight, m.bias, stride=stride, padding=pad)

    def rcu(u, x):
        y = conv(u.conv1, F.relu(x), pad=1)
        return conv(u.conv2, F.relu(y), pad=1) + x

    def fuse(block, x, skip, size):
        if skip is not None:
            x = x + rcu(block.resConfUnit1, skip)
        x = rcu(block.resConfUnit2, x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return conv(block.out_conv, x)

    maps = []
    for i, (t, _) in enumerate(tokens):
        x = t.transpose(1, 2).reshape(1, C, ph, pw)
        x = conv(head.projects[i], x)
        if i == 0:
            x = F.conv_transpose2d(x, head.resize_layers[0].weight, head.resize_layers[0].bias, stride=4)
        elif i == 1:
            x = F.conv_transpose2d(x, head.resize_layers[1].weight, head.resize_layers[1].bias, stride=2)
        elif i == 3:
            x = conv(head.resize_layers[3], x, stride=2, pad=1)
        maps.append(x)
    rn = [F.conv2d(m, getattr(s, f"layer{i + 1}_rn").weight, None, padding=1) for i, m in enumerate(maps)]
    p4 = fuse(s.refinenet4, rn[3], None, rn[2].shape[2:])
    p3 = fuse(s.refinenet3, p4, rn[2], rn[1].shape[2:])
    p2 = fuse(s.refinenet2, p3, rn[1], rn[0].shape[2:])
    p1 = fuse(s.refinenet1, p2, rn[0], (rn[0].shape[2] * 2, rn[0].shape[3] * 2))
    out = conv(s.output_conv1, p1, pad=1)
    out = F.interpolate(out, size=(ph * 14, pw * 14), mode="bilinear", align_corners=True)
    out = F.relu(conv(s.output_conv2[0], out, pad=1))
    return conv(s.output_conv2[2], out)


@pytest.mark.parametrize("final", ["relu", "sigmoid"])
def test_dpt_equals_hand_wired_computation(final):
    head = _head(final)
    tokens = _tokens(3, 5)
    out, inter = head(tokens, 3, 5)
    pre = _by_hand(head, tokens, 3, 5)
    expect = F.relu(pre) if final == "relu" else torch.sigmoid(pre)
    torch.testing.assert_close(out, expect, rtol=1e-4, atol=1e-5)
    assert (out >= 0).all() if final == "relu" else ((out >= 0) & (out <= 1)).all()


@pytest.mark.parametrize("ph,pw", [(37, 37), (18, 46)])  # 518x518 and 252x644 token grids
def test_shapes_at_official_aspect_ratios(ph, pw):
    head = _head()
    out, inter = head(_tokens(ph, pw), ph, pw)
    assert out.shape == (1, 1, ph * 14, pw * 14)
    assert inter.out_conv.shape == (1, HF2, ph * 14, pw * 14)
    # layer4 is strided by 2 with padding 1: ceil(n / 2); the refinenets follow layers 3, 2, 1.
    l4 = ((ph + 1) // 2, (pw + 1) // 2)
    assert inter.l4_rn.shape == (1, FEAT, *l4)
    assert inter.r4.shape == (1, FEAT, ph, pw)
    assert inter.r3.shape == (1, FEAT, 2 * ph, 2 * pw)
    assert inter.r2.shape == (1, FEAT, 4 * ph, 4 * pw)
    assert inter.r1.shape == (1, FEAT, 8 * ph, 8 * pw)
    assert (inter.out_conv >= 0).all()  # captured after the ReLU, as ZoeDepth's hook does


def test_intermediates_are_the_decoder_tensors():
    head = _head()
    tokens = _tokens(2, 3, seed=4)
    out, inter = head(tokens, 2, 3)
    # out is exactly the last 1x1 conv applied to out_conv, then the ReLU
    torch.testing.assert_close(out, F.relu(head.scratch.output_conv2[2](inter.out_conv)))
    # r1 upsampled feeds output_conv1
    torch.testing.assert_close(inter.r1.shape[-2:], torch.Size([16, 24]))


def test_official_key_names_and_no_bias_on_rn_layers():
    keys = set(_head().state_dict())
    assert "scratch.layer1_rn.weight" in keys and "scratch.layer1_rn.bias" not in keys
    assert {"resize_layers.0.weight", "resize_layers.1.weight", "resize_layers.3.weight"} <= keys
    assert not any(k.startswith("resize_layers.2") for k in keys)
    assert {"scratch.output_conv2.0.weight", "scratch.output_conv2.2.bias"} <= keys
    assert "scratch.refinenet4.resConfUnit1.conv1.weight" in keys  # exists (unused) officially too
    assert len(keys) == 64


def test_clstoken_readout_changes_output():
    head = _head(use_clstoken=True)
    tokens = _tokens(2, 2, seed=1)
    a, _ = head(tokens, 2, 2)
    b, _ = head([(t, c * 0 + 3.0) for t, c in tokens], 2, 2)
    assert "readout_projects.0.0.weight" in head.state_dict()
    assert not torch.allclose(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError):
        DPTHead(C, features=FEAT, out_channels=OC[:3])
    with pytest.raises(ValueError):
        DPTHead(C, features=FEAT, out_channels=OC, final_activation="tanh")  # type: ignore[arg-type]

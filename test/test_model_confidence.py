"""Confidence U-Net: exact parameter count and key layout of the official Conf_UNet, shapes with odd
sizes, the output gradient clip (NaN -> 0, clamp to 0.01) and the detached input."""
from __future__ import annotations

import pytest
import torch

from monother_ros.model.confidence import (
    CONFIDENCE_GRAD_LIMIT,
    ConfidenceUNet,
    DoubleConv,
    GradClipFunction,
    GradientClip,
    Up,
)


@pytest.fixture(autouse=True)
def _grad_enabled():
    # Some test modules switch autograd off globally at import; these tests need it on.
    with torch.enable_grad():
        yield


@pytest.fixture(scope="module")
def net() -> ConfidenceUNet:
    torch.manual_seed(0)
    return ConfidenceUNet()


def _double_conv_params(cin: int, cout: int) -> int:
    # two 3x3 convs with bias + two BatchNorms (weight, bias)
    return (cin * cout * 9 + cout) + 2 * cout + (cout * cout * 9 + cout) + 2 * cout


def test_parameter_count_matches_the_reference_structure(net):
    widths = [(8, 64), (64, 128), (128, 256), (256, 512), (512, 512),  # inc, down1..4
              (1024, 256), (512, 128), (256, 64), (128, 64)]  # up1..4 (concatenated inputs)
    want = sum(_double_conv_params(i, o) for i, o in widths) + (64 + 1)  # + 1x1 out conv
    assert want == 13_398_209
    assert sum(p.numel() for p in net.parameters()) == want


def test_state_dict_keys_follow_conf_unet(net):
    keys = set(net.state_dict())
    assert len(keys) == 9 * 2 * 7 + 2  # 9 DoubleConvs x (conv w,b + bn w,b,mean,var,count) x 2, out conv
    for k in ("inc.double_conv.0.weight", "inc.double_conv.4.num_batches_tracked",
              "down1.maxpool_conv.1.double_conv.3.weight", "down4.maxpool_conv.1.double_conv.1.running_mean",
              "up1.conv.double_conv.0.weight", "up4.conv.double_conv.4.running_var",
              "outc_unc.0.conv.weight", "outc_unc.0.conv.bias"):
        assert k in keys, k
    assert net.state_dict()["up1.conv.double_conv.0.weight"].shape == (256, 1024, 3, 3)
    assert net.state_dict()["up4.conv.double_conv.0.weight"].shape == (64, 128, 3, 3)


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (35, 33)])
def test_output_shape_and_range(net, hw):
    x = torch.randn(1, 8, *hw)
    with torch.no_grad():
        y = net.eval()(x)
    assert y.shape == (1, 1, *hw)
    assert float(y.min()) > 0.0 and float(y.max()) < 1.0


def test_up_pads_and_concatenates_skip_first():
    class Probe(torch.nn.Module):
        def forward(self, t):
            self.seen = t
            return t

    up = Up(3, 3)
    up.conv = Probe()  # see what the DoubleConv would get
    # A deep map that upsamples to one row and one column short of the skip.
    deep = torch.ones(1, 1, 2, 3)
    skip = torch.full((1, 2, 5, 7), 2.0)
    up(deep, skip)
    x = up.conv.seen
    assert x.shape == (1, 3, 5, 7)
    assert torch.all(x[:, :2] == 2.0)  # skip first
    # 2x3 -> 4x6 upsampled; pad 1 row (0 top, 1 bottom) and 1 column (0 left, 1 right).
    torch.testing.assert_close(x[0, 2, :4, :6], torch.ones(4, 6))
    assert torch.all(x[0, 2, 4, :] == 0.0) and torch.all(x[0, 2, :, 6] == 0.0)


def test_double_conv_mid_width_equals_output_width():
    dc = DoubleConv(10, 6)
    assert dc.double_conv[0].out_channels == 6 and dc.double_conv[3].in_channels == 6


def test_grad_clip_zeroes_nan_and_clamps():
    x = torch.zeros(5, requires_grad=True)
    y = GradClipFunction.apply(x)
    assert torch.equal(y.detach(), x.detach())
    y.backward(torch.tensor([float("nan"), 5.0, -3.0, 0.004, -0.02]))
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.01, -0.01, 0.004, -0.01]))
    assert CONFIDENCE_GRAD_LIMIT == 0.01


def test_grad_clip_module_is_identity_without_grad():
    clip = GradientClip()
    x = torch.randn(3)
    assert clip(x) is x  # no autograd node when nothing needs a gradient


def test_output_logit_gradient_is_clipped_in_the_network(net):
    torch.manual_seed(1)
    net.eval()  # BatchNorm statistics fixed (as frozen in training); gradients still flow
    x = torch.randn(1, 8, 16, 16)
    seen = {}

    def keep_logit(module, inputs, output):
        output.retain_grad()
        seen["logit"] = output

    handle = net.outc_unc[0].conv.register_forward_hook(keep_logit)
    try:
        y = net(x)
        (y * 1e4).sum().backward()  # dL/dy = 1e4 -> dL/dlogit = 1e4 * s(1-s), far above 0.01
    finally:
        handle.remove()
    g = seen["logit"].grad
    assert float(g.abs().max()) <= CONFIDENCE_GRAD_LIMIT + 1e-9
    assert float(g.abs().max()) == pytest.approx(CONFIDENCE_GRAD_LIMIT)
    net.zero_grad(set_to_none=True)


def test_input_is_detached(net):
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    y = net.eval()(x)
    y.sum().backward()
    assert x.grad is None
    assert net.inc.double_conv[0].weight.grad is not None  # the network itself does get gradients
    net.zero_grad(set_to_none=True)


def test_bad_input_shapes_raise(net):
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(1, 7, 32, 32))
    with pytest.raises(ValueError, match=">= 16"):
        net(torch.randn(1, 8, 8, 32))

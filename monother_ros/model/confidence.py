"""Confidence U-Net of MonoTher-Depth: per-pixel confidence of the RGB teacher's depth.

Input: the 8-channel metadata built on the teacher (RGB) pixel grid by
``monother_ros.distill.metadata.build_metadata`` (S_b, S_a warped, |d_rgb - d_thermal->rgb|, warped
thermal depth, RGB depth, RGB image); output: confidence in (0, 1), (B, 1, H, W).

Layout, module names and numerics follow the official ``Conf_UNet`` (MonoTher-Depth,
``zoedepth/models/zoedepth`` dual model), so that ``conf_net.*`` tensors of the official checkpoint
load with identity keys (after removing ``conf_net.``):

* ``inc``: DoubleConv(8, 64); DoubleConv = (3x3 conv with bias, BatchNorm, ReLU) x 2 with the middle
  width equal to the output width; state keys ``double_conv.{0,1,3,4}.*``;
* ``down1..down4``: MaxPool2d(2) then DoubleConv to 128, 256, 512, 512 (``maxpool_conv.1.*``);
* ``up1..up4``: bilinear x2 upsampling (align_corners=True) of the deeper map, zero padding to the
  skip's size (split floor/ceil as the reference), concatenation ``[skip, upsampled]`` and DoubleConv
  to 256, 128, 64, 64 (in widths 1024, 512, 256, 128; ``conv.double_conv.*``);
* ``outc_unc``: ``0`` = OutConv (1x1 conv 64 -> 1, key ``outc_unc.0.conv.*``), ``1`` = gradient clip,
  ``2`` = sigmoid.

13,398,209 parameters. The network's input is detached (the reference calls it on
``input.detach()``): confidence training never pushes gradients into the depth branches. The gradient
clip is an identity whose backward replaces NaN gradients by 0 and clamps them to +/-0.01.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CONFIDENCE_IN_CHANNELS",
    "CONFIDENCE_GRAD_LIMIT",
    "DoubleConv",
    "Down",
    "Up",
    "OutConv",
    "GradClipFunction",
    "GradientClip",
    "ConfidenceUNet",
]

_logger = logging.getLogger(__name__)

CONFIDENCE_IN_CHANNELS = 8  # metadata channels (6 components, the RGB image counting 3)
CONFIDENCE_GRAD_LIMIT = 0.01  # gradient clamp of the output logit


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) x 2; keys ``double_conv.{0,1,3,4}``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """MaxPool2d(2) (floor) then DoubleConv; keys ``maxpool_conv.1.*``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2 (align_corners) of the deeper map, pad to the skip, concat [skip, up], DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = self.up(deep)
        diff_y = skip.shape[2] - up.shape[2]
        diff_x = skip.shape[3] - up.shape[3]
        # Odd sizes lose a row/column in max pooling; zero-pad it back (floor half before).
        up = F.pad(up, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
        return self.conv(torch.cat([skip, up], dim=1))


class OutConv(nn.Module):
    """1x1 convolution; key ``conv.*``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class GradClipFunction(torch.autograd.Function):
    """Identity forward; backward: NaN -> 0, then clamp to +/- ``CONFIDENCE_GRAD_LIMIT``."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = torch.where(torch.isnan(grad), torch.zeros_like(grad), grad)
        return grad.clamp(min=-CONFIDENCE_GRAD_LIMIT, max=CONFIDENCE_GRAD_LIMIT)


class GradientClip(nn.Module):
    """Module wrapper of ``GradClipFunction`` (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        # The clip only matters for backward; skipping the autograd.Function when no graph is being
        # built keeps traced / exported inference graphs free of it (the values are identical).
        if torch.is_grad_enabled() and x.requires_grad:
            return GradClipFunction.apply(x)
        return x


class ConfidenceUNet(nn.Module):
    """The official confidence U-Net (``Conf_UNet(in_channels=8)``).

    Args:
        in_channels: metadata channels (8 in MonoTher-Depth).
        base_width: channels of the first level (official: 64); every level scales with it
            (w, 2w, 4w, 8w, 8w down, 4w, 2w, w, w up), so the cost falls with its square. The
            small shipped default uses 16 to train on a CPU; keys are the same for any width.
    """

    checkpoint_kind = "confidence_unet"  # model kind in our saved model directories

    def __init__(self, in_channels: int = CONFIDENCE_IN_CHANNELS, base_width: int = 64) -> None:
        super().__init__()
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if base_width <= 0:
            raise ValueError(f"base_width must be positive, got {base_width}")
        self.in_channels = int(in_channels)
        self.base_width = w = int(base_width)
        self.inc = DoubleConv(in_channels, w)
        self.down1 = Down(w, 2 * w)
        self.down2 = Down(2 * w, 4 * w)
        self.down3 = Down(4 * w, 8 * w)
        self.down4 = Down(8 * w, 8 * w)
        self.up1 = Up(16 * w, 4 * w)
        self.up2 = Up(8 * w, 2 * w)
        self.up3 = Up(4 * w, w)
        self.up4 = Up(2 * w, w)
        self.outc_unc = nn.Sequential(OutConv(w, 1), GradientClip(), nn.Sigmoid())

    def forward(self, metadata: Tensor) -> Tensor:
        """Confidence of the teacher depth.

        Args:
            metadata: (B, in_channels, H, W) float; H, W >= 16 (four 2x poolings). Detached here.

        Returns:
            (B, 1, H, W) confidence in (0, 1).
        """
        if metadata.ndim != 4 or metadata.shape[1] != self.in_channels:
            raise ValueError(
                f"confidence U-Net expects (B, {self.in_channels}, H, W), got {tuple(metadata.shape)}"
            )
        if metadata.shape[-2] < 16 or metadata.shape[-1] < 16:
            raise ValueError(f"confidence U-Net needs H, W >= 16, got {tuple(metadata.shape[-2:])}")
        x1 = self.inc(metadata.detach())
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc_unc(x)

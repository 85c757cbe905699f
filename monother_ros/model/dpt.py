"""DPT decoder head exactly as Depth Anything v1/v2 build it.

Reference: Ranftl et al., "Vision Transformers for Dense Prediction" (arXiv 2103.13413); module tree
and op order follow ``depth_anything_v2/dpt.py`` and ``util/blocks.py`` of the DAv2 release (DA v1
uses the same head). Parameter names match the official ``depth_head.*`` keys:
``projects.{0-3}``, ``resize_layers.{0,1,3}`` (index 2 is an Identity), ``scratch.layer{1-4}_rn``
(no bias), ``scratch.refinenet{1-4}.{out_conv,resConfUnit{1,2}.conv{1,2}}``, ``scratch.output_conv1``,
``scratch.output_conv2.{0,2}``.

Besides the depth map, ``DPTHead.forward`` returns the intermediate tensors that the ZoeDepth
metric-bins head reads (MonoTher/ZoeDepth capture them with forward hooks; here they are plain
return values so the graph exports to ONNX).
"""
from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DptIntermediates", "ResidualConvUnit", "FeatureFusionBlock", "DPTHead"]

FinalActivation = Literal["relu", "sigmoid"]


class DptIntermediates(NamedTuple):
    """Decoder tensors used by the metric-bins head and the similarity features.

    Names follow ZoeDepth's DepthAnythingCore ``layer_names``; F = ``features``, h x w the token grid.

    Attributes:
        out_conv: (B, head_features_2, H, W) ReLU activation inside ``output_conv2`` (its child 1),
            at the input resolution; the "32-channel DPT output conv" features.
        l4_rn: (B, F, h/2, w/2) output of ``scratch.layer4_rn`` (bottleneck).
        r4: (B, F, h, w) output of ``refinenet4``.
        r3: (B, F, 2h, 2w) output of ``refinenet3``.
        r2: (B, F, 4h, 4w) output of ``refinenet2``.
        r1: (B, F, 8h, 8w) output of ``refinenet1``.
    """

    out_conv: Tensor
    l4_rn: Tensor
    r4: Tensor
    r3: Tensor
    r2: Tensor
    r1: Tensor


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` (optionally with BatchNorm after each conv)."""

    def __init__(self, features: int, use_bn: bool) -> None:
        super().__init__()
        self.use_bn = use_bn
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(x))
        if self.use_bn:
            out = self.bn1(out)
        out = self.conv2(F.relu(out))
        if self.use_bn:
            out = self.bn2(out)
        return out + x


class FeatureFusionBlock(nn.Module):
    """RefineNet-style fusion: add the skip (through resConfUnit1), resConfUnit2, upsample, 1x1 conv.

    Upsampling is bilinear with ``align_corners=True``: to ``size`` when given, else by 2.
    """

    def __init__(self, features: int, use_bn: bool) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features, use_bn)
        self.resConfUnit2 = ResidualConvUnit(features, use_bn)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        out = x
        if skip is not None:
            out = out + self.resConfUnit1(skip)
        out = self.resConfUnit2(out)
        if size is None:
            out = F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            out = F.interpolate(out, size=(int(size[0]), int(size[1])), mode="bilinear",
                                align_corners=True)
        return self.out_conv(out)


class _Scratch(nn.Module):
    """Container mirroring the official ``scratch`` module (names only)."""


class DPTHead(nn.Module):
    """DPT decoder from 4 ViT token maps to a 1-channel map at the input resolution.

    Args:
        in_channels: ViT embed dim.
        features: fusion width F (vits 64, vitb 128, vitl 256).
        out_channels: per-tap projection widths.
        use_bn: BatchNorm in the residual units (False in every Depth Anything model).
        use_clstoken: concatenate the class token to each patch token (False in Depth Anything).
        head_features_2: hidden channels of ``output_conv2`` (32 officially).
        final_activation: ``relu`` (relative / DA v1 / MonoTher core) or ``sigmoid`` (DAv2 metric).
        patch_size: ViT patch size; the output is ``(patch_h * p, patch_w * p)``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        features: int,
        out_channels: Sequence[int],
        use_bn: bool = False,
        use_clstoken: bool = False,
        head_features_2: int = 32,
        final_activation: FinalActivation = "relu",
        patch_size: int = 14,
    ) -> None:
        super().__init__()
        if final_activation not in ("relu", "sigmoid"):
            raise ValueError(f"final_activation must be relu or sigmoid, got {final_activation!r}")
        oc = list(out_channels)
        if len(oc) != 4:
            raise ValueError(f"out_channels needs 4 entries, got {oc}")
        self.use_clstoken = use_clstoken
        self.final_activation = final_activation
        self.patch_size = patch_size
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, kernel_size=1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4, padding=0),  # x4
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2, padding=0),  # x2
            nn.Identity(),  # x1
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),  # /2
        ])
        if use_clstoken:
            self.readout_projects = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU()) for _ in oc
            )
        self.scratch = _Scratch()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn",
                    nn.Conv2d(c, features, kernel_size=3, stride=1, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, use_bn))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, stride=1, padding=1)
        last: nn.Module = nn.ReLU() if final_activation == "relu" else nn.Sigmoid()
        # Indices 0 and 2 carry weights (official keys output_conv2.0 / .2).
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_features_2, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(head_features_2, 1, kernel_size=1, stride=1, padding=0),
            last,
        )

    def forward(
        self, tokens: Sequence[tuple[Tensor, Tensor]], patch_h: int, patch_w: int
    ) -> tuple[Tensor, DptIntermediates]:
        """Decode.

        Args:
            tokens: 4 pairs ``(patch_tokens (B, patch_h*patch_w, C), class_token (B, C))``.
            patch_h: token rows (H / patch).
            patch_w: token columns (W / patch).

        Returns:
            ``(out, intermediates)``: out (B, 1, patch_h*p, patch_w*p) after the final activation
            (ReLU: relative inverse depth; sigmoid: depth / max_depth in (0, 1)), and the
            ``DptIntermediates``.
        """
        s = self.scratch
        layers = []
        for i, (x, cls) in enumerate(tokens):
            if self.use_clstoken:
                x = self.readout_projects[i](torch.cat((x, cls.unsqueeze(1).expand_as(x)), dim=-1))
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            layers.append(self.resize_layers[i](self.projects[i](x)))
        l1 = s.layer1_rn(layers[0])
        l2 = s.layer2_rn(layers[1])
        l3 = s.layer3_rn(layers[2])
        l4 = s.layer4_rn(layers[3])
        r4 = s.refinenet4(l4, None, l3.shape[2:])
        r3 = s.refinenet3(r4, l3, l2.shape[2:])
        r2 = s.refinenet2(r3, l2, l1.shape[2:])
        r1 = s.refinenet1(r2, l1)
        out = s.output_conv1(r1)
        p = self.patch_size
        out = F.interpolate(out, size=(patch_h * p, patch_w * p), mode="bilinear", align_corners=True)
        conv2 = s.output_conv2
        out_conv = conv2[1](conv2[0](out))
        out = conv2[3](conv2[2](out_conv))
        return out, DptIntermediates(out_conv=out_conv, l4_rn=l4, r4=r4, r3=r3, r2=r2, r1=r1)

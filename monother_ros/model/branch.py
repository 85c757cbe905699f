"""One depth branch: DINOv2 encoder + DPT decoder + head, for every ``ModelConfig``.

Contract with the ZoeDepth bins head (``monother_ros.model.zoe_bins.ZoeBinsHead``):
    ``ZoeBinsHead(config)``; ``forward(rel_depth (B, 1, H, W), dpt: DptIntermediates)
    -> (metric_depth (B, 1, H, W) metres, bin_embedding (B, config.bin_embedding_dim, h, w))``;
    attribute ``bins_head`` of ``DepthBranch`` (keys ``bins_head.*``).

State-dict layout (attribute names are chosen so official keys map by identity or a prefix swap):

=====================================  =========================================
official key                           ``DepthBranch`` key
=====================================  =========================================
DAv2 relative / metric ``pretrained.*``  ``pretrained.*`` (identity)
DAv2 ``depth_head.*``                  ``depth_head.*`` (identity)
DA v1 ``pretrained.*``, ``depth_head.*``  identity (v1 taps the last 4 blocks)
MonoTher ``core.core.pretrained.*``    ``pretrained.*``
MonoTher ``core.core.depth_head.*``    ``depth_head.*``
MonoTher ``conv2.*``, ``seed_*``,      ``bins_head.<same>``
``projectors.*``, ``attractors.*``,
``conditional_log_binomial.*``
MonoTher RGB: ``*_extra`` variants     same targets, ``_extra`` removed
(none)                                 ``confidence_head.*`` (student confidence)
=====================================  =========================================
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monother_ros.model.dpt import DptIntermediates, DPTHead
from monother_ros.model.heads import ConfidenceHead, make_bins_head
from monother_ros.model.variants import ModelConfig
from monother_ros.model.vit import DinoVisionTransformer

__all__ = ["BranchOutput", "DepthBranch", "ExportableBranch", "build_branch"]

_logger = logging.getLogger(__name__)


class BranchOutput(NamedTuple):
    """What one branch returns.

    Attributes:
        depth: (B, 1, H, W) float32. Metres for ``metric_sigmoid`` and ``zoe_bins``; for
            ``relative`` the official Depth Anything output (affine-invariant inverse depth,
            larger = nearer, NOT metres).
        confidence: (B, 1, H, W) in (0, 1) from the student confidence head, or None.
        similarity_features: (B, C, H, W) features for cross-modal similarity, or None when not
            asked for. ``zoe_bins``: C = head_features_2 + 1 + bin_embedding_dim (161 officially:
            out_conv, relative depth, bin embedding upsampled bilinearly, align_corners=True);
            ``metric_sigmoid``: head_features_2 + 1 (out_conv, depth / max_depth); ``relative``:
            head_features_2 + 1 (out_conv, relative depth). Not detached (the caller's job).
        rel_depth: (B, 1, H, W) relative (ReLU) output for ``relative`` and ``zoe_bins``, else None.
    """

    depth: Tensor
    confidence: Tensor | None
    similarity_features: Tensor | None
    rel_depth: Tensor | None


class DepthBranch(nn.Module):
    """Encoder + DPT + head described by a ``ModelConfig``.

    Input: (B, in_chans, H, W) image already normalised with ``config.mean/std``, H and W multiples
    of ``config.patch_size`` (any such size; the position embedding is resampled as DINOv2 does).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.pretrained = DinoVisionTransformer(
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            layerscale_init=config.layerscale_init,
            pos_embed_grid=config.pos_embed_grid,
            interpolate_offset=config.interpolate_offset,
        )
        self.depth_head = DPTHead(
            config.embed_dim,
            features=config.features,
            out_channels=config.out_channels,
            use_bn=config.use_bn,
            use_clstoken=config.use_clstoken,
            head_features_2=config.head_features_2,
            final_activation="sigmoid" if config.head == "metric_sigmoid" else "relu",
            patch_size=config.patch_size,
        )
        self.bins_head: nn.Module | None = make_bins_head(config) if config.head == "zoe_bins" else None
        self.confidence_head: ConfidenceHead | None = (
            ConfidenceHead(config.head_features_2, config.confidence_hidden)
            if config.confidence_head else None
        )

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected (B, {self.config.in_chans}, H, W) input, got {tuple(x.shape)}")
        p = self.config.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"input {x.shape[-2]}x{x.shape[-1]} is not a multiple of {p}")

    def forward_dpt(self, x: Tensor) -> tuple[Tensor, DptIntermediates]:
        """Encoder + DPT only: (raw DPT output (B, 1, H, W) after its activation, intermediates)."""
        self._check_input(x)
        p = self.config.patch_size
        patch_h, patch_w = x.shape[-2] // p, x.shape[-1] // p
        tokens = self.pretrained.get_intermediate_layers(x, list(self.config.taps), norm=True)
        return self.depth_head(tokens, patch_h, patch_w)

    def forward(self, x: Tensor, *, features: bool = True) -> BranchOutput:
        """Predict depth.

        Args:
            x: (B, in_chans, H, W) float32 normalised image, H and W multiples of the patch size.
            features: also build ``similarity_features`` (skipped when False).

        Returns:
            ``BranchOutput`` (see its attributes for shapes and units).

        Raises:
            ValueError: wrong channel count or a size that is not a multiple of the patch size.
        """
        raw, inter = self.forward_dpt(x)
        cfg = self.config
        bin_embedding: Tensor | None = None
        rel_depth: Tensor | None = None
        if cfg.head == "metric_sigmoid":
            depth_norm = raw
            depth = raw * cfg.max_depth_m
        elif cfg.head == "relative":
            rel_depth = raw
            depth = raw
            depth_norm = raw
        else:  # zoe_bins
            rel_depth = raw
            if self.bins_head is None:  # only if someone deleted it after construction
                raise RuntimeError("zoe_bins branch has no bins_head")
            depth, bin_embedding = self.bins_head(raw, inter)
            depth_norm = depth / cfg.max_depth_m
        confidence = (
            self.confidence_head(inter.out_conv, depth_norm) if self.confidence_head is not None else None
        )
        sim: Tensor | None = None
        if features:
            parts = [inter.out_conv, rel_depth if rel_depth is not None else depth_norm]
            if bin_embedding is not None:
                if bin_embedding.shape[-2:] != depth.shape[-2:]:
                    bin_embedding = F.interpolate(bin_embedding, size=depth.shape[-2:], mode="bilinear",
                                                  align_corners=True)
                parts.append(bin_embedding)
            sim = torch.cat(parts, dim=1)
        return BranchOutput(depth=depth, confidence=confidence, similarity_features=sim,
                            rel_depth=rel_depth)


class ExportableBranch(nn.Module):
    """ONNX-friendly wrapper: returns a plain tuple ``(depth,)`` or ``(depth, confidence)``.

    ``output_names`` lists the names in order (``depth`` (B,1,H,W) metres, ``confidence``).
    """

    def __init__(self, branch: DepthBranch) -> None:
        super().__init__()
        self.branch = branch
        self.output_names: tuple[str, ...] = (
            ("depth", "confidence") if branch.confidence_head is not None else ("depth",)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.branch(x, features=False)
        if out.confidence is not None:
            return out.depth, out.confidence
        return (out.depth,)


def build_branch(config: ModelConfig) -> DepthBranch:
    """``DepthBranch(config)`` in eval mode (inference default; call ``.train()`` to train)."""
    return DepthBranch(config).eval()

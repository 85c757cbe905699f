"""The confidence network's input: 6 components / 8 channels on the RGB (teacher) prediction grid.

Reference: ``ZoeDepthDual.forward`` with ``nll_loss=True``. Thermal = student (a), RGB = teacher (b),
``T_rgb_thermal`` = the official ``pose_t2rgb``; every tensor at prediction resolution with the
intrinsics of that grid. Steps:

1. RGB pixels -> thermal with the RGB depth (positions detached): ``grid_rgb_in_thermal``.
   Thermal pixels -> RGB with the thermal depth: ``grid_thermal_in_rgb``.
2. ``d_thermal->rgb`` (:func:`monother_ros.core.warp.warp_depth`): thermal depth sampled at
   ``grid_rgb_in_thermal`` and expressed in the RGB frame; gradient reaches the thermal depth.
3. ``diff = |d_rgb.detach() - d_thermal->rgb|`` (gradient into the thermal depth only).
4. Features (detached, 161 channels for the ZoeDepth head, any C works):
   S_b = cos(f_rgb, f_thermal sampled at ``grid_rgb_in_thermal``) on the RGB grid;
   S_a = cos(f_thermal, f_rgb sampled at ``grid_thermal_in_rgb``) on the thermal grid, brought to
   the RGB grid with *nearest* sampling at ``grid_rgb_in_thermal``. cos = <f1, f2> / (|f1||f2| + 1e-8).
5. Metadata channels, in this order (the official ``torch.cat`` order):

   ====  ==================================================================================
   0     S_b
   1     S_a warped to the RGB grid
   2     diff, set to -1 where not (d_rgb > min_depth and d_thermal->rgb > min_depth)
   3     d_thermal->rgb, set to 0 where < min_depth
   4     d_rgb (RGB predicted depth)
   5-7   RGB image in [0, 1] (not ImageNet-normalised), bilinearly resized (align_corners) to
         the prediction grid when its size differs
   ====  ==================================================================================

The whole tensor is detached (the confidence U-Net's input is detached in the reference).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monother_ros.core.warp import as_batched_matrix, pixels_to_grid, project_pixels, sample, warp_depth

__all__ = [
    "METADATA_CHANNELS",
    "MetadataResult",
    "cosine_similarity_map",
    "build_metadata",
    "build_metadata_from_outputs",
    "MetadataBuilder",
]

_logger = logging.getLogger(__name__)

METADATA_CHANNELS: tuple[str, ...] = (
    "s_b",
    "s_a_in_rgb",
    "depth_diff",
    "thermal_depth_in_rgb",
    "rgb_depth",
    "rgb_r",
    "rgb_g",
    "rgb_b",
)

_COS_EPS = 1e-8


@dataclass(frozen=True)
class MetadataResult:
    """Metadata and the intermediates the losses need (all on the RGB prediction grid).

    Attributes:
        metadata: (B, 8, H, W) detached, channel order :data:`METADATA_CHANNELS`.
        s_b: (B, 1, H, W) detached RGB-side similarity.
        s_a_in_rgb: (B, 1, H, W) detached thermal-side similarity on the RGB grid.
        thermal_depth_in_rgb: (B, 1, H, W) metres, raw ``d_thermal->rgb`` (not zeroed); carries the
            gradient into the thermal depth.
        diff: (B, 1, H, W) raw ``|d_rgb.detach() - d_thermal->rgb|`` (no -1 fill); carries the
            gradient into the thermal depth.
        depth_ok: (B, 1, H, W) bool, both depths inside (min_depth, max_depth).
        rgb_depth: (B, 1, H, W) the RGB depth as given (not detached).
        grid_rgb_in_thermal: (B, H, W, 2) normalised positions of RGB pixels in the thermal image.
        grid_thermal_in_rgb: (B, Ht, Wt, 2) normalised positions of thermal pixels in the RGB image.
    """

    metadata: torch.Tensor
    s_b: torch.Tensor
    s_a_in_rgb: torch.Tensor
    thermal_depth_in_rgb: torch.Tensor
    diff: torch.Tensor
    depth_ok: torch.Tensor
    rgb_depth: torch.Tensor
    grid_rgb_in_thermal: torch.Tensor
    grid_thermal_in_rgb: torch.Tensor


def cosine_similarity_map(f1: torch.Tensor, f2: torch.Tensor, eps: float = _COS_EPS) -> torch.Tensor:
    """Per-pixel cosine similarity of two (B, C, H, W) maps -> (B, 1, H, W) (reference formula)."""
    if f1.shape != f2.shape:
        raise ValueError(f"feature maps differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    dot = (f1 * f2).sum(dim=1, keepdim=True)
    n1 = torch.linalg.vector_norm(f1, dim=1, keepdim=True)
    n2 = torch.linalg.vector_norm(f2, dim=1, keepdim=True)
    return dot / (n1 * n2 + eps)


def build_metadata(
    thermal_features: torch.Tensor,
    rgb_features: torch.Tensor,
    thermal_depth: torch.Tensor,
    rgb_depth: torch.Tensor,
    rgb_image: torch.Tensor,
    K_thermal: torch.Tensor | np.ndarray,
    K_rgb: torch.Tensor | np.ndarray,
    T_rgb_thermal: torch.Tensor | np.ndarray,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
) -> MetadataResult:
    """Build the 8-channel metadata and the consistency intermediates.

    Args:
        thermal_features: (B, C, Ht, Wt) student similarity features (detached here).
        rgb_features: (B, C, H, W) teacher similarity features (detached here).
        thermal_depth: (B, 1, Ht, Wt) student depth, metres (gradient kept through the warp).
        rgb_depth: (B, 1, H, W) teacher depth, metres.
        rgb_image: (B, 3, Hi, Wi) RGB in [0, 1] (resized to (H, W) when different).
        K_thermal, K_rgb: (B, 3, 3) or (3, 3) intrinsics of the two *prediction* grids (see
            :func:`monother_ros.core.warp.scale_intrinsics`; the reference scales by the ratio).
        T_rgb_thermal: (B, 4, 4) or (4, 4), thermal -> RGB optical frame.
        min_depth, max_depth: valid depth range, metres.

    Returns:
        :class:`MetadataResult`.
    """
    if rgb_depth.dim() != 4 or rgb_depth.shape[1] != 1:
        raise ValueError(f"rgb_depth must be (B, 1, H, W), got {tuple(rgb_depth.shape)}")
    if thermal_features.shape[1] != rgb_features.shape[1]:
        raise ValueError(
            f"feature channels differ: thermal {thermal_features.shape[1]} vs rgb {rgb_features.shape[1]}"
        )
    b, _, h, w = rgb_depth.shape
    ht, wt = thermal_depth.shape[-2:]
    if rgb_features.shape[-2:] != (h, w) or thermal_features.shape[-2:] != (ht, wt):
        raise ValueError("features must be on the same grids as the depths of their branch")
    if rgb_image.dim() != 4 or rgb_image.shape[1] != 3:
        raise ValueError(f"rgb_image must be (B, 3, H, W), got {tuple(rgb_image.shape)}")
    T_rt = as_batched_matrix(T_rgb_thermal, 4, b, rgb_depth)
    K_t = as_batched_matrix(K_thermal, 3, b, rgb_depth)
    K_r = as_batched_matrix(K_rgb, 3, b, rgb_depth)

    # d_thermal->rgb and the RGB pixels' positions in the thermal image (guided by the RGB depth).
    warped = warp_depth(thermal_depth, rgb_depth, K_t, K_r, T_rt, min_z=0.01)
    t_in_rgb = warped.depth
    grid_rgb_in_t = warped.grid
    # Thermal pixels' positions in the RGB image (guided by the thermal depth), for S_a.
    uv_t_in_rgb, _ = project_pixels(thermal_depth.detach(), K_t, K_r, T_rt)
    grid_t_in_rgb = pixels_to_grid(uv_t_in_rgb, (h, w)).detach()

    diff = (rgb_depth.detach() - t_in_rgb).abs()

    f_t = thermal_features.detach()
    f_r = rgb_features.detach()
    s_b = cosine_similarity_map(f_r, sample(f_t, grid_rgb_in_t))
    s_a = cosine_similarity_map(f_t, sample(f_r, grid_t_in_rgb))
    s_a_in_rgb = sample(s_a, grid_rgb_in_t, mode="nearest")

    with torch.no_grad():
        both_positive = (rgb_depth > min_depth) & (t_in_rgb > min_depth)
        depth_ok = both_positive & (rgb_depth < max_depth) & (t_in_rgb < max_depth)
        diff_channel = torch.where(both_positive, diff, torch.full_like(diff, -1.0))
        t_channel = torch.where(t_in_rgb < min_depth, torch.zeros_like(t_in_rgb), t_in_rgb)
        image = rgb_image.to(rgb_depth.dtype)
        if image.shape[-2:] != (h, w):
            image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=True)
        metadata = torch.cat((s_b, s_a_in_rgb, diff_channel, t_channel, rgb_depth, image), dim=1).detach()

    return MetadataResult(
        metadata=metadata,
        s_b=s_b.detach(),
        s_a_in_rgb=s_a_in_rgb.detach(),
        thermal_depth_in_rgb=t_in_rgb,
        diff=diff,
        depth_ok=depth_ok,
        rgb_depth=rgb_depth,
        grid_rgb_in_thermal=grid_rgb_in_t,
        grid_thermal_in_rgb=grid_t_in_rgb,
    )


def build_metadata_from_outputs(
    student: Any,
    teacher: Any,
    rgb_image: torch.Tensor,
    K_thermal: torch.Tensor | np.ndarray,
    K_rgb: torch.Tensor | np.ndarray,
    T_rgb_thermal: torch.Tensor | np.ndarray,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
) -> MetadataResult:
    """:func:`build_metadata` from two branch outputs (objects with ``depth`` and ``similarity_features``)."""
    if student.similarity_features is None or teacher.similarity_features is None:
        raise ValueError("both branch outputs need similarity_features (run the branches with features=True)")
    return build_metadata(
        student.similarity_features,
        teacher.similarity_features,
        student.depth,
        teacher.depth,
        rgb_image,
        K_thermal,
        K_rgb,
        T_rgb_thermal,
        min_depth=min_depth,
        max_depth=max_depth,
    )


class MetadataBuilder:
    """A ``MetadataFn`` for ``MonotherDual.forward``: returns the tensor, keeps the full result in ``last``.

    Args:
        rgb_image, K_thermal, K_rgb, T_rgb_thermal, min_depth, max_depth: as :func:`build_metadata`.
    """

    def __init__(
        self,
        rgb_image: torch.Tensor,
        K_thermal: torch.Tensor | np.ndarray,
        K_rgb: torch.Tensor | np.ndarray,
        T_rgb_thermal: torch.Tensor | np.ndarray,
        *,
        min_depth: float = 1e-3,
        max_depth: float = 80.0,
    ) -> None:
        self._args = (rgb_image, K_thermal, K_rgb, T_rgb_thermal)
        self._kwargs = {"min_depth": min_depth, "max_depth": max_depth}
        self.last: MetadataResult | None = None

    def __call__(self, student: Any, teacher: Any) -> torch.Tensor:
        self.last = build_metadata_from_outputs(student, teacher, *self._args, **self._kwargs)
        return self.last.metadata

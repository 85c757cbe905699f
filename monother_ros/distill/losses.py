"""MonoTher-Depth losses (reference ``zoedepth/trainers/loss.py`` and the RGB-T trainer).

Terms (B = batch; every mean below pools the masked pixels of the whole batch, while top-k
exclusions are decided per image, see :mod:`monother_ros.distill.masks`):

* :func:`silog_loss`: g = log(pred + 1e-7) - log(gt + 1e-7) over the mask minus the top 20 % of
  |gt - pred| (ranked per image over *all* pixels); ``10 * sqrt(Var(g) + 0.15 * mean(g)^2)`` with
  the unbiased variance (``torch.var``). The prediction is resized to the ground truth first
  (bilinear, align_corners=True). A global scale s of the prediction adds log s to every g: the
  variance is unchanged and only the mean term moves.
* :func:`consistency_loss`: ``mean((conf.detach() * |d_rgb.detach() - d_thermal->rgb|)[mask])``;
  the gradient reaches only the thermal depth (mask: :func:`~monother_ros.distill.masks.consistency_mask`).
* :func:`confidence_nll_loss`: r = |gt - pred| (pred detached), mask minus the top 20 % of r;
  ``mean(r c) - 0.002 mean(log c)`` (Laplacian NLL with c as inverse scale): per pixel the minimiser
  is c* = 0.002 / r, capped at 1 by the sigmoid output.
* :func:`edge_aware_smoothness`: ``mean(|dx d| exp(-mean_c |dx I|)) + mean(|dy d| exp(-mean_c |dy I|))``
  on the raw depth (no mean-depth normalisation, as the reference), each direction without the
  pixels among the top 20 % image gradients of their image.

Totals: :func:`supervised_loss` (stage 1, MS2 weights: SILog RGB 1 + SILog thermal 1 + 0.2
consistency + 0.1 NLL + 0.01 smoothness + 1e-4 confidence smoothness) and :func:`label_free_loss`
(stage 2: consistency 2 + smoothness 0.01). ``distillation`` switches the ablations: ``none`` (no
consistency, no confidence terms), ``no_confidence`` (consistency with conf = 1, no confidence
terms), ``full``.

Deviations from the reference, all on degenerate input: an empty mask gives a loss of 0 (still
attached to the graph) instead of NaN, and SILog over fewer than 2 pixels uses a variance of 0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from monother_ros.core.warp import backward_warp, warp_depth
from monother_ros.distill.masks import REFERENCE_STRIDE, consistency_mask, exclude_top_fraction
from monother_ros.distill.metadata import MetadataResult

__all__ = [
    "Distillation",
    "SupervisedWeights",
    "LabelFreeWeights",
    "silog_loss",
    "consistency_loss",
    "confidence_nll_loss",
    "edge_aware_smoothness",
    "teacher_target_in_thermal",
    "supervised_loss",
    "label_free_loss",
]

_logger = logging.getLogger(__name__)

Distillation = Literal["none", "no_confidence", "full"]
_DISTILLATION = ("none", "no_confidence", "full")
SILOG_EPS = 1e-7


@dataclass(frozen=True)
class SupervisedWeights:
    """Stage-1 weights (MS2 configuration; ``student_nll`` is this project's student-confidence head)."""

    silog_rgb: float = 1.0
    silog_thermal: float = 1.0
    consistency: float = 0.2
    nll: float = 0.1
    smoothness: float = 0.01
    confidence_smoothness: float = 1e-4
    student_nll: float = 0.1


@dataclass(frozen=True)
class LabelFreeWeights:
    """Stage-2 weights (label-free ViViD fine-tune: consistency 2, plus smoothness)."""

    consistency: float = 2.0
    smoothness: float = 0.01
    student_nll: float = 0.1


def _zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    """A 0 that stays attached to ``t``'s graph (so ``backward`` works on an empty term)."""
    return t.sum() * 0.0


def _resize_to(x: torch.Tensor, hw: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=True)


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.dim() == 3 else t


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.15,
    exclude_top: float = 0.2,
    interpolate: bool = True,
    stride: int = REFERENCE_STRIDE,
) -> torch.Tensor:
    """Scale-invariant log loss ``10 * sqrt(Var(g) + beta * mean(g)^2)``.

    Args:
        pred: (B, 1, h, w) predicted depth, metres.
        target: (B, 1, H, W) or (B, H, W) ground truth, metres.
        mask: (B, 1, H, W) bool valid ground truth, or None (all pixels).
        beta: weight of the squared mean (0.15).
        exclude_top: fraction of largest |target - pred| per image left out (0 keeps all).
        interpolate: resize ``pred`` to the target's size when they differ.

    Returns:
        scalar tensor.
    """
    target = _as_4d(target)
    if interpolate:
        pred = _resize_to(pred, target.shape[-2:])
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    keep = torch.ones_like(target, dtype=torch.bool) if mask is None else _as_4d(mask).bool()
    if exclude_top > 0:
        keep = keep & exclude_top_fraction((target - pred).abs(), exclude_top, stride=stride)
    if not bool(keep.any()):
        return _zero_like_graph(pred)
    g = torch.log(pred[keep].float() + SILOG_EPS) - torch.log(target[keep].float() + SILOG_EPS)
    var = torch.var(g) if g.numel() > 1 else torch.zeros((), dtype=g.dtype, device=g.device)
    return 10.0 * torch.sqrt(var + beta * g.mean() ** 2)


def consistency_loss(confidence: torch.Tensor | None, diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean((conf.detach() * diff)[mask])``; ``confidence=None`` means conf = 1.

    Args:
        confidence: (B, 1, H, W) teacher confidence or None.
        diff: (B, 1, H, W) |d_rgb.detach() - d_thermal->rgb| (the gradient path to the student).
        mask: (B, 1, H, W) bool.
    """
    residual = diff if confidence is None else confidence.detach() * diff
    mask = mask.detach()
    if not bool(mask.any()):
        return _zero_like_graph(residual)
    return residual[mask].mean()


def confidence_nll_loss(
    confidence: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.002,
    exclude_top: float = 0.2,
    interpolate: bool = True,
    detach_pred: bool = True,
    stride: int = REFERENCE_STRIDE,
) -> torch.Tensor:
    """Laplacian NLL of a confidence map: ``mean(r c) - beta * mean(log c)``, r = |target - pred|.

    Args:
        confidence: (B, 1, h, w) in (0, 1] (resized to the target when different).
        pred: (B, 1, h', w') depth whose error the confidence predicts, metres.
        target: (B, 1, H, W) reference depth (ground truth, or confident teacher depth), metres.
        mask: (B, 1, H, W) bool, valid target pixels.
        beta: log weight (0.002); the per-pixel minimiser is c* = beta / r.
        exclude_top: fraction of largest r per image left out.
        detach_pred: train only the confidence (the reference detaches the depth).

    Returns:
        scalar tensor.
    """
    target = _as_4d(target)
    if interpolate:
        pred = _resize_to(pred, target.shape[-2:])
        confidence = _resize_to(confidence, target.shape[-2:])
    if detach_pred:
        pred = pred.detach()
    r = (target - pred).abs()
    keep = torch.ones_like(target, dtype=torch.bool) if mask is None else _as_4d(mask).bool()
    if exclude_top > 0:
        keep = keep & exclude_top_fraction(r, exclude_top, stride=stride)
    keep = keep.detach()
    if not bool(keep.any()):
        return _zero_like_graph(confidence)
    # A saturated sigmoid can give exactly 0 in float32 (log -> -inf, NaN gradients); the smallest normal
    # float changes nothing wherever the reference's value is finite.
    safe_confidence = confidence[keep].clamp_min(torch.finfo(confidence.dtype).tiny)
    return (r * confidence)[keep].mean() - beta * torch.log(safe_confidence).mean()


def edge_aware_smoothness(
    depth: torch.Tensor,
    image: torch.Tensor,
    *,
    exclude_top: float = 0.2,
    inverse: bool = False,
    stride: int = REFERENCE_STRIDE,
) -> torch.Tensor:
    """Edge-aware first-order smoothness of a (B, 1, H, W) map guided by a (B, C, H', W') image.

    Args:
        depth: map to smooth (depth, or a confidence map).
        image: guide (RGB image in [0, 1], or relative depth); resized to ``depth`` when different.
        exclude_top: fraction of largest image gradients per image left out of each direction.
        inverse: smooth 1 / (depth + 1e-6) instead (the reference's ``binvse_input``; off in MonoTher).

    Returns:
        scalar tensor.
    """
    d = 1.0 / (depth + 1e-6) if inverse else depth
    image = _resize_to(image.to(d.dtype), d.shape[-2:])
    gx = (d[..., :, :-1] - d[..., :, 1:]).abs()
    gy = (d[..., :-1, :] - d[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(dim=1, keepdim=True)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(dim=1, keepdim=True)
    gx = gx * torch.exp(-ix)
    gy = gy * torch.exp(-iy)
    if exclude_top > 0:
        gx = gx[exclude_top_fraction(ix, exclude_top, stride=stride).expand_as(gx)]
        gy = gy[exclude_top_fraction(iy, exclude_top, stride=stride).expand_as(gy)]
    return gx.mean() + gy.mean()


def teacher_target_in_thermal(
    rgb_depth: torch.Tensor,
    rgb_confidence: torch.Tensor,
    thermal_depth: torch.Tensor,
    K_thermal: torch.Tensor | np.ndarray,
    K_rgb: torch.Tensor | np.ndarray,
    T_rgb_thermal: torch.Tensor | np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's depth and confidence seen from the thermal view (targets for the student's own
    confidence head in stage 2), guided by the student depth; everything detached.

    Returns:
        depth (B, 1, Ht, Wt) metres in the thermal frame, confidence (B, 1, Ht, Wt), valid (bool).
    """
    with torch.no_grad():
        T = torch.as_tensor(T_rgb_thermal, dtype=rgb_depth.dtype, device=rgb_depth.device)
        T_thermal_rgb = torch.linalg.inv(T)
        res = warp_depth(rgb_depth, thermal_depth, K_rgb, K_thermal, T_thermal_rgb, zero_invalid=True)
        conf, _ = backward_warp(rgb_confidence, thermal_depth, K_rgb, K_thermal, T_thermal_rgb)
    return res.depth, conf * res.valid, res.valid


def _check_distillation(distillation: str) -> None:
    if distillation not in _DISTILLATION:
        raise ValueError(f"distillation must be one of {_DISTILLATION}, got {distillation!r}")


def _consistency_terms(
    metadata: MetadataResult | None,
    confidence: torch.Tensor | None,
    distillation: Distillation,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    if metadata is None:
        raise ValueError(f"distillation={distillation!r} needs the metadata (build_metadata)")
    conf = None
    if distillation == "full":
        if confidence is None:
            raise ValueError("distillation='full' needs the teacher confidence")
        conf = confidence
    mask = consistency_mask(metadata.diff, metadata.s_b, metadata.depth_ok, conf, stride=stride)
    return consistency_loss(conf, metadata.diff, mask), mask


def supervised_loss(
    thermal_depth: torch.Tensor,
    rgb_depth: torch.Tensor,
    thermal_gt: torch.Tensor,
    rgb_gt: torch.Tensor,
    rgb_image: torch.Tensor,
    *,
    thermal_mask: torch.Tensor | None = None,
    rgb_mask: torch.Tensor | None = None,
    metadata: MetadataResult | None = None,
    confidence: torch.Tensor | None = None,
    rgb_rel_depth: torch.Tensor | None = None,
    student_confidence: torch.Tensor | None = None,
    weights: SupervisedWeights = SupervisedWeights(),
    distillation: Distillation = "full",
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    stride: int = REFERENCE_STRIDE,
) -> dict[str, torch.Tensor]:
    """Stage-1 loss (ground truth for both cameras).

    Args:
        thermal_depth, rgb_depth: (B, 1, h, w) predictions, metres.
        thermal_gt, rgb_gt: (B, 1, H, W) ground truth, metres (0 / out of range = none).
        rgb_image: (B, 3, H, W) RGB in [0, 1] (smoothness guide).
        thermal_mask, rgb_mask: valid ground truth; default (min_depth, max_depth).
        metadata: :func:`~monother_ros.distill.metadata.build_metadata` result (distillation != none).
        confidence: (B, 1, h, w) teacher confidence (``full``).
        rgb_rel_depth: (B, 1, H', W') teacher relative depth, guide of the confidence smoothness.
        student_confidence: (B, 1, h, w) the student's own confidence head, trained by NLL
            against the thermal ground truth when given.
        weights: term weights; distillation: ablation switch.

    Returns:
        dict of the computed (unweighted) terms among ``silog_rgb``, ``silog_thermal``,
        ``smoothness``, ``consistency``, ``nll``, ``confidence_smoothness``, ``student_nll``, and
        ``total`` (weighted sum).
    """
    _check_distillation(distillation)
    thermal_gt, rgb_gt = _as_4d(thermal_gt), _as_4d(rgb_gt)
    if thermal_mask is None:
        thermal_mask = (thermal_gt > min_depth) & (thermal_gt < max_depth)
    if rgb_mask is None:
        rgb_mask = (rgb_gt > min_depth) & (rgb_gt < max_depth)
    terms: dict[str, torch.Tensor] = {}
    total = torch.zeros((), dtype=thermal_depth.dtype, device=thermal_depth.device)

    def add(name: str, value: torch.Tensor, weight: float) -> None:
        nonlocal total
        terms[name] = value
        total = total + weight * value

    if weights.silog_rgb > 0:
        add("silog_rgb", silog_loss(rgb_depth, rgb_gt, rgb_mask, stride=stride), weights.silog_rgb)
    if weights.silog_thermal > 0:
        add("silog_thermal", silog_loss(thermal_depth, thermal_gt, thermal_mask, stride=stride), weights.silog_thermal)
    if weights.smoothness > 0:
        # The reference smooths the RGB prediction resized to the ground truth (= image) size.
        rgb_at_image = _resize_to(rgb_depth, rgb_image.shape[-2:])
        add("smoothness", edge_aware_smoothness(rgb_at_image, rgb_image, stride=stride), weights.smoothness)
    if distillation != "none" and weights.consistency > 0:
        value, _ = _consistency_terms(metadata, confidence, distillation, stride)
        add("consistency", value, weights.consistency)
    if distillation == "full":
        if confidence is None:
            raise ValueError("distillation='full' needs the teacher confidence")
        if weights.nll > 0:
            nll_mask = (rgb_gt > min_depth) & (rgb_gt < max_depth)
            add("nll", confidence_nll_loss(confidence, rgb_depth, rgb_gt, nll_mask, stride=stride), weights.nll)
        if weights.confidence_smoothness > 0:
            if rgb_rel_depth is None:
                raise ValueError("confidence smoothness needs rgb_rel_depth (teacher relative depth)")
            add(
                "confidence_smoothness",
                edge_aware_smoothness(confidence, _as_4d(rgb_rel_depth).detach(), stride=stride),
                weights.confidence_smoothness,
            )
    if student_confidence is not None and weights.student_nll > 0:
        add(
            "student_nll",
            confidence_nll_loss(student_confidence, thermal_depth, thermal_gt, thermal_mask, stride=stride),
            weights.student_nll,
        )
    terms["total"] = total
    return terms


def label_free_loss(
    metadata: MetadataResult,
    confidence: torch.Tensor | None,
    rgb_image: torch.Tensor,
    *,
    weights: LabelFreeWeights = LabelFreeWeights(),
    distillation: Distillation = "full",
    student_confidence: torch.Tensor | None = None,
    thermal_depth: torch.Tensor | None = None,
    teacher_depth_in_thermal: torch.Tensor | None = None,
    teacher_mask_in_thermal: torch.Tensor | None = None,
    stride: int = REFERENCE_STRIDE,
) -> dict[str, torch.Tensor]:
    """Stage-2 loss without labels: confidence-weighted consistency (+ smoothness).

    The RGB branch and the confidence network are frozen in this stage: only the consistency
    term's path through ``d_thermal->rgb`` trains the student. The smoothness term is the
    reference's (on the RGB depth ``metadata.rgb_depth``; it carries no gradient into a frozen teacher).

    Args:
        metadata: :func:`~monother_ros.distill.metadata.build_metadata` result.
        confidence: (B, 1, H, W) teacher confidence (``full``), else ignored.
        rgb_image: (B, 3, H', W') RGB in [0, 1].
        weights: term weights. distillation: ``no_confidence`` or ``full`` (``none`` has no signal).
        student_confidence, thermal_depth, teacher_depth_in_thermal, teacher_mask_in_thermal:
            when all given, the student's own confidence head is trained by NLL against the
            teacher depth in the thermal frame (see :func:`teacher_target_in_thermal`) over the mask.

    Returns:
        dict with ``consistency``, ``smoothness`` (when weighted), ``student_nll`` (when given), ``total``.
    """
    _check_distillation(distillation)
    if distillation == "none":
        raise ValueError("label-free training needs distillation ('no_confidence' or 'full')")
    terms: dict[str, torch.Tensor] = {}
    value, _ = _consistency_terms(metadata, confidence, distillation, stride)
    terms["consistency"] = value
    total = weights.consistency * value
    if weights.smoothness > 0:
        rgb_at_image = _resize_to(metadata.rgb_depth, rgb_image.shape[-2:])
        terms["smoothness"] = edge_aware_smoothness(rgb_at_image, rgb_image, stride=stride)
        total = total + weights.smoothness * terms["smoothness"]
    given = (student_confidence, thermal_depth, teacher_depth_in_thermal, teacher_mask_in_thermal)
    if weights.student_nll > 0 and all(t is not None for t in given):
        terms["student_nll"] = confidence_nll_loss(
            student_confidence, thermal_depth, teacher_depth_in_thermal, teacher_mask_in_thermal, stride=stride
        )
        total = total + weights.student_nll * terms["student_nll"]
    terms["total"] = total
    return terms

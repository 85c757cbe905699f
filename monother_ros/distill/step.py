"""One training step of the MonoTher dual model, shared by offline training and online adaptation.

``training_step(model, batch, stage=..., distillation=..., weights=...)`` runs the forward pass (through
the model object it is given, so a ``DistributedDataParallel`` wrapper synchronises gradients), builds
the metadata (``distill.metadata``), computes the stage's loss (``distill.losses``) and returns the
total loss tensor plus the terms as floats. It never touches an optimiser: the caller runs
``backward``, clipping and ``optimizer.step`` with its own budget (the adaptation node steps a few
times per second; training every batch).

Stages:

* ``supervised`` (stage 1, ground truth available): SILog on both branches, edge-aware smoothness of
  the RGB depth; with ``distillation`` ``no_confidence`` / ``full`` the consistency term (confidence-
  weighted for ``full``); for ``full`` also the confidence network's NLL against the teacher's GT
  residual and its smoothness; the student's own confidence head by NLL against the thermal GT.
* ``label_free`` (stage 2, no labels): teacher and confidence network frozen (no gradients, eval mode,
  BatchNorm frozen, see ``prepare_stage``); the consistency loss (+ smoothness) trains the student;
  the student's confidence head is trained by NLL against the teacher depth warped into the thermal
  view, on the ``student_nll_keep_fraction`` most confident teacher pixels (confidence warped too).

Batch keys (as ``training.data.collate`` builds them; tensors on the model's device): ``thermal``
(B, 3, h, w) and ``rgb`` (B, 3, h, w) network-normalised, ``K_thermal`` / ``K_rgb`` (B, 3, 3) at that
size, ``T_rgb_thermal`` (B, 4, 4), ``gt_depth_thermal`` / ``gt_depth_rgb`` (B, h, w) metres with 0 =
invalid, or None.
"""
from __future__ import annotations

import logging
from typing import Any, Literal, Mapping, NamedTuple

import torch
from torch import Tensor, nn

from monother_ros.distill.losses import (
    LabelFreeWeights,
    SupervisedWeights,
    label_free_loss,
    supervised_loss,
    teacher_target_in_thermal,
)
from monother_ros.distill.masks import keep_top_fraction
from monother_ros.distill.metadata import MetadataBuilder, build_metadata_from_outputs

__all__ = ["Stage", "StepResult", "prepare_stage", "training_step", "unwrap", "rgb_to_unit"]

LOG = logging.getLogger(__name__)

Stage = Literal["supervised", "label_free"]
STAGES = ("supervised", "label_free")


class StepResult(NamedTuple):
    """Result of one step.

    Attributes:
        total: scalar loss tensor with its graph (call ``backward`` on it).
        losses: every computed term as a float (unweighted), plus ``total``.
        student_depth: (B, 1, h, w) detached student depth, metres (for logging / adaptation stats).
        student_confidence: (B, 1, h, w) detached student confidence or None.
    """

    total: Tensor
    losses: dict[str, float]
    student_depth: Tensor
    student_confidence: Tensor | None


def unwrap(model: nn.Module) -> nn.Module:
    """The dual model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def rgb_to_unit(rgb: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Undo the network normalisation: (B, 3, H, W) normalised -> [0, 1] (metadata and smoothness guide)."""
    m = torch.tensor(mean, dtype=rgb.dtype, device=rgb.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=rgb.dtype, device=rgb.device).view(1, -1, 1, 1)
    return (rgb * s + m).clamp(0.0, 1.0)


def prepare_stage(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Set train/eval modes and ``requires_grad`` for ``stage``; returns the trainable parameters.

    ``supervised``: everything trains (BatchNorm stays frozen when the model was built with
    ``freeze_bn``). ``label_free``: only the student trains; teacher and confidence network are put in
    eval mode with gradients off. Call it again after any ``model.train()`` (e.g. after validation).

    Raises:
        ValueError: unknown stage.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    dual = unwrap(model)
    dual.train()
    for p in dual.parameters():
        p.requires_grad_(True)
    if stage == "label_free":
        frozen = [dual.teacher] + ([dual.confidence_net] if dual.confidence_net is not None else [])
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
    if getattr(dual, "freeze_bn", False):
        from monother_ros.model.dual import freeze_batchnorm

        freeze_batchnorm(dual)
    return [p for p in dual.parameters() if p.requires_grad]


def _weights(stage: Stage, weights: Mapping[str, float] | SupervisedWeights | LabelFreeWeights | None):
    if weights is None:
        return SupervisedWeights() if stage == "supervised" else LabelFreeWeights()
    if isinstance(weights, (SupervisedWeights, LabelFreeWeights)):
        return weights
    cls = SupervisedWeights if stage == "supervised" else LabelFreeWeights
    fields = set(cls.__dataclass_fields__)
    return cls(**{k: float(v) for k, v in weights.items() if k in fields})


def _float32(x: Any) -> Any:
    return x.float() if isinstance(x, Tensor) and x.is_floating_point() else x


def _float32_branch(output: Any) -> Any:
    """A branch output (NamedTuple of tensors) with every floating tensor as float32."""
    return output._replace(**{k: _float32(v) for k, v in output._asdict().items()})


def _float32_outputs(out: Any) -> Any:
    """``DualOutput`` of an autocast forward, cast back to float32 for the losses."""
    return out._replace(student=_float32_branch(out.student), teacher=_float32_branch(out.teacher),
                        teacher_confidence=_float32(out.teacher_confidence), metadata=_float32(out.metadata))


class _Float32Metadata:
    """Runs a metadata builder in float32 inside an autocast forward (warping and cosine similarities
    lose too much in bf16/fp16); the confidence network then takes the float32 metadata under autocast."""

    def __init__(self, builder: MetadataBuilder, device_type: str) -> None:
        self.builder, self.device_type = builder, device_type

    def __call__(self, student: Any, teacher: Any) -> Tensor:
        with torch.autocast(self.device_type, enabled=False):
            return self.builder(_float32_branch(student), _float32_branch(teacher))


def training_step(
    model: nn.Module,
    batch: Mapping[str, Any],
    *,
    stage: Stage,
    distillation: Literal["none", "no_confidence", "full"] = "full",
    weights: Mapping[str, float] | SupervisedWeights | LabelFreeWeights | None = None,
    student_nll_keep_fraction: float = 0.5,
    min_depth: float = 1e-3,
    autocast_dtype: torch.dtype | None = None,
) -> StepResult:
    """Forward + loss of one batch (no optimiser step).

    Args:
        model: ``MonotherDual`` or a DDP wrapper of one (the forward goes through it).
        batch: see the module docstring.
        stage: ``supervised`` or ``label_free``.
        distillation: ``none`` | ``no_confidence`` | ``full`` (label_free refuses ``none``).
        weights: term weights (a mapping with ``SupervisedWeights`` names, unknown ones ignored for the
            stage, or a weights dataclass); None = the stage's defaults.
        student_nll_keep_fraction: label_free: fraction of the most confident teacher pixels (per image)
            that supervise the student's confidence head.
        min_depth: valid depth lower bound, metres (upper bound: the student's ``max_depth_m``).
        autocast_dtype: run the networks (both branches and the confidence network) under
            ``torch.autocast`` with this dtype (``torch.bfloat16`` / ``torch.float16``); the metadata
            (warping, similarities) and every loss stay float32. None = float32 throughout.

    Returns:
        ``StepResult``.

    Raises:
        ValueError: bad stage / distillation, or a supervised batch without ground truth.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    dual = unwrap(model)
    w = _weights(stage, weights)
    max_depth = float(dual.student.config.max_depth_m)
    teacher_cfg = dual.teacher.config
    thermal, rgb = batch["thermal"], batch["rgb"]
    K_t, K_r, T_rt = batch["K_thermal"], batch["K_rgb"], batch["T_rgb_thermal"]
    rgb_unit = rgb_to_unit(rgb, teacher_cfg.mean, teacher_cfg.std)
    need_metadata = distillation != "none"
    need_confidence = distillation == "full" and dual.confidence_net is not None
    if distillation == "full" and dual.confidence_net is None:
        raise ValueError("distillation='full' needs a model with a confidence network")

    builder = MetadataBuilder(rgb_unit, K_t, K_r, T_rt, min_depth=min_depth, max_depth=max_depth)
    if autocast_dtype is None:
        out = model(thermal, rgb, need_confidence=need_confidence, metadata_fn=builder if need_confidence else None,
                    features=need_metadata)
    else:
        device_type = thermal.device.type
        metadata_fn = _Float32Metadata(builder, device_type) if need_confidence else None
        with torch.autocast(device_type, dtype=autocast_dtype):
            out = model(thermal, rgb, need_confidence=need_confidence, metadata_fn=metadata_fn, features=need_metadata)
        out = _float32_outputs(out)
    metadata = builder.last
    if need_metadata and metadata is None:
        metadata = build_metadata_from_outputs(out.student, out.teacher, rgb_unit, K_t, K_r, T_rt, min_depth=min_depth, max_depth=max_depth)
    confidence = out.teacher_confidence
    student_conf = out.student.confidence

    if stage == "supervised":
        gt_t, gt_r = batch.get("gt_depth_thermal"), batch.get("gt_depth_rgb")
        if gt_t is None or gt_r is None:
            raise ValueError("the supervised stage needs gt_depth_thermal and gt_depth_rgb in every batch")
        rel = out.teacher.rel_depth if out.teacher.rel_depth is not None else out.teacher.depth / float(teacher_cfg.max_depth_m)
        terms = supervised_loss(
            out.student.depth, out.teacher.depth, gt_t, gt_r, rgb_unit,
            metadata=metadata, confidence=confidence, rgb_rel_depth=rel, student_confidence=student_conf,
            weights=w, distillation=distillation, min_depth=min_depth, max_depth=max_depth,
        )
    else:
        target = mask = None
        if student_conf is not None and w.student_nll > 0:
            teacher_conf = confidence if confidence is not None else torch.ones_like(out.teacher.depth)
            target, conf_t, valid = teacher_target_in_thermal(out.teacher.depth.detach(), teacher_conf.detach(), out.student.depth.detach(), K_t, K_r, T_rt)
            with torch.no_grad():
                ok = valid & (target > min_depth) & (target < max_depth)
                mask = ok
                if confidence is not None and student_nll_keep_fraction < 1:
                    # Rank only pixels the teacher sees; without a confidence every seen pixel counts.
                    ranked = torch.where(ok, conf_t, torch.full_like(conf_t, -1.0))
                    mask = ok & keep_top_fraction(ranked, student_nll_keep_fraction, stride=1)
        terms = label_free_loss(
            metadata, confidence, rgb_unit, weights=w, distillation=distillation,
            student_confidence=student_conf if mask is not None else None,
            thermal_depth=out.student.depth if mask is not None else None,
            teacher_depth_in_thermal=target, teacher_mask_in_thermal=mask,
        )
    total = terms["total"]
    # One host sync for all terms (not one per .item()).
    names = list(terms)
    values = torch.stack([terms[n].detach().float().reshape(()) for n in names]).cpu().tolist()
    return StepResult(
        total=total,
        losses=dict(zip(names, values)),
        student_depth=out.student.depth.detach(),
        student_confidence=None if student_conf is None else student_conf.detach(),
    )

"""The MonoTher-Depth dual model: thermal student, RGB teacher and the teacher-confidence U-Net.

Mirrors the official ``ZoeDepthDual`` (two independent Depth Anything v1 + ZoeDepth-bins branches,
no feature fusion between them, plus ``Conf_UNet(8)``) with the branches as separate modules so
that each one is usable alone:

* ``student``: thermal ``DepthBranch`` (the official main branch; keys ``core.core.pretrained.*``,
  ``core.core.depth_head.*``, ``conv2.*`` ...); this is all thermal-only inference needs;
* ``teacher``: RGB ``DepthBranch`` (the official ``*_extra`` branch);
* ``confidence_net``: ``ConfidenceUNet`` (official ``conf_net.*``), or None.

The confidence network's input, the 8-channel metadata on the teacher's pixel grid (similarities,
depth difference, warped thermal depth, RGB depth, RGB image), needs camera geometry and is built by
``monother_ros.distill.metadata.build_metadata``; this module only takes the finished tensor
(``teacher_confidence(metadata)``) or a callable producing it from both branch outputs, so the
network code stays free of geometry.
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple

from torch import Tensor, nn

from monother_ros.model.branch import BranchOutput, DepthBranch
from monother_ros.model.confidence import CONFIDENCE_IN_CHANNELS, ConfidenceUNet
from monother_ros.model.variants import IMAGENET_MEAN, IMAGENET_STD, ModelConfig

__all__ = ["DualOutput", "MetadataFn", "MonotherDual", "freeze_batchnorm", "teacher_config_for"]

_logger = logging.getLogger(__name__)

# (student output, teacher output) -> (B, 8, H, W) metadata on the teacher's grid.
MetadataFn = Callable[[BranchOutput, BranchOutput], Tensor]


class DualOutput(NamedTuple):
    """Outputs of both branches.

    Attributes:
        student: thermal branch output (depth (B, 1, H, W) metres, its own confidence if its config
            has a confidence head, similarity features, relative depth).
        teacher: RGB branch output (same fields).
        teacher_confidence: (B, 1, H, W) in (0, 1) from the confidence U-Net when asked, else None.
        metadata: the (B, 8, H, W) metadata the confidence was computed from, else None.
    """

    student: BranchOutput
    teacher: BranchOutput
    teacher_confidence: Tensor | None
    metadata: Tensor | None


def teacher_config_for(student_config: ModelConfig) -> ModelConfig:
    """The RGB teacher configuration matching a thermal student (same sizes, ImageNet normalisation,
    no student confidence head), as the official dual model pairs them."""
    return student_config.replace(
        name=f"{student_config.name}-rgb-teacher", modality="rgb", mean=IMAGENET_MEAN,
        std=IMAGENET_STD, confidence_head=False,
    )


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm of ``module`` in eval mode and stop gradients to its affine parameters.

    ``module.train()`` sets BatchNorm back to training mode: call this again after it (``MonotherDual``
    does so itself when built with ``freeze_bn=True``).

    Returns:
        Number of BatchNorm modules frozen.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            count += 1
    return count


class MonotherDual(nn.Module):
    """Thermal student + RGB teacher + teacher-confidence U-Net.

    Args:
        student_config: thermal branch configuration (e.g. preset ``monother-ms2-vitl``).
        teacher_config: RGB branch configuration; default ``teacher_config_for(student_config)``.
        confidence: build the confidence U-Net.
        freeze_bn: keep BatchNorm layers frozen (eval mode, no gradients) across ``train()`` calls,
            as the official training does.
        confidence_width: base width of the confidence U-Net (official 64; see ``ConfidenceUNet``).
    """

    checkpoint_kind = "monother_dual"  # model kind in our saved model directories

    def __init__(self, student_config: ModelConfig, teacher_config: ModelConfig | None = None,
                 confidence: bool = True, *, freeze_bn: bool = True, confidence_width: int = 64) -> None:
        super().__init__()
        self.student = DepthBranch(student_config)
        self.teacher = DepthBranch(teacher_config if teacher_config is not None
                                   else teacher_config_for(student_config))
        self.confidence_net: ConfidenceUNet | None = (
            ConfidenceUNet(CONFIDENCE_IN_CHANNELS, base_width=confidence_width) if confidence else None
        )
        self.freeze_bn = bool(freeze_bn)
        if self.freeze_bn:
            freeze_batchnorm(self)

    def train(self, mode: bool = True) -> "MonotherDual":
        super().train(mode)
        if mode and self.freeze_bn:
            freeze_batchnorm(self)
        return self

    def teacher_confidence(self, metadata: Tensor) -> Tensor:
        """Confidence of the teacher depth from the (B, 8, H, W) metadata (detached inside).

        Raises:
            RuntimeError: the model was built without a confidence network.
            ValueError: metadata of the wrong shape.
        """
        if self.confidence_net is None:
            raise RuntimeError("this MonotherDual has no confidence network (built with confidence=False)")
        return self.confidence_net(metadata)

    def forward(self, thermal: Tensor, rgb: Tensor, *, need_confidence: bool = False,
                metadata_fn: MetadataFn | None = None, features: bool = True) -> DualOutput:
        """Run both branches and, when asked, the confidence network.

        Args:
            thermal: (B, 3, H, W) normalised thermal image (student input), H, W multiples of 14.
            rgb: (B, 3, H, W) normalised RGB image (teacher input), same size (as the official
                model requires).
            need_confidence: compute the teacher confidence (needs ``metadata_fn``).
            metadata_fn: builds the (B, 8, H, W) metadata from (student output, teacher output),
                e.g. a ``functools.partial`` of ``distill.metadata.build_metadata`` with cameras.
            features: compute the similarity features of both branches (forced on when the
                confidence is needed, since the metadata uses them).

        Returns:
            ``DualOutput``.

        Raises:
            ValueError: different input sizes, or ``need_confidence`` without ``metadata_fn``.
        """
        if thermal.shape[-2:] != rgb.shape[-2:] or thermal.shape[0] != rgb.shape[0]:
            raise ValueError(
                f"thermal {tuple(thermal.shape)} and rgb {tuple(rgb.shape)} must share batch and size"
            )
        if need_confidence and metadata_fn is None:
            raise ValueError("need_confidence=True needs a metadata_fn building the 8-channel metadata")
        want_features = features or need_confidence
        student = self.student(thermal, features=want_features)
        teacher = self.teacher(rgb, features=want_features)
        confidence: Tensor | None = None
        metadata: Tensor | None = None
        if need_confidence and metadata_fn is not None:
            metadata = metadata_fn(student, teacher)
            confidence = self.teacher_confidence(metadata)
        return DualOutput(student=student, teacher=teacher, teacher_confidence=confidence,
                          metadata=metadata)

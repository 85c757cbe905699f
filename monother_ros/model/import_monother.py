"""Strict import of the official MonoTher-Depth dual checkpoint (``ZoeDepthDual``).

The file is ``{"model": state_dict, "optimizer": None, "epoch": n}`` (``module.`` prefixes from
DataParallel are stripped); it is read by ``checkpoints.read_torch_checkpoint``
(``torch.load(weights_only=True)``: pickled code never runs). Each part loads alone:

* ``thermal``: the student ``DepthBranch`` (all that thermal-only inference needs);
* ``rgb``: the teacher ``DepthBranch`` (configuration ``dual.teacher_config_for(preset)``);
* ``confidence``: the ``ConfidenceUNet``;
* ``dual``: the whole ``MonotherDual``.

Key mapping (official -> ours), read from the official ``ZoeDepthDual`` / ``DepthAnythingCore_Dual``
/ ``DPT_DINOv2_dual`` sources: the RGB branch's modules are attributes with an ``_extra`` suffix on
the *module name* (``seed_bin_regressor_extra._net.0.weight``, ``projectors_extra.3._net.2.bias``,
``core.core.pretrained_extra.blocks.0.norm1.weight``):

====================================================  ======================================
official key                                          ours (part-local; ``dual`` adds the prefix)
====================================================  ======================================
``core.core.pretrained.*``                            thermal ``pretrained.*``
``core.core.depth_head.*``                            thermal ``depth_head.*``
``conv2.*``, ``seed_bin_regressor.*``,                thermal ``bins_head.<same>``
``seed_projector.*``, ``projectors.N.*``,
``attractors.N.*``, ``conditional_log_binomial.*``
(incl. buffers ``...log_binomial_transform.{k_idx,K_minus_1}``)
``core.core.pretrained_extra.*``                      rgb ``pretrained.*``
``core.core.depth_head_extra.*``                      rgb ``depth_head.*``
``conv2_extra.*``, ``seed_bin_regressor_extra.*``,    rgb ``bins_head.<name without _extra>``
``seed_projector_extra.*``, ``projectors_extra.N.*``,
``attractors_extra.N.*``,
``conditional_log_binomial_extra.*``
``conf_net.*``                                        confidence ``<same without conf_net.>``
====================================================  ======================================

``dual`` prefixes: thermal -> ``student.``, rgb -> ``teacher.``, confidence -> ``confidence_net.``.
Any official key outside this table (a feature-fusion block ``core.core.fusion_block.*`` of the
non-default fusion variants, for instance) is refused with a ``CheckpointError`` naming it; keys of
other parts are ignored when one part is imported. Missing and mis-shaped tensors are reported with
their official names.
"""
from __future__ import annotations

import logging
import os
from typing import Literal, Mapping

from torch import Tensor, nn

from monother_ros.errors import CheckpointError
from monother_ros.model.checkpoints import (
    describe_key_mismatch,
    format_keys,
    load_state_dict_strict,
    read_torch_checkpoint,
    register_builder,
    register_importer,
)
from monother_ros.model.variants import ModelConfig, get_preset

__all__ = [
    "Part",
    "PARTS",
    "OFFICIAL_HEAD_MODULES",
    "DUAL_PREFIXES",
    "official_to_part_key",
    "part_key_to_official",
    "map_official_state_dict",
    "import_monother_state_dict",
    "import_monother_checkpoint",
    "is_monother_state_dict",
]

_logger = logging.getLogger(__name__)

Part = Literal["thermal", "rgb", "confidence", "dual"]
PARTS: tuple[str, ...] = ("thermal", "rgb", "confidence", "dual")

# ZoeDepth head modules of one branch (top-level attributes of ZoeDepthDual); the RGB copies carry
# an "_extra" suffix on these names.
OFFICIAL_HEAD_MODULES: tuple[str, ...] = (
    "conv2", "seed_bin_regressor", "seed_projector", "projectors", "attractors",
    "conditional_log_binomial",
)
# (official prefix, our part-local prefix) per branch; the core lives in ZoeDepthDual.core (the
# DepthAnythingCore_Dual) .core (the DPT_DINOv2_dual).
_BRANCH_PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "thermal": (("core.core.pretrained.", "pretrained."), ("core.core.depth_head.", "depth_head."))
    + tuple((f"{m}.", f"bins_head.{m}.") for m in OFFICIAL_HEAD_MODULES),
    "rgb": (("core.core.pretrained_extra.", "pretrained."), ("core.core.depth_head_extra.", "depth_head."))
    + tuple((f"{m}_extra.", f"bins_head.{m}.") for m in OFFICIAL_HEAD_MODULES),
    "confidence": (("conf_net.", ""),),
}
# Where each part sits inside MonotherDual.
DUAL_PREFIXES: dict[str, str] = {"thermal": "student.", "rgb": "teacher.", "confidence": "confidence_net."}


def is_monother_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a (``module.``-stripped) state dict has the ZoeDepth-over-Depth-Anything layout
    (``core.core.pretrained.*``): the MonoTher dual file, or a single-branch ZoeDepth file, whose
    tensors are exactly the ``thermal`` part."""
    return any(k.startswith("core.core.pretrained.") for k in state_dict)


def official_to_part_key(key: str) -> tuple[str, str] | None:
    """``(part, part-local key)`` of an official key, or None when it belongs to no part."""
    for part, prefixes in _BRANCH_PREFIXES.items():
        for official, ours in prefixes:
            if key.startswith(official):
                return part, ours + key[len(official):]
    return None


def part_key_to_official(part: str, key: str) -> str:
    """Official name of a part-local key (inverse of ``official_to_part_key``)."""
    best: tuple[str, str] | None = None
    for official, ours in _BRANCH_PREFIXES[part]:
        if key.startswith(ours) and (best is None or len(ours) > len(best[1])):
            best = (official, ours)
    if best is None:
        return f"<none for {part} {key}>"
    return best[0] + key[len(best[1]):]


def map_official_state_dict(state_dict: Mapping[str, Tensor], part: str) -> dict[str, Tensor]:
    """Official tensors of ``part`` under our names (``dual``: ``student.``/``teacher.``/
    ``confidence_net.`` prefixed).

    Raises:
        CheckpointError: keys that belong to no part (named), or an unknown part.
    """
    if part not in PARTS:
        raise CheckpointError(f"unknown MonoTher checkpoint part {part!r}; choose one of {PARTS}")
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        mapped = official_to_part_key(key)
        if mapped is None:
            unknown.append(key)
            continue
        key_part, local = mapped
        if part == "dual":
            out[DUAL_PREFIXES[key_part] + local] = value
        elif key_part == part:
            out[local] = value
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} key(s) of the checkpoint belong to no known part of the MonoTher dual "
            f"model (fusion block or another variant?): {format_keys(unknown)}"
        )
    return out


def _official_name(part: str, key: str) -> str:
    if part == "dual":
        for p, prefix in DUAL_PREFIXES.items():
            if key.startswith(prefix):
                return part_key_to_official(p, key[len(prefix):])
        return key
    return part_key_to_official(part, key)


def _check(model: nn.Module, mapped: Mapping[str, Tensor], part: str, source: str,
           allow_missing_prefixes: tuple[str, ...]) -> None:
    """Strict check naming official keys (the generic check names ours)."""
    expected = model.state_dict()
    missing = [_official_name(part, k) for k in expected
               if k not in mapped and not k.startswith(allow_missing_prefixes)]
    unexpected = [_official_name(part, k) for k in mapped if k not in expected]
    mismatched = [
        f"{_official_name(part, k)} {tuple(mapped[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in mapped and tuple(mapped[k].shape) != tuple(v.shape)
    ]
    problems = describe_key_mismatch(missing, unexpected, mismatched)
    if problems:
        hint = ""
        if any("attractors" in m for m in mismatched):
            hint = " (attractor widths differ: is bin_centers_type right? normed = 2 x n_attractors)"
        raise CheckpointError(f"{source} ({part}) does not match the model: {problems}{hint}")


def import_monother_state_dict(
    state_dict: Mapping[str, Tensor],
    config: ModelConfig,
    part: str = "thermal",
    *,
    source: str = "MonoTher checkpoint",
) -> tuple[nn.Module, ModelConfig]:
    """Load one part of an official (prefix-stripped) MonoTher state dict, strictly.

    Args:
        state_dict: official names (``module.`` already stripped).
        config: the thermal (student) configuration, e.g. preset ``monother-ms2-vitl``.
        part: ``thermal``, ``rgb``, ``confidence`` or ``dual``.
        source: name used in error messages.

    Returns:
        ``(model in eval mode, config)``: a ``DepthBranch`` (thermal / rgb; rgb returns the teacher
        configuration), a ``ConfidenceUNet`` or a ``MonotherDual`` (with the student configuration).

    Raises:
        CheckpointError: unknown part, keys outside the table, missing / unexpected / mis-shaped
            tensors (official names), non-finite values.
    """
    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.confidence import ConfidenceUNet
    from monother_ros.model.dual import MonotherDual, teacher_config_for

    if config.head != "zoe_bins":
        raise CheckpointError(
            f"{source}: MonoTher checkpoints hold ZoeDepth bins heads; preset {config.name!r} has "
            f"head {config.head!r} (use monother-ms2-vitl or another zoe_bins config)"
        )
    mapped = map_official_state_dict(state_dict, part)
    allow: tuple[str, ...] = ()
    model: nn.Module
    out_config = config
    if part == "thermal":
        model = DepthBranch(config)
        allow = ("confidence_head.",) if config.confidence_head else ()
    elif part == "rgb":
        out_config = teacher_config_for(config)
        model = DepthBranch(out_config)
    elif part == "confidence":
        model = ConfidenceUNet()
    else:
        model = MonotherDual(config, teacher_config_for(config), confidence=True)
        allow = ("student.confidence_head.",) if config.confidence_head else ()
    if not mapped:
        raise CheckpointError(f"{source}: no tensors of the {part!r} part in the checkpoint")
    _check(model, mapped, part, source, allow)
    load_state_dict_strict(model, mapped, allow_missing_prefixes=allow, source=f"{source} ({part})")
    if allow:
        _logger.warning("%s: the student confidence head is not in the official layout; it keeps its init",
                        source)
    _logger.info("%s: imported %s part (%d tensors)", source, part, len(mapped))
    return model.eval(), out_config


def import_monother_checkpoint(
    path: str | os.PathLike[str],
    preset: str | ModelConfig = "monother-ms2-vitl",
    part: str = "thermal",
) -> tuple[nn.Module, ModelConfig]:
    """Read an official MonoTher-Depth checkpoint file and load one part strictly.

    Args:
        path: the official ``.pt``/``.pth`` file (read with ``weights_only=True``).
        preset: thermal (student) preset name or ``ModelConfig``.
        part: ``thermal``, ``rgb``, ``confidence`` or ``dual``.

    Returns:
        See ``import_monother_state_dict``.

    Raises:
        CheckpointError: unreadable / refused file or any layout mismatch.
        ConfigError: unknown preset.
    """
    config = get_preset(preset) if isinstance(preset, str) else preset
    state_dict = read_torch_checkpoint(path)
    return import_monother_state_dict(state_dict, config, part, source=str(path))


def _importer(state_dict: dict[str, Tensor], config: ModelConfig,
              branch: str | None) -> tuple[nn.Module, ModelConfig]:
    return import_monother_state_dict(state_dict, config, branch or "thermal")


def _confidence_width(tensors: Mapping[str, Tensor], prefix: str) -> int:
    """Base width of a saved confidence U-Net (official 64; our small trainings use narrower ones)."""
    first = tensors.get(prefix + "inc.double_conv.0.weight")
    return int(first.shape[0]) if first is not None else 64


def _build_dual(config: ModelConfig, tensors: Mapping[str, Tensor]) -> nn.Module:
    from monother_ros.model.dual import MonotherDual, teacher_config_for

    return MonotherDual(config, teacher_config_for(config), confidence=True,
                        confidence_width=_confidence_width(tensors, "confidence_net."))


def _build_confidence(config: ModelConfig, tensors: Mapping[str, Tensor]) -> nn.Module:
    from monother_ros.model.confidence import ConfidenceUNet

    return ConfidenceUNet(base_width=_confidence_width(tensors, ""))


# Hook into checkpoints.import_checkpoint's dispatch and load_model's builders.
register_importer("monother", is_monother_state_dict, _importer)
register_builder("monother_dual", _build_dual)
register_builder("confidence_unet", _build_confidence)

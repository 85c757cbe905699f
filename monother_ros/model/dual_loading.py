"""Loading the MonoTher dual model (thermal student + RGB teacher + confidence network) from model folders.

Used by the runtime's teacher path and by online adaptation: a dual folder, or a student folder whose
teacher and confidence network come from a dual folder (``<student>/dual`` in the shipped layout).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from monother_ros.errors import ConfigError

__all__ = ["load_dual"]


def load_dual(model_dir: str | os.PathLike, teacher_dir: str | os.PathLike | None = None,
              *, device: str = "cpu") -> tuple[nn.Module, Any]:
    """The dual model: student from ``model_dir``, teacher + confidence network from a dual folder.

    Args:
        model_dir: a dual model folder (``kind monother_dual``: student, RGB teacher, confidence network)
            or a student folder (``depth_branch``) whose weights replace the dual's student.
        teacher_dir: dual folder supplying teacher and confidence network when ``model_dir`` is a
            student folder (ignored otherwise); default ``<model_dir>/dual`` when that folder exists (how a
            shipped student can carry its teacher: ``engines/default/dual``).
        device: torch device.

    Returns:
        ``(MonotherDual, student ModelConfig)``.

    Raises:
        ConfigError: no teacher/confidence network available, or student configurations differ.
        CheckpointError: unreadable folders.
    """
    from monother_ros.model.checkpoints import load_model, load_state_dict_strict, read_model_dir

    tensors, config, meta = read_model_dir(model_dir)
    if str(meta.get("kind")) == "monother_dual":
        dual, config = load_model(model_dir, map_location=device)
    else:
        if not teacher_dir and (Path(model_dir) / "dual" / "config.json").is_file():
            teacher_dir = Path(model_dir) / "dual"
        if not teacher_dir:
            raise ConfigError(f"{model_dir} holds a student only; adaptation needs the RGB teacher and the confidence "
                              f"network: give a dual model folder (teacher_model), or put one in {model_dir}/dual")
        _, _, tmeta = read_model_dir(teacher_dir)
        if str(tmeta.get("kind")) != "monother_dual":
            raise ConfigError(f"teacher model {teacher_dir} is a '{tmeta.get('kind')}' model, not a dual model")
        dual, dual_config = load_model(teacher_dir, map_location=device)
        if dual_config.replace(name=config.name) != config.replace(name=config.name):
            raise ConfigError(f"student {model_dir} ({config.name}) does not match the dual model's student "
                              f"({dual_config.name}) in {teacher_dir}")
        load_state_dict_strict(dual.student, tensors, source=str(model_dir))
        dual.to(device)
    if getattr(dual, "confidence_net", None) is None:
        raise ConfigError(f"the dual model from {model_dir if not teacher_dir else teacher_dir} has no confidence network")
    return dual, dual.student.config

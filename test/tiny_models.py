"""Tiny random models for the ROS tests, built once per test session with the real code.

The shipped default model (``engines/default``) may not exist yet, so the depth-node tests build a
``test-tiny`` student (``model/checkpoints.save_model`` + ``runtime/export`` ONNX) and, for the
teacher path, a tiny dual model (student + RGB teacher + confidence U-Net). They are cached under the
session's ``ROS_LOG_DIR`` (unique per pytest run, set by conftest.py), guarded by a lock file so that
parallel builders wait for each other.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


def _root() -> Path:
    root = Path(os.environ.get("ROS_LOG_DIR", "/tmp")) / "tiny_models"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _build(name: str, builder) -> Path:
    root = _root()
    target = root / name
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            builder(target)
    return target


def tiny_student_dir() -> Path:
    """Folder with a random ``test-tiny`` student (confidence head) and its ``model.onnx``."""

    def build(target: Path) -> None:
        import torch

        from monother_ros.model.branch import DepthBranch
        from monother_ros.model.checkpoints import save_model
        from monother_ros.model.variants import get_preset
        from monother_ros.runtime.export import MODEL_ONNX_FILE, export_model_dir

        config = get_preset("test-tiny")
        torch.manual_seed(0)
        save_model(DepthBranch(config).eval(), config, target)
        export_model_dir(target, target / MODEL_ONNX_FILE)

    return _build("student", build)


def tiny_dual_dir() -> Path:
    """Folder with a random dual model (``test-tiny`` student + RGB teacher + confidence U-Net)."""

    def build(target: Path) -> None:
        import torch

        from monother_ros.model.checkpoints import save_model
        from monother_ros.model.dual import MonotherDual
        from monother_ros.model.variants import get_preset

        config = get_preset("test-tiny").replace(modality="thermal")
        torch.manual_seed(1)
        save_model(MonotherDual(config).eval(), config, target, kind=MonotherDual.checkpoint_kind)

    return _build("dual", build)

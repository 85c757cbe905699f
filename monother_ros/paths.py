"""Where the package's data files (config/, launch/, engines/) live: the source tree or share/monother_ros."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "monother_ros"


def share_dir() -> Path:
    """The folder holding ``config/``, ``launch/`` and ``engines/``.

    In a source checkout (``pip install -e``) that is the repository root; after ``colcon build`` it is
    ``<prefix>/share/monother_ros``, found through ament_index when available.
    """
    override = os.environ.get("MONOTHER_SHARE_DIR")
    if override:
        return Path(override)
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "config" / "rig.yaml").is_file():
        return source_root
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # ament_index missing or package not registered: fall back to the prefix layout
        return Path(sys.prefix) / "share" / PACKAGE


def config_path(name: str = "rig.yaml") -> Path:
    return share_dir() / "config" / name


def engines_dir() -> Path:
    return share_dir() / "engines"


def default_model_dir() -> Path:
    """The shipped default model (safetensors + ONNX + JSON config + model card)."""
    return engines_dir() / "default"

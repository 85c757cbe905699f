"""package.xml names only dependencies that `rosdep install` can resolve, and the pip-only ones are
documented; ONNX export says clearly when its optional dependency is missing.

The keys below were checked by hand against ros/rosdistro at commit 8468e88ccd52 (2026-08-22):
system keys in ``rosdep/python.yaml``, ROS package keys in ``humble/``, ``jazzy/`` and
``kilted/distribution.yaml`` (present in all three). Keys looked up there and NOT found, so they must
not appear in package.xml: ``python3-safetensors-pip`` (or any safetensors key), any ``onnx`` key other
than the onnxruntime ones, any ``onnxscript`` key.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest

from ros_harness import REPO_ROOT

PACKAGE_XML = REPO_ROOT / "package.xml"

# key -> where it was found (rosdistro 8468e88ccd52).
ROSDEP_PYTHON_KEYS = {
    "python3-numpy": "rosdep/python.yaml",
    "python3-yaml": "rosdep/python.yaml",
    "python3-pil": "rosdep/python.yaml",
    "python3-matplotlib": "rosdep/python.yaml",
    "python3-torch": "rosdep/python.yaml",
    "python3-tqdm": "rosdep/python.yaml",
    "python3-onnxruntime-pip": "rosdep/python.yaml (pip: onnxruntime)",
    "python3-rosbags-pip": "rosdep/python.yaml (pip: rosbags)",
    "python3-pytest": "rosdep/python.yaml",
    "python3-pytest-timeout": "rosdep/python.yaml",
    "python3-hypothesis": "rosdep/python.yaml",
}
ROS_PACKAGE_KEYS = {
    name: "humble, jazzy and kilted distribution.yaml"
    for name in ("rclpy", "rcl_interfaces", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs", "tf2_msgs",
                 "diagnostic_msgs", "rosgraph_msgs", "builtin_interfaces", "ament_index_python", "launch",
                 "launch_ros")
}
KNOWN_KEYS = {**ROSDEP_PYTHON_KEYS, **ROS_PACKAGE_KEYS}
NOT_ROSDEP_KEYS = ("python3-safetensors-pip", "python3-safetensors", "python3-onnx", "python3-onnx-pip",
                   "python3-onnxscript-pip", "rviz2")
# Imported by the package but with no rosdep key: README's ROS install section must pip-install them.
PIP_ONLY = ("onnx", "safetensors", "onnxscript")

_DEPEND_TAGS = ("depend", "build_depend", "exec_depend", "test_depend", "build_export_depend", "buildtool_depend")


def _keys() -> list[str]:
    root = ET.parse(PACKAGE_XML).getroot()
    return [element.text.strip() for tag in _DEPEND_TAGS for element in root.iter(tag)]


def test_every_package_xml_key_is_a_known_rosdep_key():
    keys = _keys()
    assert keys, "package.xml lists no dependencies"
    unknown = [key for key in keys if key not in KNOWN_KEYS]
    assert not unknown, f"not verified as rosdep keys (rosdep install would stop): {unknown}"
    assert not set(keys) & set(NOT_ROSDEP_KEYS)
    assert len(keys) == len(set(keys)), "a key is listed twice"


def test_runtime_imports_have_a_key_or_a_documented_pip_step():
    keys = set(_keys())
    # What the nodes import on a colcon install: each by a key ...
    for key in ("rclpy", "rcl_interfaces", "python3-numpy", "python3-yaml", "python3-torch",
                "python3-onnxruntime-pip", "python3-rosbags-pip", "launch", "launch_ros", "ament_index_python"):
        assert key in keys, key
    # ... or by the README's pip step in the ROS install section.
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## With a ROS 2 install"):]
    section = section[: section.index("\n## ", 1)]
    pip_lines = [line for line in section.splitlines() if "pip install" in line]
    assert pip_lines, "the ROS install section has no pip step"
    for name in PIP_ONLY:
        assert any(f" {name}" in line for line in pip_lines), f"{name} is not in the README's pip step"
    assert "rviz2" in section, "the README must say how to get RViz (optional)"


def test_export_without_onnxscript_says_what_to_install(monkeypatch, tmp_path):
    from monother_ros.errors import BackendUnavailableError
    from monother_ros.runtime import export

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import machinery: "not installed"
    with pytest.raises(BackendUnavailableError, match="pip install onnxscript"):
        export.export_onnx(None, None, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_reading_onnx_without_the_onnx_package_says_what_to_install(monkeypatch):
    from monother_ros.errors import BackendUnavailableError
    from monother_ros.paths import default_model_dir
    from monother_ros.runtime import export

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BackendUnavailableError, match="pip install onnx"):
        export.read_onnx_info(default_model_dir() / "model.onnx")

"""Install for both `colcon build` (ament_python) and `pip install -e .`."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = "monother_ros"


def data_files_under(folder: str, *patterns: str) -> list[tuple[str, list[str]]]:
    """Files under `folder` matching `patterns`, grouped by directory, for share/<package>/."""
    groups: dict[str, list[str]] = {}
    for pattern in patterns:
        for path in glob(os.path.join(folder, "**", pattern), recursive=True):
            if os.path.isfile(path) and "/cache/" not in path:
                groups.setdefault(os.path.dirname(path), []).append(path)
    return [(os.path.join("share", PACKAGE, d), sorted(files)) for d, files in sorted(groups.items())]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*", "training", "training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *data_files_under("launch", "*.py"),
        *data_files_under("config", "*.yaml", "*.xml", "*.rviz"),
        *data_files_under("engines", "*.json", "*.onnx", "*.safetensors", "*.md", "*.png"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="monother_ros maintainers",
    maintainer_email="maintainers@monother-ros.invalid",
    description="Metric depth from thermal images (MonoTher-Depth) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "monother = monother_ros.cli:main",
            "thermal_depth = monother_ros.ros.depth_node:main",
            "sim_rig = monother_ros.ros.sim_node:main",
            "online_adaptation = monother_ros.ros.adaptation_node:main",
        ],
    },
)

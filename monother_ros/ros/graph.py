"""The ONE description of the monother_ros node graph, read by ``launch/rig.launch.py`` and ``monother rig``.

Which nodes run, their executables (console scripts, for ``ros2 launch``) and classes (for running them
all in one process over the wheel rclpy), when they run, which launch arguments override which of their
parameters, and their remappings. Every node reads its parameters from ``config/rig.yaml`` (ros2
params-file format, sections ``/**/<node name>`` so namespaces keep working).

This module imports no ROS package (the launch file imports it on a real ROS install; the CLI imports it
before rclpy), only the standard library.

Graph (relative topics; one namespace for all nodes):

    sim_rig (use_sim) --thermal/*, rgb/*, /tf_static--> thermal_depth --depth/*--> RViz, users
    online_adaptation (adapt) --checkpoint folders (in process, or adaptation/model_path)--> thermal_depth

A node whose module is missing from an install is refused with "<name> is not available yet" by both
entry points (``require_available``; the launch file logs it and shuts down).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from monother_ros.errors import ConfigError

__all__ = [
    "PACKAGE",
    "PARAMS_FILE",
    "RVIZ_CONFIG",
    "FASTDDS_PROFILE",
    "LAUNCH_ARGUMENTS",
    "NodeSpec",
    "NODES",
    "graph_nodes",
    "is_available",
    "require_available",
    "node_class",
    "params_file_args",
]

PACKAGE = "monother_ros"
PARAMS_FILE = "rig.yaml"        # under config/
RVIZ_CONFIG = "monother.rviz"   # under config/
FASTDDS_PROFILE = "fastdds.xml"  # under config/: SHM segment large enough for images (checked on the wheel build)

Condition = Literal["always", "sim", "adapt"]

# Launch arguments: (name, default, description). The CLI has the matching options.
LAUNCH_ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("use_sim", "false", "start the simulated rig (sim_rig) instead of expecting real cameras"),
    ("model", "", "model folder or .onnx file for thermal_depth; empty = config/rig.yaml's (default: the "
                  "shipped model)"),
    ("backend", "", "inference backend: auto, tensorrt, onnxruntime or torch; empty = config/rig.yaml's (auto)"),
    ("device", "", "device of thermal_depth: auto, cpu, cuda or cuda:N; empty = config/rig.yaml's (auto)"),
    ("namespace", "", "ROS namespace of every node (topics are relative)"),
    ("rviz", "false", "start RViz with config/monother.rviz"),
    ("adapt", "false", "start the online_adaptation node (label-free adaptation)"),
    ("frame_prefix", "", "tf_prefix-style prefix (e.g. robot1/) of every frame the simulated rig publishes and "
                         "the nodes use by default; for several robots in one DDS domain"),
)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    Attributes:
        name: node name; also its section ``/**/<name>`` in config/rig.yaml.
        executable: console script (setup.py entry point) started by the launch file.
        module, class_name: where ``monother rig`` finds the node class.
        condition: ``always``, ``sim`` (only with ``use_sim``/``--sim``) or ``adapt``.
        parameter_arguments: (parameter, launch argument) pairs: a non-empty argument overrides the
            parameter from the params file.
        remappings: (from, to) topic remappings (none by default: topics are relative and meet in the
            namespace).
        description: one line for docs.
    """

    name: str
    executable: str
    module: str
    class_name: str
    condition: Condition = "always"
    parameter_arguments: tuple[tuple[str, str], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    description: str = ""


NODES: tuple[NodeSpec, ...] = (
    NodeSpec(
        name="sim_rig",
        executable="sim_rig",
        module="monother_ros.ros.sim_node",
        class_name="SimRigNode",
        condition="sim",
        parameter_arguments=(("frame_prefix", "frame_prefix"),),
        description="simulated thermal + RGB + LiDAR rig (thermal/*, rgb/*, lidar/points, gt/depth, /tf_static)",
    ),
    NodeSpec(
        name="thermal_depth",
        executable="thermal_depth",
        module="monother_ros.ros.depth_node",
        class_name="ThermalDepthNode",
        parameter_arguments=(("model", "model"), ("backend", "backend"), ("device", "device"),
                             ("frame_prefix", "frame_prefix")),
        description="thermal image -> depth/image, depth/confidence, depth/points, depth/camera_info",
    ),
    NodeSpec(
        name="online_adaptation",
        executable="online_adaptation",
        module="monother_ros.ros.adaptation_node",
        class_name="OnlineAdaptationNode",
        condition="adapt",
        parameter_arguments=(("frame_prefix", "frame_prefix"),),
        description="label-free online adaptation of the thermal student (hot-swaps weights)",
    ),
)


def graph_nodes(*, use_sim: bool = False, adapt: bool = False) -> list[NodeSpec]:
    """The nodes to start, in start order."""
    wanted = {"always": True, "sim": use_sim, "adapt": adapt}
    return [spec for spec in NODES if wanted[spec.condition]]


def is_available(spec: NodeSpec) -> bool:
    """Whether the node's module exists in this install (``online_adaptation`` does not yet)."""
    try:
        return importlib.util.find_spec(spec.module) is not None
    except ModuleNotFoundError:
        return False


def require_available(spec: NodeSpec) -> None:
    """Raises ConfigError("<name> is not available yet ...") when the node's module is missing."""
    if not is_available(spec):
        raise ConfigError(f"{spec.name} is not available yet (no module {spec.module} in this install)")


def node_class(spec: NodeSpec) -> type:
    """The node class (imports rclpy and the node's module)."""
    require_available(spec)
    return getattr(importlib.import_module(spec.module), spec.class_name)


def params_file_args(params_file: Path) -> list[str]:
    """``cli_args`` giving a node the params file, as ``ros2 run ... --params-file`` would.

    rclpy applies the file's ``/**/<node name>`` sections and namespaces itself. Overrides go through
    ``Node(parameter_overrides=...)``, not ``-p``: a ``-p`` value loses to the file's node section.
    """
    return ["--ros-args", "--params-file", str(params_file)]

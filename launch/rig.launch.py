"""Launch the monother_ros node graph on a ROS 2 install (Humble, Jazzy, Kilted).

    ros2 launch monother_ros rig.launch.py [use_sim:=true] [model:=DIR] [backend:=onnxruntime]
                                           [namespace:=robot1] [rviz:=true] [adapt:=true]

The node list, executables, parameter arguments and remappings come from ``monother_ros.ros.graph``
(``graph_nodes``: the same selection ``monother rig`` makes); every node reads ``config/rig.yaml`` as
its params file, and a non-empty ``model`` / ``backend`` argument overrides the file's value. Fast DDS
is pointed at the shipped profile (``config/fastdds.xml``: shared memory large enough for images)
unless ``FASTDDS_DEFAULT_PROFILES_FILE`` is already set.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from monother_ros.ros.graph import (
    FASTDDS_PROFILE,
    LAUNCH_ARGUMENTS,
    PACKAGE,
    PARAMS_FILE,
    RVIZ_CONFIG,
    graph_nodes,
    is_available,
)


def _true(text):
    return text.strip().lower() in ("true", "1", "yes", "on")


def _graph(context, share):
    """The node actions, chosen once the launch arguments' values are known."""
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS}
    params_file = os.path.join(share, "config", PARAMS_FILE)
    actions = []
    for spec in graph_nodes(use_sim=_true(values["use_sim"]), adapt=_true(values["adapt"])):
        if not is_available(spec):
            actions.append(LogInfo(msg=f"{spec.name} is not available yet"))
            actions.append(Shutdown(reason=f"{spec.name} is not available yet"))
            continue
        overrides = {parameter: values[argument] for parameter, argument in spec.parameter_arguments
                     if values[argument]}
        actions.append(Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=values["namespace"],
            parameters=[params_file] + ([overrides] if overrides else []),
            remappings=list(spec.remappings),
            output="screen",
        ))
    if _true(values["rviz"]):
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=values["namespace"],
                            arguments=["-d", os.path.join(share, "config", RVIZ_CONFIG)]))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    actions = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in LAUNCH_ARGUMENTS
    ]
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        actions.append(SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                              os.path.join(share, "config", FASTDDS_PROFILE)))
    actions.append(OpaqueFunction(function=_graph, kwargs={"share": share}))
    return LaunchDescription(actions)

"""Launch the monother_ros node graph on a ROS 2 install (Humble, Jazzy, Kilted).

    ros2 launch monother_ros rig.launch.py [use_sim:=true] [model:=DIR] [backend:=onnxruntime]
                                           [namespace:=robot1] [frame_prefix:=robot1/] [rviz:=true]
                                           [adapt:=true]

The decisions live in ``monother_ros.ros.launch_support`` (tested without launch): the arguments are
validated before anything starts (booleans must be true/false, 1/0, yes/no or on/off; ``rviz:=true``
needs rviz2 installed) and an invalid one stops the launch with a non-zero exit code and the reason.
The node list, executables, parameter arguments and remappings come from ``monother_ros.ros.graph``
(``graph_nodes``: the same selection ``monother rig`` makes); every node reads ``config/rig.yaml`` as
its params file, and a non-empty ``model`` / ``backend`` / ``frame_prefix`` argument overrides the file's
value. When ``thermal_depth`` exits on its own, the launch shuts down and exits non-zero. Fast DDS is
pointed at the shipped profile (``config/fastdds.xml``: shared memory large enough for images) unless
``FASTDDS_DEFAULT_PROFILES_FILE`` is already set; camera drivers started outside this launch need it too.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable, Shutdown)
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from monother_ros.ros.graph import (
    FASTDDS_PROFILE,
    LAUNCH_ARGUMENTS,
    PACKAGE,
    PARAMS_FILE,
    RVIZ_CONFIG,
)
from monother_ros.ros.launch_support import node_exit_error, plan_launch


class NodeExitedError(RuntimeError):
    """Raised in the event loop so that ``ros2 launch`` shuts down and returns a non-zero code."""


def _on_required_exit(name):
    def handler(event, context):
        reason = node_exit_error(name, event.returncode, context.is_shutdown)
        if reason is not None:
            raise NodeExitedError(reason)  # launch logs it, shuts everything down and exits 1
        return None

    return handler


def _graph(context, share):
    """The node actions, chosen once the launch arguments' values are known (validated first: an error
    raised here stops the launch, exit code 1, before any node starts)."""
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS}
    plan = plan_launch(values)  # graph_nodes' selection, or ConfigError listing every bad argument
    params_file = os.path.join(share, "config", PARAMS_FILE)
    actions = []
    for name in plan.unavailable:
        actions.append(LogInfo(msg=f"{name} is not available yet"))
        actions.append(Shutdown(reason=f"{name} is not available yet"))
    for planned in plan.nodes:
        spec = planned.spec
        node = Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=plan.namespace,
            parameters=[params_file] + ([planned.overrides] if planned.overrides else []),
            remappings=list(spec.remappings),
            output="screen",
        )
        actions.append(node)
        if planned.required:
            actions.append(RegisterEventHandler(OnProcessExit(target_action=node,
                                                              on_exit=_on_required_exit(spec.name))))
    if plan.rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=plan.namespace,
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

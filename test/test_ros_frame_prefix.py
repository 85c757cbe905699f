"""Several robots in one DDS domain: with a namespace and a frame prefix per robot, the simulated rigs and
depth nodes share no frame id (TF and message headers), and a depth node prefixes the frames of a driver
that does not."""
from __future__ import annotations

import pytest

from monother_ros.ros.frames import frame_prefix_error, normalise_prefix, with_prefix


def test_prefix_rules():
    assert with_prefix("robot1/", "base_link") == "robot1/base_link"
    assert with_prefix("robot1", "base_link") == "robot1/base_link"
    assert with_prefix("robot1/", "robot1/base_link") == "robot1/base_link"  # already prefixed
    assert with_prefix("", "base_link") == "base_link" and with_prefix("robot1/", "") == ""
    assert normalise_prefix("a/b") == "a/b/" and normalise_prefix("") == ""
    for good in ("", "robot1/", "robot_1", "fleet/robot1/"):
        assert frame_prefix_error(good) is None, good
    for bad in ("/robot1", "robot 1", "robot1//", "rob-ot", 5):
        assert frame_prefix_error(bad) is not None, bad


@pytest.mark.ros
def test_two_namespaced_rigs_and_depth_nodes_share_no_frame_id():
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image
    from monother_ros.ros.depth_node import ThermalDepthNode
    from monother_ros.ros.sim_node import SimRigNode
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import thermal_frame
    from tiny_models import tiny_student_dir

    def depth_node(context, namespace, prefix):
        params = {"model": str(tiny_student_dir()), "backend": "onnxruntime", "num_threads": 1,
                  "frame_prefix": prefix}
        return ThermalDepthNode(context=context, namespace=namespace,
                                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])

    with ros_context() as context:
        nodes = []
        for robot in ("robot1", "robot2"):
            nodes.append(SimRigNode(context=context, namespace=robot, parameter_overrides=[
                Parameter("render_scale", value=0.1), Parameter("publish_lidar", value=False),
                Parameter("publish_rgb", value=False), Parameter("frame_prefix", value=f"{robot}/")]))
            nodes.append(depth_node(context, robot, f"{robot}/"))
        nodes.append(depth_node(context, "robot3", "robot3"))  # fed by a driver publishing unprefixed frames
        client = Node("observer", context=context)
        driver = client.create_publisher(Image, "/robot3/thermal/image_raw", qos.SENSOR)
        with Spinner(context, *nodes, client):
            tf_static = Collector(client, TFMessage, "/tf_static", qos.TF_STATIC)
            depth = {r: Collector(client, Image, f"/{r}/depth/image", qos.SENSOR) for r in ("robot1", "robot2", "robot3")}
            points = {r: Collector(client, PointCloud2, f"/{r}/depth/points", qos.SENSOR) for r in ("robot1", "robot2")}
            assert wait_for_subscribers(client, "/robot3/thermal/image_raw")
            for robot in ("robot1", "robot2"):
                assert depth[robot].wait_for_count(2, timeout=30), robot
                assert points[robot].wait_for_count(1, timeout=30), robot
            assert wait_for(lambda: len({t.child_frame_id for m in tf_static.messages for t in m.transforms}) >= 6, 10)
            image = thermal_frame(1, hw=(24, 32))
            assert wait_for(lambda: (driver.publish(array_to_image(image, encoding="mono16", stamp_ns=1,
                                                                   frame_id="thermal_optical_frame")) or
                                     len(depth["robot3"]) > 0), 10, interval=0.1)

        transforms = [t for m in tf_static.messages for t in m.transforms]
        frames = {robot: {f for t in transforms for f in (t.header.frame_id, t.child_frame_id) if f.startswith(robot)}
                  for robot in ("robot1", "robot2")}
        assert frames["robot1"] == {"robot1/base_link", "robot1/thermal_optical_frame", "robot1/rgb_optical_frame",
                                    "robot1/lidar_link"}
        assert {f.replace("robot2/", "robot1/") for f in frames["robot2"]} == frames["robot1"]
        assert all(f.startswith(("robot1/", "robot2/")) for t in transforms for f in (t.header.frame_id, t.child_frame_id))
        for robot in ("robot1", "robot2"):
            assert {m.header.frame_id for m in depth[robot].messages} == {f"{robot}/thermal_optical_frame"}
            assert {m.header.frame_id for m in points[robot].messages} == {f"{robot}/thermal_optical_frame"}
        assert {m.header.frame_id for m in depth["robot3"].messages} == {"robot3/thermal_optical_frame"}
        for node in nodes:
            node.destroy_node()


@pytest.mark.ros
def test_monother_rig_frame_prefix_reaches_every_node():
    from monother_ros.ros.commands import RigOptions, start_rig
    from ros_harness import ros_context

    with ros_context() as context:
        nodes = start_rig(RigOptions(sim=True, backend="onnxruntime", namespace="robot7", frame_prefix="robot7/"),
                          context)
        try:
            assert {n.get_name(): n.params["frame_prefix"] for n in nodes} == {"sim_rig": "robot7/",
                                                                               "thermal_depth": "robot7/"}
            assert {n.get_namespace() for n in nodes} == {"/robot7"}
            sim = next(n for n in nodes if n.get_name() == "sim_rig")
            assert (sim.base_frame, sim.thermal_frame) == ("robot7/base_link", "robot7/thermal_optical_frame")
        finally:
            for node in reversed(nodes):
                node.destroy_node()

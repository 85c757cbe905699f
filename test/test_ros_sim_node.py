"""The live sim_rig node over real DDS: heard from another process with the sensor QoS, stamps on the
30 Hz / ~20 Hz schedule, frame ids, camera_info, /tf_static for late joiners, /clock, parameters.

Rendering is slower than real time on the 2-core CI machine, so the node runs at a small render size
and a quarter of real time (``rate_scale`` 0.25): stamps still follow the simulated 30 Hz / 20 Hz schedule.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.ros

S = 1_000_000_000


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


def test_invalid_parameters_are_refused_at_start():
    from rclpy.parameter import Parameter

    from monother_ros.errors import ConfigError
    from monother_ros.ros.sim_node import SimRigNode
    from ros_harness import ros_context

    with ros_context() as context:
        with pytest.raises(ConfigError, match=r"scenario = 'rain'[\s\S]*render_scale = 5.0: must be <= 1.0"):
            SimRigNode(context=context, parameter_overrides=[Parameter("render_scale", value=5.0),
                                                             Parameter("scenario", value="rain")])


def test_rig_yaml_sim_section_matches_the_declared_parameters():
    import yaml

    from monother_ros.ros.sim_node import SIM_PARAMETERS
    from ros_harness import REPO_ROOT

    values = yaml.safe_load((REPO_ROOT / "config" / "rig.yaml").read_text())["/**/sim_rig"]["ros__parameters"]
    assert set(values) == set(SIM_PARAMETERS.specs)
    assert SIM_PARAMETERS.validate(values) == {**SIM_PARAMETERS.defaults(), **values}


@pytest.mark.slow  # ~6 s: a second process (imports, discovery) and a quarter-speed schedule
def test_sim_node_heard_from_another_process():
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from monother_ros.ros import qos
    from monother_ros.ros.convert import camera_from_info, image_to_array, point_cloud_to_array
    from monother_ros.sim.rig import SimRig
    from ros_harness import Collector, NodeProcess, Spinner, ros_context, wait_for_publishers

    from ros_harness import REPO_ROOT

    # The shipped params file first (its types must match the declarations), then test overrides.
    args = ["--ros-args", "--params-file", str(REPO_ROOT / "config" / "rig.yaml"),
            "-p", "render_scale:=0.1", "-p", "rate_scale:=0.25", "-p", "seed:=3"]
    with NodeProcess("monother_ros.ros.sim_node", args) as proc, ros_context() as context:
        node = Node("sim_listener", context=context)
        thermal = Collector(node, Image, "/thermal/image_raw", qos.SENSOR)
        thermal_info = Collector(node, CameraInfo, "/thermal/camera_info", qos.SENSOR)
        rgb = Collector(node, Image, "/rgb/image_raw", qos.SENSOR)
        rgb_info = Collector(node, CameraInfo, "/rgb/camera_info", qos.SENSOR)
        gt = Collector(node, Image, "/gt/depth", qos.SENSOR)
        lidar = Collector(node, PointCloud2, "/lidar/points", qos.SENSOR)
        diagnostics = Collector(node, DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        with Spinner(context, node):
            assert wait_for_publishers(node, "/thermal/image_raw", timeout=20.0), proc.output()
            thermal_msgs = thermal.wait_for_count(12, timeout=15.0)
            assert len(thermal_msgs) >= 12, proc.output()
            rgb_msgs = rgb.wait_for_count(6, timeout=10.0)
            assert len(rgb_msgs) >= 6, proc.output()
            assert lidar.wait_for_count(2, timeout=10.0)
            assert diagnostics.wait_for_count(1, timeout=10.0)

            # A subscriber joining now still gets the rig's static transforms (transient local).
            late = Collector(node, TFMessage, "/tf_static", qos.TF_STATIC)
            info = Collector(node, String, "/rig/info", qos.TF_STATIC)
            tf_msgs = late.wait_for_count(1, timeout=10.0)
            info_json = info.wait_for_count(1, timeout=10.0)
            assert tf_msgs, "late joiner did not receive /tf_static"
            gt_msgs, info_msgs, rgb_info_msgs = list(gt.messages), list(thermal_info.messages), list(rgb_info.messages)
            lidar_msgs, diag_msgs = list(lidar.messages), list(diagnostics.messages)

    assert proc.process.returncode == 0, proc.output()
    assert "Traceback" not in proc.output()

    rig = SimRig(3)
    # Thermal: mono16 at render_scale 0.1, stamps strictly increasing on the 30 Hz schedule.
    first = thermal_msgs[0]
    assert (first.encoding, first.width, first.height, first.header.frame_id) == ("mono16", 64, 51, "thermal_optical_frame")
    counts = image_to_array(first)
    assert counts.dtype == np.uint16 and counts.std() > 0
    stamps = np.array([stamp_ns(m) for m in thermal_msgs], dtype=np.int64)
    deltas = np.diff(stamps)
    assert np.all(deltas > 0)
    periods = deltas / (S / 30)
    np.testing.assert_allclose(periods, np.round(periods), atol=1e-3)  # whole 30 Hz periods (drops allowed)
    assert np.median(periods) == pytest.approx(1.0, abs=1e-3)

    # RGB: rgb8, ~20 Hz with +-3 ms jitter, never on a thermal stamp.
    r = rgb_msgs[0]
    assert (r.encoding, r.width, r.height, r.header.frame_id) == ("rgb8", 128, 72, "rgb_optical_frame")
    rgb_stamps = np.array([stamp_ns(m) for m in rgb_msgs], dtype=np.int64)
    rgb_periods = np.diff(rgb_stamps) / (S / 20)
    assert np.all(np.abs(rgb_periods - np.round(rgb_periods)) < 0.15)
    assert np.median(np.round(rgb_periods)) == 1.0

    # camera_info: same stamps and frame as the images, intrinsics of the scaled cameras.
    info_by_stamp = {stamp_ns(m): m for m in info_msgs}
    matched = [s for s in stamps if s in info_by_stamp]
    assert len(matched) >= len(stamps) - 2
    camera = camera_from_info(info_by_stamp[matched[0]], image_size=(64, 51))
    expected = rig.thermal_camera.resized(64, 51, align_corners=False)
    assert camera.fx == pytest.approx(expected.fx) and camera.cx == pytest.approx(expected.cx)
    assert all(m.header.frame_id == "rgb_optical_frame" and m.width == 128 for m in rgb_info_msgs)

    # Ground-truth depth: 32FC1 in the thermal frame at thermal stamps, metres or NaN.
    assert gt_msgs and all(m.encoding == "32FC1" and m.header.frame_id == "thermal_optical_frame" for m in gt_msgs)
    assert set(stamp_ns(m) for m in gt_msgs) <= set(stamp_ns(m) for m in thermal_msgs) | set(info_by_stamp)
    depth = image_to_array(gt_msgs[0])
    finite = depth[np.isfinite(depth)]
    assert finite.size > 0 and finite.min() > 0 and finite.max() <= 80.0

    # LiDAR: unorganised x, y, z, intensity in lidar_link.
    cloud = point_cloud_to_array(lidar_msgs[0])
    assert lidar_msgs[0].header.frame_id == "lidar_link" and lidar_msgs[0].height == 1 and cloud.shape[2] == 4
    ranges = np.linalg.norm(cloud[0, :, :3], axis=1)
    assert ranges.max() <= 80.5 and cloud.shape[1] > 1000

    # /tf_static: base_link -> the three sensors, equal to the rig's extrinsics.
    transforms = {t.child_frame_id: t for t in tf_msgs[-1].transforms}
    assert set(transforms) == {"thermal_optical_frame", "rgb_optical_frame", "lidar_link"}
    for child, T in (("thermal_optical_frame", rig.T_base_thermal), ("lidar_link", rig.T_base_lidar)):
        t = transforms[child]
        assert t.header.frame_id == "base_link"
        np.testing.assert_allclose([t.transform.translation.x, t.transform.translation.y, t.transform.translation.z],
                                   T[:3, 3], atol=1e-9)

    assert any("sim_rig" in status.name for d in diag_msgs for status in d.status)
    described = json.loads(info_json[0].data)
    assert (described["seed"], described["scenario"], described["thermal_frame"]) == (3, "day", "thermal_optical_frame")


def test_publish_clock_carries_the_stamps():
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from monother_ros.ros.sim_node import SimRigNode
    from ros_harness import Collector, Spinner, ros_context, wait_for

    overrides = [Parameter("render_scale", value=0.05), Parameter("rate_scale", value=0.5),
                 Parameter("publish_clock", value=True), Parameter("publish_rgb", value=False),
                 Parameter("publish_lidar", value=False), Parameter("publish_gt_depth", value=False)]
    with ros_context() as context:
        sim = SimRigNode(context=context, parameter_overrides=overrides)
        listener = Node("clock_listener", context=context)
        clock = Collector(listener, Clock, "/clock", qos.CLOCK)
        thermal = Collector(listener, Image, "thermal/image_raw", qos.SENSOR)
        try:
            with Spinner(context, sim, listener):
                images = thermal.wait_for_count(6, timeout=15.0)
                assert len(images) >= 6
                assert wait_for(lambda: len(clock) >= 6)
                clock_ns = [m.clock.sec * S + m.clock.nanosec for m in clock.messages]
        finally:
            sim.destroy_node()
    assert clock_ns == sorted(clock_ns)
    image_stamps = {stamp_ns(m) for m in images}
    assert len(image_stamps & set(clock_ns)) >= len(image_stamps) - 1  # each image's stamp went out on /clock
    assert sim.published["rgb"] == 0 and sim.published["thermal"] >= 6

"""`ros2 param set` on thermal_depth over DDS (a real rclpy parameter client): a dynamic threshold takes
effect on the next frame, an invalid value is refused with its reason and changes nothing, a read-only
parameter is refused as read-only; plus the pure ParamTable.check_change."""
from __future__ import annotations

import time

import numpy as np
import pytest

from monother_ros.ros.params import ParamSpec, ParamTable, in_range

S = 1_000_000_000


def test_check_change_validates_like_at_start_and_refuses_read_only():
    table = ParamTable([ParamSpec("backend", str, "auto", "backend"),
                        ParamSpec("max_depth_m", float, 0.0, "max", in_range(0.0, 100.0), dynamic=True)])
    assert table.dynamic_names() == ["max_depth_m"]
    assert table.check_change({"max_depth_m": 5}) == ({"max_depth_m": 5.0}, None)
    assert table.check_change({"use_sim_time": True}) == ({}, None)  # rclpy's own: not ours to judge
    values, reason = table.check_change({"max_depth_m": 500.0})
    assert values == {} and reason == "max_depth_m = 500.0: must be <= 100.0"
    values, reason = table.check_change({"max_depth_m": "far"})
    assert values == {} and "must be a number" in reason
    values, reason = table.check_change({"max_depth_m": 5.0, "backend": "torch"})
    assert values == {} and reason.startswith("backend is read-only")


def _set(client_node, param_client, name, value, timeout=10.0):
    """Set one parameter through the node's set_parameters service; returns the SetParametersResult."""
    from rclpy.parameter import Parameter

    from ros_harness import wait_for

    future = param_client.set_parameters([Parameter(name, value=value)])
    assert wait_for(future.done, timeout), f"set_parameters({name}) got no answer"
    return future.result().results[0]


def _get(param_client, name, timeout=10.0):
    from rclpy.parameter import parameter_value_to_python

    from ros_harness import wait_for

    future = param_client.get_parameters([name])
    assert wait_for(future.done, timeout)
    return parameter_value_to_python(future.result().values[0])


@pytest.mark.ros
def test_param_set_over_dds_applies_valid_refuses_invalid_and_read_only():
    from rclpy.node import Node
    from rclpy.parameter_client import AsyncParameterClient
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, image_to_array, stamp_to_ns
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import make_node, thermal_frame

    image = thermal_frame(5)
    with ros_context() as context:
        node = make_node(context)
        client = Node("param_client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        params = AsyncParameterClient(client, "thermal_depth")
        with Spinner(context, node, client):
            depth = Collector(client, Image, "depth/image", qos.SENSOR)
            assert wait_for_subscribers(client, "thermal/image_raw")
            assert params.wait_for_services(timeout_sec=10.0)

            def frame(stamp_ns):
                """Publish until the depth of this stamp comes back; returns it (H, W) float32."""
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    pub.publish(array_to_image(image, encoding="mono16", stamp_ns=stamp_ns, frame_id="thermal"))
                    if wait_for(lambda: any(stamp_to_ns(m.header.stamp) == stamp_ns for m in depth.messages), 0.3):
                        msg = next(m for m in depth.messages if stamp_to_ns(m.header.stamp) == stamp_ns)
                        return image_to_array(msg).copy()
                raise AssertionError(f"no depth for stamp {stamp_ns}")

            before = frame(1 * S)
            finite = before[np.isfinite(before)]
            assert finite.size > 100
            cut = float(np.median(finite))

            # A valid change: from the next frame, depth at or above the new max is masked.
            result = _set(client, params, "max_depth_m", cut)
            assert result.successful, result.reason
            after = frame(2 * S)
            np.testing.assert_array_equal(np.isnan(after), ~(before < cut) | np.isnan(before))
            np.testing.assert_allclose(after[np.isfinite(after)], before[before < cut], rtol=1e-6)
            assert np.isnan(after).sum() > np.isnan(before).sum() + finite.size // 4
            assert node.params["max_depth_m"] == cut and node.engine.thresholds.max_depth_m == cut
            assert _get(params, "max_depth_m") == cut

            # Invalid values are refused with the reason; the running configuration is unchanged.
            thresholds = node.engine.thresholds
            for name, value, reason in (("max_depth_m", -1.0, "must be >= 0"),
                                        ("min_confidence", 1.5, "must be <= 1.0"),
                                        ("min_confidence", "high", "must be a number"),
                                        ("min_depth_m", cut + 10.0, "min_depth_m < max_depth_m")):
                result = _set(client, params, name, value)
                assert not result.successful, (name, value)
                assert reason in result.reason, result.reason
            assert node.engine.thresholds == thresholds
            assert _get(params, "max_depth_m") == cut and _get(params, "min_confidence") == 0.0
            np.testing.assert_array_equal(frame(3 * S), after)

            # Read-only parameters are refused as read-only and keep their value.
            result = _set(client, params, "backend", "torch")
            assert not result.successful and "read-only" in result.reason.lower(), result.reason
            assert _get(params, "backend") == "onnxruntime" and node.params["backend"] == "onnxruntime"

            # fusion.enabled is dynamic too (takes effect with the teacher path, see the depth node tests).
            assert _set(client, params, "fusion.enabled", True).successful
            assert node.params["fusion.enabled"] is True and _get(params, "fusion.enabled") is True

            # Back to the model's range (0): nothing masked by max_depth_m any more.
            assert _set(client, params, "max_depth_m", 0.0).successful
            np.testing.assert_array_equal(frame(4 * S), before)
        node.destroy_node()


@pytest.mark.ros
def test_cloud_options_change_at_runtime_over_dds():
    from rclpy.node import Node
    from rclpy.parameter_client import AsyncParameterClient
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_cloud import (H, W, make_node, publish_until, read_points, stamp_of, thermal_camera,
                                      thermal_frame, xyz_of)

    cam = thermal_camera()
    image = thermal_frame(4)
    with ros_context() as context:
        node = make_node(context)
        client = Node("cloud_param_client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_info = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        points = Collector(client, PointCloud2, "depth/points", qos.SENSOR)
        params = AsyncParameterClient(client, "thermal_depth")
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "thermal/camera_info", timeout=15)
            assert params.wait_for_services(timeout_sec=10.0)
            info = camera_to_info(cam, frame_id="thermal_optical_frame")
            assert wait_for(lambda: (pub_info.publish(info), node._thermal_info is not None)[1], 10.0)

            def cloud(stamp_ns):
                msg = publish_until(points, lambda: pub.publish(array_to_image(
                    image, encoding="mono16", stamp_ns=stamp_ns, frame_id="thermal_optical_frame")),
                    lambda m: stamp_of(m) == stamp_ns)
                return xyz_of(read_points(msg))

            full = cloud(1 * S)
            assert full.shape == (H, W, 3)
            assert _set(client, params, "cloud.decimation", 4).successful
            np.testing.assert_array_equal(cloud(2 * S), full[::4, ::4])
            result = _set(client, params, "cloud.decimation", 0)
            assert not result.successful and "must be >= 1" in result.reason
            assert node.params["cloud.decimation"] == 4
            result = _set(client, params, "cloud.rgb", True)  # decides the RGB subscriptions at start
            assert not result.successful and "read-only" in result.reason.lower()

            ranges = np.linalg.norm(full.astype(np.float64), axis=-1)
            limit = float(np.nanmedian(ranges))
            assert _set(client, params, "cloud.decimation", 1).successful
            assert _set(client, params, "cloud.max_range_m", limit).successful
            got = cloud(3 * S)
            clear = np.abs(ranges - limit) > 1e-5 * limit
            assert np.isnan(got[clear & (ranges > limit)]).all() and np.isfinite(got[clear & (ranges < limit)]).all()
            np.testing.assert_array_equal(got[clear & (ranges < limit)], full[clear & (ranges < limit)])
        node.destroy_node()

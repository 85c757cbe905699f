"""TransformBuffer: interpolation, chain lookups, tf2 errors, validation, resets; and the rclpy
listener / static broadcaster over real DDS."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from monother_ros.core import se3
from monother_ros.ros.tf import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    TransformBuffer,
    TransformError,
)

S = 1_000_000_000


def quat_z(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def T(R, t) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = t
    return out


@pytest.fixture
def tree() -> TransformBuffer:
    """map -> odom (dynamic, moving along x, turning about z) -> base (static) -> {cam, lidar} (static)."""
    buf = TransformBuffer()
    buf.set_transform("map", "odom", 10 * S, (0, 0, 0), quat_z(0.0))
    buf.set_transform("map", "odom", 12 * S, (2, 0, 0), quat_z(math.pi / 2))
    buf.set_transform("odom", "base", 0, (1, 0, 0), (0, 0, 0, 1), static=True)
    buf.set_transform("base", "cam", 0, (0, 0.5, 1), quat_z(math.pi / 2), static=True)
    buf.set_transform("base", "lidar", 0, (0, 0, 2), (0, 0, 0, 1), static=True)
    return buf


def test_interpolation_midway_is_slerp_and_lerp(tree):
    got = tree.lookup_transform("map", "odom", 11 * S)
    np.testing.assert_allclose(got, T(rot_z(math.pi / 4), (1, 0, 0)), atol=1e-12)
    quarter = tree.lookup_transform("map", "odom", 10 * S + S // 2)
    np.testing.assert_allclose(quarter, T(rot_z(math.pi / 8), (0.5, 0, 0)), atol=1e-12)


def test_exact_stamps_and_latest(tree):
    np.testing.assert_allclose(tree.lookup_transform("map", "odom", 12 * S), T(rot_z(math.pi / 2), (2, 0, 0)), atol=1e-12)
    np.testing.assert_allclose(tree.lookup_transform("map", "odom", 0), T(rot_z(math.pi / 2), (2, 0, 0)), atol=1e-12)


def test_chain_through_common_ancestor(tree):
    # lidar -> cam: both children of base. cam_T_lidar = inv(base_T_cam) @ base_T_lidar.
    base_T_cam = T(rot_z(math.pi / 2), (0, 0.5, 1))
    base_T_lidar = T(np.eye(3), (0, 0, 2))
    expected = np.linalg.inv(base_T_cam) @ base_T_lidar
    np.testing.assert_allclose(tree.lookup_transform("cam", "lidar", 0), expected, atol=1e-12)
    # The lidar origin is (0, -0.5, 1) from the camera in base axes; the camera is turned 90 deg about
    # z, so by hand: R^T (0, -0.5, 1) = (-0.5, 0, 1).
    point = se3.transform_points(tree.lookup_transform("cam", "lidar", 0), np.zeros(3))
    np.testing.assert_allclose(point, [-0.5, 0.0, 1.0], atol=1e-12)


def test_chain_up_to_the_root_at_a_time(tree):
    # map_T_cam at t = 11 s: map_T_odom(11) @ odom_T_base @ base_T_cam.
    expected = T(rot_z(math.pi / 4), (1, 0, 0)) @ T(np.eye(3), (1, 0, 0)) @ T(rot_z(math.pi / 2), (0, 0.5, 1))
    np.testing.assert_allclose(tree.lookup_transform("map", "cam", 11 * S), expected, atol=1e-12)
    inverse = tree.lookup_transform("cam", "map", 11 * S)
    np.testing.assert_allclose(inverse @ expected, np.eye(4), atol=1e-12)


def test_static_only_chain_ignores_time(tree):
    a = tree.lookup_transform("cam", "lidar", 5 * S)
    b = tree.lookup_transform("cam", "lidar", 500 * S)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tree.lookup_transform("cam", "cam", 0), np.eye(4))


def test_extrapolation_errors(tree):
    with pytest.raises(ExtrapolationError, match="extrapolation into the future.*12.000000000"):
        tree.lookup_transform("map", "cam", 13 * S)
    with pytest.raises(ExtrapolationError, match="extrapolation into the past.*10.000000000"):
        tree.lookup_transform("map", "cam", 9 * S)
    buf = TransformBuffer()
    buf.set_transform("a", "b", 5 * S, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ExtrapolationError, match="only time 5.000000000 is in the buffer"):
        buf.lookup_transform("a", "b", 6 * S)
    buf.lookup_transform("a", "b", 5 * S)


def test_unknown_frame_and_unconnected_trees(tree):
    with pytest.raises(FrameNotFoundError, match='"nowhere" passed to lookup_transform argument source_frame does not exist'):
        tree.lookup_transform("map", "nowhere")
    tree.set_transform("world", "other", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    with pytest.raises(ConnectivityError, match="not part of the same tree"):
        tree.lookup_transform("map", "other")
    assert not tree.can_transform("map", "other")
    assert tree.can_transform("map", "cam", 11 * S)


@pytest.mark.parametrize(
    "args, reason",
    [
        (("a", "b", 0, (0, 0, 0), (0, 0, 0, 2.0)), "non_unit_quaternion"),
        (("a", "b", 0, (0, 0, 0), (0, 0, 0, 0.0)), "non_unit_quaternion"),
        (("a", "b", 0, (0, 0, 0), (math.nan, 0, 0, 1.0)), "nan"),
        (("a", "b", 0, (0, math.inf, 0), (0, 0, 0, 1.0)), "nan"),
        (("a", "a", 0, (0, 0, 0), (0, 0, 0, 1.0)), "self_transform"),
        (("", "b", 0, (0, 0, 0), (0, 0, 0, 1.0)), "empty_frame_id"),
    ],
)
def test_bad_transforms_are_rejected_and_counted(args, reason):
    buf = TransformBuffer()
    assert buf.set_transform(*args) is False
    assert buf.rejected == {reason: 1}
    assert buf.last_rejection and ("a" in buf.last_rejection or "b" in buf.last_rejection)
    assert buf.frames == set()


def test_nearly_unit_quaternion_is_normalised():
    buf = TransformBuffer()
    assert buf.set_transform("a", "b", 0, (0, 0, 0), (0, 0, 0, 1.0005), static=True)
    np.testing.assert_allclose(buf.lookup_transform("a", "b"), np.eye(4), atol=1e-12)


def test_cache_window_prunes_old_data():
    buf = TransformBuffer(cache_time_ns=2 * S)
    for t in range(0, 6):
        buf.set_transform("a", "b", t * S, (t, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(buf.lookup_transform("a", "b", 3 * S + S // 2)[:3, 3], [3.5, 0, 0])
    with pytest.raises(ExtrapolationError, match="into the past"):
        buf.lookup_transform("a", "b", 2 * S)


def test_clear_on_reset_and_backward_jump():
    buf = TransformBuffer(cache_time_ns=2 * S)
    buf.set_transform("base", "cam", 0, (0, 0, 1), (0, 0, 0, 1), static=True)
    buf.set_transform("odom", "base", 100 * S, (1, 0, 0), (0, 0, 0, 1))
    buf.clear()
    assert buf.resets == 1
    with pytest.raises(TransformError):
        buf.lookup_transform("odom", "base")
    assert buf.can_transform("base", "cam")  # static transforms survive, as in tf2
    buf.set_transform("odom", "base", 100 * S, (1, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base", 5 * S, (7, 0, 0), (0, 0, 0, 1))  # bag loop: 95 s back
    assert buf.resets == 2
    np.testing.assert_allclose(buf.lookup_transform("odom", "base")[:3, 3], [7, 0, 0])


def test_latest_common_time_uses_the_oldest_newest_link():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 1 * S, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("a", "b", 3 * S, (2, 0, 0), (0, 0, 0, 1))
    buf.set_transform("b", "c", 1 * S, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("b", "c", 2 * S, (0, 1, 0), (0, 0, 0, 1))
    # time 0 -> 2 s (c's newest): a_T_b interpolated at 2 s = x 1.
    np.testing.assert_allclose(buf.lookup_transform("a", "c", 0)[:3, 3], [1, 1, 0])


def test_blocking_lookup_waits_for_data_from_another_thread():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 1 * S, (0, 0, 0), (0, 0, 0, 1))

    def late() -> None:
        time.sleep(0.05)
        buf.set_transform("a", "b", 2 * S, (4, 0, 0), (0, 0, 0, 1))

    thread = threading.Thread(target=late)
    start = time.monotonic()
    thread.start()
    got = buf.lookup_transform("a", "b", int(1.5 * S), timeout_s=5.0)
    thread.join()
    assert time.monotonic() - start < 2.0
    np.testing.assert_allclose(got[:3, 3], [2, 0, 0])
    with pytest.raises(ExtrapolationError, match="after waiting 0.050 s"):
        buf.lookup_transform("a", "b", 3 * S, timeout_s=0.05)


def test_leading_slash_frames_are_accepted():
    buf = TransformBuffer()
    buf.set_transform("/a", "/b", 0, (1, 2, 3), (0, 0, 0, 1), static=True)
    np.testing.assert_allclose(buf.lookup_transform("a", "/b")[:3, 3], [1, 2, 3])


# ------------------------------------------------------------------------------------- over real DDS


@pytest.mark.ros
def test_listener_receives_static_late_and_dynamic_and_rejects_bad(tmp_path):
    from rclpy.node import Node
    from tf2_msgs.msg import TFMessage

    from monother_ros.ros import qos
    from monother_ros.ros.tf import StaticTransformBroadcaster, TransformListener, transform_to_msg
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers

    with ros_context() as context:
        talker = Node("tf_talker", context=context)
        static = StaticTransformBroadcaster(talker)
        static.send(transform_to_msg("base", "cam", 0, T(rot_z(math.pi / 2), (0, 0.5, 1))))
        static.send(transform_to_msg("base", "lidar", 0, T(np.eye(3), (0, 0, 2))))
        dynamic = talker.create_publisher(TFMessage, "/tf", qos.TF)
        # The listener joins after the static transforms were sent: transient local must deliver them.
        listener_node = Node("tf_listener", context=context)
        buf = TransformBuffer()
        listener = TransformListener(buf, listener_node)
        with Spinner(context, talker, listener_node):
            assert wait_for(lambda: buf.can_transform("cam", "lidar"), 10.0), "late joiner missed /tf_static"
            assert wait_for_subscribers(talker, "/tf")
            good = transform_to_msg("odom", "base", 5 * S, T(np.eye(3), (3, 0, 0)))
            bad = transform_to_msg("odom", "base", 6 * S, np.eye(4))
            bad.transform.rotation.w = 3.0
            dynamic.publish(TFMessage(transforms=[good, bad]))
            assert wait_for(lambda: buf.rejected.get("non_unit_quaternion") == 1, 10.0)
            np.testing.assert_allclose(buf.lookup_transform("odom", "cam", 5 * S)[:3, 3], [3, 0.5, 1], atol=1e-9)
        listener.unregister()


@pytest.mark.ros
def test_listener_clears_dynamic_transforms_when_sim_time_jumps_back():
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from monother_ros.ros import qos
    from monother_ros.ros.convert import ns_to_stamp
    from monother_ros.ros.tf import TransformListener
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers

    with ros_context() as context:
        node = Node("tf_sim_time", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        clock_node = Node("clock_talker", context=context)
        clock_pub = clock_node.create_publisher(Clock, "/clock", qos.CLOCK)
        buf = TransformBuffer()
        listener = TransformListener(buf, node)
        with Spinner(context, node, clock_node):
            assert wait_for_subscribers(clock_node, "/clock")
            clock_pub.publish(Clock(clock=ns_to_stamp(100 * S)))
            assert wait_for(lambda: node.get_clock().now().nanoseconds == 100 * S)
            buf.set_transform("odom", "base", 100 * S, (1, 0, 0), (0, 0, 0, 1))
            assert buf.resets == 0
            clock_pub.publish(Clock(clock=ns_to_stamp(40 * S)))  # bag loop
            assert wait_for(lambda: buf.resets == 1)
            assert not buf.can_transform("odom", "base")
        listener.unregister()

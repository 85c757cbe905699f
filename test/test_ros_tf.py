"""TransformBuffer: interpolation, chain lookups, tf2 errors, validation, resets; tf2's own test
vectors (parents changing over time, the cache window and stale data, quaternion tolerance, leading
'/', latest common time); and the rclpy listener / static broadcaster over real DDS."""
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
    InvalidFrameError,
    ThrottledReporter,
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
        (("a", "/", 0, (0, 0, 0), (0, 0, 0, 1.0)), "empty_frame_id"),  # tf2: "/" strips to ""
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
    assert buf.last_rejection and ("'a'" in buf.last_rejection or "'b'" in buf.last_rejection)
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


def test_clear_on_reset_keeps_static_and_a_stale_transform_clears_nothing():
    buf = TransformBuffer(cache_time_ns=2 * S)
    buf.set_transform("base", "cam", 0, (0, 0, 1), (0, 0, 0, 1), static=True)
    buf.set_transform("odom", "base", 100 * S, (1, 0, 0), (0, 0, 0, 1))
    buf.clear()
    assert buf.resets == 1
    with pytest.raises(TransformError):
        buf.lookup_transform("odom", "base")
    assert buf.can_transform("base", "cam")  # static transforms survive, as in tf2
    buf.set_transform("odom", "base", 100 * S, (1, 0, 0), (0, 0, 0, 1))
    # 95 s back: older than the cache behind the newest data -> ignored (tf2 TF_OLD_DATA), nothing cleared.
    assert buf.set_transform("odom", "base", 5 * S, (7, 0, 0), (0, 0, 0, 1)) is False
    assert buf.resets == 1 and buf.rejected == {"old_data": 1}
    assert "older than the cache" in buf.last_rejection
    np.testing.assert_allclose(buf.lookup_transform("odom", "base")[:3, 3], [1, 0, 0])


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


# ------------------------------------------------------------- tf2's own test cases, as facts
# Vectors from ros2/geometry2 (tf2/test/cache_unittest.cpp, test_tf2/test/buffer_core_test.cpp and the
# BufferCore sources), restated against this buffer; the code below is ours.


def test_parent_change_lookups_walk_the_parent_valid_at_that_time():
    """robot is under map_a for t in [1, 3] s, then under map_b for t in [4, 6] s; both maps hang
    under world at different offsets (tf2: each cache entry is (stamp, parent, transform))."""
    buf = TransformBuffer()
    buf.set_transform("world", "map_a", 0, (10, 0, 0), (0, 0, 0, 1), static=True)
    buf.set_transform("world", "map_b", 0, (0, 20, 0), quat_z(math.pi / 2), static=True)
    for t in (1, 2, 3):
        buf.set_transform("map_a", "robot", t * S, (t, 0, 0), (0, 0, 0, 1))
    for t in (4, 5, 6):
        buf.set_transform("map_b", "robot", t * S, (0, t, 0), (0, 0, 0, 1))
    assert buf.get_parent("robot", 2 * S) == "map_a" and buf.get_parent("robot", 5 * S) == "map_b"
    assert buf.get_parent("robot", 0) == "map_b"  # time 0: the newest
    # At 2.5 s: interpolated under map_a, then map_a -> world.
    np.testing.assert_allclose(buf.lookup_transform("world", "robot", int(2.5 * S))[:3, 3], [12.5, 0, 0], atol=1e-12)
    # At 5 s: under map_b (turned 90 deg about z): world = (0, 20, 0) + Rz(90) (0, 5, 0) = (-5, 20, 0).
    np.testing.assert_allclose(buf.lookup_transform("world", "robot", 5 * S)[:3, 3], [-5, 20, 0], atol=1e-12)
    # Between the last map_a and the first map_b sample: the older sample holds, no interpolation
    # across the parent change (tf2 ReparentingInterpolationProtection).
    np.testing.assert_allclose(buf.lookup_transform("world", "robot", int(3.5 * S))[:3, 3], [13, 0, 0], atol=1e-12)
    # map_a -> robot at 2 s is direct; map_b -> robot at 2 s goes up through world and back down.
    np.testing.assert_allclose(buf.lookup_transform("map_a", "robot", 2 * S)[:3, 3], [2, 0, 0], atol=1e-12)
    expected = np.linalg.inv(T(rot_z(math.pi / 2), (0, 20, 0))) @ T(np.eye(3), (12, 0, 0))
    np.testing.assert_allclose(buf.lookup_transform("map_b", "robot", 2 * S), expected, atol=1e-12)


def test_parent_change_without_a_common_tree_connects_only_while_valid():
    buf = TransformBuffer()
    buf.set_transform("map_a", "robot", 1 * S, (1, 0, 0), (0, 0, 0, 1))
    buf.set_transform("map_a", "robot", 2 * S, (2, 0, 0), (0, 0, 0, 1))
    buf.set_transform("map_b", "robot", 3 * S, (0, 3, 0), (0, 0, 0, 1))
    buf.set_transform("map_b", "robot", 4 * S, (0, 4, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(buf.lookup_transform("map_a", "robot", int(1.5 * S))[:3, 3], [1.5, 0, 0])
    np.testing.assert_allclose(buf.lookup_transform("map_b", "robot", int(3.5 * S))[:3, 3], [0, 3.5, 0])
    with pytest.raises(ConnectivityError):
        buf.lookup_transform("map_b", "robot", int(1.5 * S))
    with pytest.raises(ConnectivityError):
        buf.lookup_transform("map_a", "robot", int(3.5 * S))
    # Time 0 uses the newest parent (tf2 getLatestCommonTime walks getLatestTimeAndParent).
    np.testing.assert_allclose(buf.lookup_transform("map_b", "robot", 0)[:3, 3], [0, 4, 0])
    with pytest.raises(ConnectivityError):
        buf.lookup_transform("map_a", "robot", 0)


@pytest.mark.parametrize("reverse", [False, True])
def test_tf2_cache_repeatability_parent_per_stamp(reverse):
    """cache_unittest Repeatability / RepeatabilityReverseInsertOrder: parent i at stamp i ns."""
    buf = TransformBuffer()
    order = range(99, 0, -1) if reverse else range(1, 100)
    for i in order:
        assert buf.set_transform(f"p{i}", "child", i, (i, 0, 0), (0, 0, 0, 1))
    for i in range(1, 100):
        assert buf.get_parent("child", i) == f"p{i}"
        np.testing.assert_allclose(buf.lookup_transform(f"p{i}", "child", i)[:3, 3], [i, 0, 0])
    # ZeroAtFront: time 0 is the newest sample, and a newer one replaces it.
    assert buf.get_parent("child", 0) == "p99"
    buf.set_transform("p100", "child", 100, (0, 0, 0), (0, 0, 0, 1))
    assert buf.get_parent("child", 0) == "p100"


def test_tf2_reparenting_interpolation_protection():
    """cache_unittest ReparentingInterpolationProtection: samples at 555 and 655 ns with parents 4 and 5;
    every time in [555, 655) returns the first sample's values."""
    buf = TransformBuffer()
    first, second = (3.1, -2.0, 7.5), (-4.0, 1.5, 0.25)
    buf.set_transform("p4", "child", 555, first, (0, 0, 0, 1))
    buf.set_transform("p5", "child", 655, second, (0, 0, 0, 1))
    for pos in range(100):
        assert buf.get_parent("child", 555 + pos) == "p4"
        np.testing.assert_allclose(buf.lookup_transform("p4", "child", 555 + pos)[:3, 3], first, atol=1e-6)
    assert buf.get_parent("child", 655) == "p5"


def test_tf2_cache_get_all_items_pruning_and_old_data():
    """cache_unittest GetAllItems (storage 10 ns): stamps 0, 10, 5, 3, 8 are all kept (oldest to
    newest is exactly the storage time); after 15, 0 and 3 are pruned, a new 0 is refused, 5 is kept."""
    buf = TransformBuffer(cache_time_ns=10)
    for stamp in (0, 10, 5, 3, 8):
        assert buf.set_transform("a", "b", stamp, (stamp, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(buf.lookup_transform("a", "b", 0 + 1)[:3, 3], [1, 0, 0])  # 0..3 still there
    assert buf.set_transform("a", "b", 15, (15, 0, 0), (0, 0, 0, 1))
    assert buf.set_transform("a", "b", 0, (0, 0, 0), (0, 0, 0, 1)) is False
    assert buf.rejected == {"old_data": 1}
    assert buf.set_transform("a", "b", 5, (5, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ExtrapolationError, match="into the past"):
        buf.lookup_transform("a", "b", 4)
    np.testing.assert_allclose(buf.lookup_transform("a", "b", 12)[:3, 3], [12, 0, 0])
    assert buf.resets == 0


def test_a_single_stale_message_does_not_break_later_lookups():
    """The issue's case: one map -> odom message older than the cache (a late or replayed message)
    used to clear the frame's buffer; now it is ignored and reported."""
    buf = TransformBuffer()
    problems = []
    buf.add_problem_callback(lambda reason, text: problems.append((reason, text)))
    buf.set_transform("odom", "base_link", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    for k in range(11):
        buf.set_transform("map", "odom", 100 * S + k * S // 10, (k, 0, 0), (0, 0, 0, 1))
    assert buf.set_transform("map", "odom", 50 * S, (99, 0, 0), (0, 0, 0, 1)) is False
    for k in range(11, 21):
        assert buf.set_transform("map", "odom", 100 * S + k * S // 10, (k, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(buf.lookup_transform("map", "base_link", 100 * S + S // 20)[:3, 3], [0.5, 0, 0])
    np.testing.assert_allclose(buf.lookup_transform("map", "base_link", 0)[:3, 3], [20, 0, 0])
    assert buf.rejected == {"old_data": 1} and buf.resets == 0
    assert [reason for reason, _ in problems] == ["old_data"] and "'map' -> 'odom'" in problems[0][1]


@pytest.mark.parametrize(
    "q, valid",
    [
        # test_tf2 assertQuaternionValid / assertQuaternionMsgValid, in order (tolerance on |q|^2 - 1).
        ((1, 0, 0, 0), True),
        ((0, 0, 0, 0), False),
        ((0, 1, 0, 0), True),
        ((0, 1, 1, 0), False),
        ((0, 0, 1, 0), True),
        ((0, 0, 1, 1), False),
        ((0, 0, 0, 1), True),
        ((0, 0, math.sqrt(2) / 2, 1), False),
        ((0, 0, math.sqrt(2) / 2, math.sqrt(2) / 2), True),
        ((0, 0, math.sqrt(2) / 2 + 0.01, math.sqrt(2) / 2), False),  # |q|^2 = 1.0142
        ((0, 0, math.sqrt(2) / 2 - 0.01, math.sqrt(2) / 2), False),  # |q|^2 = 0.9860
        # Hand-typed: |q|^2 = 1.0082 (|q| - 1 = 4.1e-3, refused by the old 1e-3 rule on |q|).
        ((0, 0, 0.71, 0.71), True),
        ((0, 0, 0, 1.00498), True),   # |q|^2 = 1.00998
        ((0, 0, 0, 1.00504), False),  # |q|^2 = 1.01010
    ],
)
def test_tf2_quaternion_tolerance(q, valid):
    buf = TransformBuffer()
    assert buf.set_transform("a", "b", 0, (0, 0, 0), q, static=True) is valid
    assert buf.rejected == ({} if valid else {"non_unit_quaternion": 1})
    if valid:  # stored normalised: the rotation is orthonormal
        R = buf.lookup_transform("a", "b")[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


def test_hand_typed_quaternion_is_normalised_to_the_intended_rotation():
    buf = TransformBuffer()
    assert buf.set_transform("base_link", "thermal", 0, (0.1, 0, 0), (0, 0, 0.71, 0.71), static=True)
    np.testing.assert_allclose(buf.lookup_transform("base_link", "thermal"), T(rot_z(math.pi / 2), (0.1, 0, 0)),
                               atol=1e-12)


def test_leading_slash_is_stripped_on_insert_and_refused_in_lookups():
    """tf2 BufferCore: setTransform strips a leading '/'; lookupTransform/canTransform refuse one
    (test_tf2 BufferCore_lookupTransform/canTransform invalid_arguments)."""
    buf = TransformBuffer()
    problems = []
    buf.add_problem_callback(lambda reason, text: problems.append(reason))
    assert buf.set_transform("/a", "/b", 0, (1, 2, 3), (0, 0, 0, 1), static=True)
    assert buf.set_transform("b", "c", 0, (1, 0, 0), (0, 0, 0, 1), static=True)
    assert buf.frames == {"a", "b", "c"} and buf.slashes_stripped == 1 and problems == ["leading_slash"]
    np.testing.assert_allclose(buf.lookup_transform("a", "c")[:3, 3], [2, 2, 3])
    for target, source in (("/a", "b"), ("a", "/b")):
        with pytest.raises(InvalidFrameError, match="cannot start with a '/'"):
            buf.lookup_transform(target, source, timeout_s=5.0)  # refused at once, no waiting
        assert not buf.can_transform(target, source)
    for target, source in (("", "a"), ("a", "")):
        with pytest.raises(InvalidFrameError, match="cannot be empty"):
            buf.lookup_transform(target, source)
        assert not buf.can_transform(target, source)


def test_tf2_latest_common_time():
    """test_tf2 getLatestCommonTime, in nanoseconds."""
    buf = TransformBuffer()
    buf.set_transform("parent", "a", 1000, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("parent's parent", "parent", 2000, (0, 0, 0), (0, 0, 0, 1))
    assert buf.latest_common_time("a", "parent's parent") == 1000
    with pytest.raises(FrameNotFoundError):
        buf.latest_common_time("a", "not valid")
    buf.set_transform("parent", "a", 3000, (0, 0, 0), (0, 0, 0, 1))
    assert buf.latest_common_time("a", "parent's parent") == 2000
    buf.set_transform("parent", "b", 4000, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("b", "c", 3000, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("c", "d", 9000, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("f", "e", 5000, (0, 0, 0), (0, 0, 0, 1))
    for x, y, expected in (("a", "b", 3000), ("a", "c", 3000), ("c", "a", 3000), ("a", "d", 3000),
                           ("d", "a", 3000), ("e", "f", 5000), ("f", "e", 5000), ("parent", "b", 4000)):
        assert buf.latest_common_time(x, y) == expected, (x, y)
    with pytest.raises(ConnectivityError):
        buf.latest_common_time("a", "e")


def test_tf2_no_extrapolation_exception_from_parent():
    """test_tf2 NoExtrapolationExceptionFromParent: a and b under parent (1000, 10000 ns); a -> b at 2000."""
    buf = TransformBuffer(cache_time_ns=1_000_000)
    for stamp in (1000, 10000):
        buf.set_transform("parent", "a", stamp, (0, 0, 0), (0, 0, 0, 1))
        buf.set_transform("parent", "b", stamp, (0, 0, 0), (0, 0, 0, 1))
        buf.set_transform("parent's parent", "parent", stamp, (0, 0, 0), (0, 0, 0, 1))
        buf.set_transform("parent's parent's parent", "parent's parent", stamp, (0, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(buf.lookup_transform("b", "a", 2000), np.eye(4))


def test_tf2_extrapolation_from_one_value():
    """test_tf2 ExtrapolationFromOneValue."""
    buf = TransformBuffer(cache_time_ns=1_000_000)
    buf.set_transform("parent", "a", 1000, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("parent's parent", "parent", 1000, (0, 0, 0), (0, 0, 0, 1))
    for target, stamp in (("parent", 10), ("parent", 100000), ("parent's parent", 1), ("parent's parent", 10000)):
        with pytest.raises(ExtrapolationError):
            buf.lookup_transform(target, "a", stamp)
    buf.set_transform("parent", "a", 20000, (0, 0, 0), (0, 0, 0, 1))
    buf.lookup_transform("parent", "a", 10000)


def test_throttled_reporter_one_line_per_reason_per_period():
    now = [0.0]
    lines = []
    report = ThrottledReporter(lines.append, period_s=5.0, clock=lambda: now[0])
    report("old_data", "first")
    report("old_data", "second")
    report("nan", "other reason")
    now[0] = 4.9
    report("old_data", "third")
    now[0] = 5.1
    report("old_data", "fourth")
    assert lines == ["TF old_data: first", "TF nan: other reason",
                     "TF old_data: fourth (2 more since the last report)"]


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

            # A stale transform (30 s older than the newest, cache 10 s) and a ROS 1 style '/odom':
            # logged once per reason on the node's logger, the data kept.
            lines = []
            forward = listener.reporter.log
            listener.reporter.log = lambda text: (lines.append(text), forward(text))
            newer = transform_to_msg("odom", "base", 40 * S, T(np.eye(3), (4, 0, 0)))
            stale = transform_to_msg("odom", "base", 10 * S, T(np.eye(3), (9, 9, 9)))
            slashed = transform_to_msg("/odom", "/base", 41 * S, T(np.eye(3), (5, 0, 0)))
            dynamic.publish(TFMessage(transforms=[newer, stale, stale, slashed]))
            assert wait_for(lambda: buf.latest_stamp("base") == 41 * S, 10.0)
            assert buf.rejected == {"non_unit_quaternion": 1, "old_data": 2} and buf.slashes_stripped == 1
            assert [line.split(":")[0] for line in lines] == ["TF old_data", "TF leading_slash"], lines
            np.testing.assert_allclose(buf.lookup_transform("odom", "base", int(40.5 * S))[:3, 3], [4.5, 0, 0])
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

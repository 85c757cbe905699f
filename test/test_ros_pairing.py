"""ApproximateTime pairing against hand-worked sequences (the classic message_filters cases, worked
out by hand from the policy's rules), slop, queue overflow, resets, and nearest_within."""
from __future__ import annotations

import numpy as np
import pytest

from monother_ros.ros.pairing import ApproximateTimeSynchronizer, Stamped, nearest_within

S = 1_000_000_000  # one "tick" of the diagrams below is a second


def run(events, *, streams=2, queue_size=10, **kw):
    """Feed (tick, stream) events; returns (emitted sets as tick tuples, synchroniser)."""
    sync = ApproximateTimeSynchronizer(streams, queue_size=queue_size, **kw)
    out = []
    for tick, stream in events:
        for items in sync.add(stream, int(tick * S), payload=(tick, stream)):
            out.append(tuple(item.stamp_ns / S for item in items))
    return out, sync


def test_exact_match():
    # A: a..b..c   B: A..B..C
    out, _ = run([(0, 0), (0, 1), (3, 0), (3, 1), (6, 0), (6, 1)])
    assert out == [(0, 0), (3, 3), (6, 6)]


def test_perfect_match_waits_for_proof():
    # A: a..b..c.   B: .A..B..C   -> (c, C) cannot be proven optimal yet
    out, sync = run([(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)])
    assert out == [(0, 1), (3, 4)]
    assert sync.counters.emitted == 2


def test_imperfect_match_drops_the_unmatched_message():
    # A: a.xb..c.   B: .A...B.C   -> x and b are skipped; (c, B) is the best set containing B
    out, sync = run([(0, 0), (1, 1), (2, 0), (3, 0), (5, 1), (6, 0), (7, 1)])
    assert out == [(0, 1), (6, 5)]
    assert sync.counters.discarded == [2, 0]


def test_acceleration():
    # A: a...........b....c.   B: .......A.......B..C
    out, _ = run([(0, 0), (7, 1), (12, 0), (15, 1), (17, 0), (18, 1)])
    assert out == [(12, 7), (17, 18)]


DROP_EVENTS = [(0, 0), (1, 1), (3, 1), (4, 0), (7, 1), (8, 0), (10, 0), (11, 1), (13, 0), (14, 1)]


def test_queue_size_one_drops_oldest_and_counts():
    out, sync = run(DROP_EVENTS, queue_size=1)
    assert out == [(4, 3), (10, 11)]
    assert sync.counters.overflow_dropped == [1, 1]


def test_queue_size_two_is_enough():
    out, sync = run(DROP_EVENTS, queue_size=2)
    assert out == [(0, 1), (4, 3), (8, 7), (10, 11)]
    assert sync.counters.overflow_dropped == [0, 0]


def test_long_queue_overflow_on_the_fast_stream():
    events = [(t, 0) for t in range(9)] + [(3, 1), (9, 0), (10, 0), (11, 0), (12, 0), (10, 1), (13, 0)]
    out, sync = run(events, queue_size=5)
    assert out == [(10, 10)]
    assert sync.counters.overflow_dropped[0] == 8
    assert sync.queued(0) + sync.queued(1) <= 10


def test_double_publish_from_one_message():
    out, _ = run([(0, 0), (1, 1), (3, 1), (3, 0)])
    assert out == [(0, 1), (3, 3)]


def test_four_streams():
    events = [(0, 0), (1, 1), (2, 2), (3, 3), (5, 0), (5, 3), (6, 1), (6, 2), (8, 0), (9, 1), (10, 2), (11, 3),
              (10, 0), (13, 0), (14, 1)]
    # The stream-0 message at 10 arrives after one at 8 (in order for its stream), and the set with it
    # beats the one with 8.
    out, _ = run(events, streams=4)
    assert out == [(0, 1, 2, 3), (5, 6, 6, 5), (10, 9, 10, 11)]


def test_early_publish_with_four_streams():
    out, _ = run([(0, 0), (1, 1), (2, 2), (3, 3), (7, 0)], streams=4)
    assert out == [(0, 1, 2, 3)]


@pytest.mark.parametrize("bound, expected", [(1.5, [(0, 1), (3, 4)]), (2.0, [(0, 1), (3, 4), (6, 7)])])
def test_rate_bound_proves_sets_earlier(bound, expected):
    events = [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)]
    out, _ = run(events, inter_message_lower_bounds_ns=[int(bound * S), 0])
    assert out == expected


def test_max_interval_rejects_wide_sets():
    # A: a...................b.c   B: .....B..............C   (ticks of 1 s; C at 20.5)
    events = [(0, 0), (5, 1), (20, 0), (20.5, 1), (21, 0)]
    out_free, _ = run(events)
    assert out_free[0] == (0, 5)  # no slop: a 5 s spread is the best set containing B
    out, sync = run(events, max_interval_ns=S)
    assert out == [(20, 20.5)]  # (a, B) and (B, b) are wider than 1 s: both dropped
    assert sync.counters.discarded == [1, 1]


def test_thermal_30hz_rgb_20hz_with_jitter_pairs_within_slop():
    rng = np.random.default_rng(3)
    thermal = np.arange(0, 3, 1 / 30)
    rgb = np.arange(0.013, 3, 1 / 20) + rng.uniform(-0.004, 0.004, size=len(np.arange(0.013, 3, 1 / 20)))
    events = sorted([(t, 0) for t in thermal] + [(t, 1) for t in rgb])
    slop = 0.02
    out, sync = run(events, max_interval_ns=int(slop * S))
    assert len(out) >= len(rgb) - 3  # nearly every RGB frame finds a thermal partner
    spreads = [abs(a - b) for a, b in out]
    assert max(spreads) <= slop + 1e-9
    # Each message is used at most once and sets come out in time order.
    assert len({a for a, _ in out}) == len(out) and len({b for _, b in out}) == len(out)
    assert [a for a, _ in out] == sorted(a for a, _ in out)
    # Every set is the nearest thermal frame to its RGB frame (optimality on this regular input).
    for a, b in out:
        assert abs(a - b) <= min(abs(thermal - b)) + 1e-9


def test_callback_and_payloads():
    got = []
    sync = ApproximateTimeSynchronizer(2, callback=got.append)
    sync.add(0, 0, "t0")
    sync.add(1, 0, "r0")
    assert got == [(Stamped(0, "t0"), Stamped(0, "r0"))]


def test_backward_jump_resets_and_out_of_order_is_ignored():
    sync = ApproximateTimeSynchronizer(2)
    sync.add(0, 100 * S)
    sync.add(0, 100 * S - 1000)  # slightly older: ignored
    assert sync.counters.out_of_order == [1, 0]
    sync.add(0, 10 * S)  # 90 s back: a bag loop
    assert sync.counters.resets == 1
    assert sync.queued(0) == 1  # only the new message
    assert [tuple(i.stamp_ns for i in s) for s in sync.add(1, 10 * S)] == [(10 * S, 10 * S)]


def test_explicit_reset_forgets_queues():
    sync = ApproximateTimeSynchronizer(2)
    sync.add(0, 1 * S)
    sync.reset()
    assert sync.queued(0) == 0 and sync.counters.discarded[0] == 1
    assert sync.add(1, 1 * S) == []


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(1)
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(2, queue_size=0)
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(2, max_interval_ns=-1)
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(2).add(2, 0)


def test_nearest_within():
    stamps = [0, 10, 20, 30]
    assert nearest_within(stamps, 14, 5) == 1
    assert nearest_within(stamps, 16, 5) == 2
    assert nearest_within(stamps, 15, 5) == 1  # tie -> earlier
    assert nearest_within(stamps, 36, 5) is None
    assert nearest_within(stamps, 35, 5) == 3
    assert nearest_within(stamps, -3, 5) == 0
    assert nearest_within([], 1, 5) is None
    with pytest.raises(ValueError):
        nearest_within(stamps, 1, -1)


@pytest.mark.ros
def test_synchronized_subscriptions_over_dds():
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    from monother_ros.ros import qos
    from monother_ros.ros.convert import make_header
    from monother_ros.ros.pairing import SynchronizedSubscriptions
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers

    ms = 1_000_000
    with ros_context() as context:
        talker, listener = Node("sync_talker", context=context), Node("sync_listener", context=context)
        # Reliable here so that the pairs are deterministic; the policy itself is QoS-agnostic.
        pub_a = talker.create_publisher(Image, "a", qos.RELIABLE_OUTPUT)
        pub_b = talker.create_publisher(CameraInfo, "b", qos.RELIABLE_OUTPUT)
        got = []
        sync = ApproximateTimeSynchronizer(2, queue_size=5, max_interval_ns=10 * ms, callback=got.append)
        subs = SynchronizedSubscriptions(listener, [(Image, "a", qos.RELIABLE_OUTPUT), (CameraInfo, "b", qos.RELIABLE_OUTPUT)], sync)
        with Spinner(context, talker, listener):
            assert wait_for_subscribers(talker, "a") and wait_for_subscribers(talker, "b")
            for k in range(6):  # a at 30 Hz-ish, b offset by 4 ms
                pub_a.publish(Image(header=make_header(1000 * ms + k * 33 * ms, "a")))
                pub_b.publish(CameraInfo(header=make_header(1004 * ms + k * 33 * ms, "b")))
            assert wait_for(lambda: len(got) >= 5)
        subs.destroy()
    pairs = [(a.stamp_ns, b.stamp_ns) for a, b in got]
    assert pairs[:5] == [(1000 * ms + k * 33 * ms, 1004 * ms + k * 33 * ms) for k in range(5)]
    assert got[0][0].payload.header.frame_id == "a" and got[0][1].payload.header.frame_id == "b"

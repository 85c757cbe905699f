"""Frames lost in transport (a camera driver without the shipped Fast DDS profile) show in thermal_depth's
/diagnostics: the arrival rate against the rate the stamps step at. Pure ArrivalMonitor cases, then over
DDS with a publisher that keeps one frame in eight of a 30 Hz stream."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from monother_ros.ros.arrival import ArrivalMonitor

S = 1_000_000_000
PERIOD_NS = 33_333_333  # a 30 Hz camera


def _feed(monitor, kept_indices, *, stamp_period_ns=PERIOD_NS, wall_period_s=1 / 30):
    for k in kept_indices:
        monitor.add(k * stamp_period_ns, k * wall_period_s)


def test_random_transport_losses_are_reported_with_both_rates():
    rng = np.random.default_rng(0)
    monitor = ArrivalMonitor(window_s=5.0)
    _feed(monitor, [k for k in range(150) if rng.random() < 1 / 8])
    arrival_hz, stamp_hz = monitor.rates()
    assert 2.0 < arrival_hz < 6.0 and stamp_hz == pytest.approx(30.0, rel=0.01)
    text = monitor.problem()
    assert text.startswith(f"frames arrive at {arrival_hz:.1f} Hz while their stamps advance at 30.0 Hz")
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in text


def test_stamps_that_step_faster_than_frames_arrive_are_reported():
    # Consecutive frames 33 ms apart by their stamps, arriving one every 8/30 s (a clogged transport).
    monitor = ArrivalMonitor(window_s=5.0)
    _feed(monitor, range(20), wall_period_s=8 / 30)
    assert monitor.rates() == pytest.approx((30 / 8, 30.0), rel=1e-6)
    assert monitor.problem() is not None


@pytest.mark.parametrize("rate_hz", [4.0, 30.0])
def test_a_camera_that_is_slow_or_fine_is_not_reported(rate_hz):
    monitor = ArrivalMonitor(window_s=5.0)
    period_ns = int(S / rate_hz)
    rng = np.random.default_rng(1)
    for k in range(int(rate_hz * 6)):  # 20 % stamp jitter, as a cheap camera's
        monitor.add(k * period_ns + int(rng.uniform(-0.1, 0.1) * period_ns), k / rate_hz)
    arrival_hz, stamp_hz = monitor.rates()
    assert arrival_hz == pytest.approx(rate_hz, rel=0.05)
    assert monitor.problem() is None


def test_exactly_every_kth_frame_looks_like_a_slower_camera_and_is_not_reported():
    # The documented limit: stamps stepping 8 periods every time are a 3.75 Hz camera's.
    monitor = ArrivalMonitor(window_s=5.0)
    _feed(monitor, range(0, 150, 8))
    assert monitor.rates() == pytest.approx((30 / 8, 30 / 8), rel=1e-6)
    assert monitor.problem() is None


def test_few_frames_or_stamps_going_back_give_no_verdict():
    monitor = ArrivalMonitor(window_s=5.0, min_frames=8)
    _feed(monitor, range(5), wall_period_s=8 / 30)  # 5 frames only
    assert monitor.rates() is None and monitor.problem() is None
    _feed(monitor, range(5, 12), wall_period_s=8 / 30)
    assert monitor.problem() is not None
    monitor.add(0, 100.0)  # a bag loop: start over
    assert monitor.rates() is None and monitor.problem() is None


@pytest.mark.ros
def test_depth_node_diagnostics_warn_about_transport_losses_over_dds():
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image
    from ros_harness import Collector, Spinner, ros_context, wait_for_subscribers
    from test_ros_depth_node import make_node, thermal_frame

    def statuses(collector):
        return [s for m in collector.messages for s in m.status if s.name.startswith("thermal_depth")]

    image = thermal_frame(2, hw=(24, 32))
    rng = np.random.default_rng(3)
    with ros_context() as context:
        node = make_node(context, diagnostics_period_s=0.5)
        client = Node("camera_driver", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        with Spinner(context, node, client):
            Collector(client, Image, "depth/image", qos.SENSOR)  # a subscriber: the node is not lazy then
            diagnostics = Collector(client, DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
            assert wait_for_subscribers(client, "thermal/image_raw")

            def stream(seconds, keep, stamp_period_ns=PERIOD_NS, tick_s=1 / 30):
                """Tick at the camera rate; each tick stamps a frame and publishes it when keep(k)."""
                start_ns, start = 1_700_000_000 * S, time.monotonic()
                sent = 0
                for k in range(int(seconds / tick_s)):
                    if keep(k):
                        pub.publish(array_to_image(image, encoding="mono16", stamp_ns=start_ns + k * stamp_period_ns,
                                                   frame_id="thermal"))
                        sent += 1
                    time.sleep(max(0.0, start + (k + 1) * tick_s - time.monotonic()))
                return sent

            # A healthy 30 Hz camera: no warning.
            stream(3.0, lambda k: True)
            diagnostics.clear()
            time.sleep(1.2)
            healthy = statuses(diagnostics)
            assert healthy and all("frames arrive at" not in s.message for s in healthy), \
                [s.message for s in healthy]
            node.reset("test: a new stream")

            # The same camera, with about one frame in eight getting through (random, as DDS loses them).
            sent = stream(6.0, lambda k: rng.random() < 1 / 8)
            assert 10 < sent < 45
            time.sleep(1.2)
            lossy = statuses(diagnostics)[-1]
            assert lossy.level == b"\x01", (lossy.level, lossy.message)
            found = re.search(r"frames arrive at ([0-9.]+) Hz while their stamps advance at ([0-9.]+) Hz", lossy.message)
            assert found, lossy.message
            arrival_hz, stamp_hz = float(found.group(1)), float(found.group(2))
            # ~3.75 Hz arrive; the stamps step at 30 Hz (15 Hz if no two consecutive frames got through).
            assert 1.5 < arrival_hz < 7.0 and 14.0 < stamp_hz < 31.0, lossy.message
            assert "FASTDDS_DEFAULT_PROFILES_FILE" in lossy.message
            values = {kv.key: kv.value for kv in lossy.values}
            assert "frames arrive at" in values["problem: input_transport_losses"]
        node.destroy_node()

"""Diagnostics logic with an injected clock (rates, latencies, problems, levels), the message
conversion, and the declarative parameter table (pure validation and declaration on a real node)."""
from __future__ import annotations

import logging
import math

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from monother_ros.errors import ConfigError
from monother_ros.ros.diagnostics import HealthReport, LatencyStats, Level, ProblemTracker, RateMeter, make_array, to_status
from monother_ros.ros.params import ParamSpec, ParamTable, in_range, one_of, positive


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, m: str) -> None:
        self.lines.append(("warning", m))

    def error(self, m: str) -> None:
        self.lines.append(("error", m))

    def info(self, m: str) -> None:
        self.lines.append(("info", m))


def test_rate_meter_windowed_and_decays_when_stopped():
    clock = FakeClock()
    meter = RateMeter(window_s=2.0, clock=clock)
    assert meter.rate_hz() == 0.0
    for _ in range(31):  # 30 Hz for 1 s
        meter.tick()
        clock.t += 1 / 30
    clock.t -= 1 / 30
    assert meter.rate_hz() == pytest.approx(30.0)
    clock.t += 1.0  # silence for 1 s: 30 events over 2 s
    assert meter.rate_hz() == pytest.approx(15.0)
    clock.t += 5.0  # all events out of the window
    assert meter.rate_hz() == 0.0
    assert meter.total == 31


def test_latency_stats_percentiles():
    stats = LatencyStats(window=100)
    assert math.isnan(stats.summary()["p50"])
    for ms in range(1, 201):  # only the last 100 (101..200 ms) stay
        stats.add(ms / 1000)
    stats.add(float("nan"))  # ignored
    summary = stats.summary()
    assert summary["p50"] == pytest.approx(0.150)
    assert summary["p99"] == pytest.approx(0.199)
    assert summary["max"] == pytest.approx(0.200)
    assert summary["mean"] == pytest.approx(0.1505)
    assert stats.count == 200


def test_problem_tracker_throttles_per_name_and_clears():
    clock, log = FakeClock(), ListLogger()
    tracker = ProblemTracker(log, throttle_s=5.0, clock=clock)
    for _ in range(10):
        tracker.report("bad_encoding", "unknown image encoding 'yuv422'")
        tracker.report("camera_info_missing", "no camera_info for 3 s", Level.ERROR)
        clock.t += 1.0
    # First occurrence of each logged, then once more each after 5 s.
    assert [kind for kind, _ in log.lines].count("warning") == 2
    assert [kind for kind, _ in log.lines].count("error") == 2
    assert "yuv422" in log.lines[0][1]
    assert tracker.level() == Level.ERROR
    assert tracker.active()["bad_encoding"].count == 10
    assert tracker.clear("camera_info_missing") is True
    assert tracker.clear("camera_info_missing") is False
    assert log.lines[-1] == ("info", "camera_info_missing: resolved after 10 occurrence(s)")
    assert tracker.level() == Level.WARN
    assert tracker.occurrences == {"bad_encoding": 10, "camera_info_missing": 10}


def test_problem_tracker_works_with_python_logging(caplog):
    tracker = ProblemTracker(logging.getLogger("probe"))
    with caplog.at_level(logging.WARNING):
        tracker.report("tf_missing", "no transform thermal -> rgb")
    assert "tf_missing: no transform thermal -> rgb" in caplog.text


def test_health_report_levels_and_message():
    clock = FakeClock()
    report = HealthReport("thermal_depth: pipeline", hardware_id="cpu")
    assert report.summarise() == (Level.OK, "OK")
    fast, dead = RateMeter(clock=clock), RateMeter(clock=clock)
    for _ in range(11):
        fast.tick()
        clock.t += 0.1
    clock.t -= 0.1
    report.add_rate("input rate (Hz)", fast, expected_min_hz=5.0)
    assert report.summarise()[0] == Level.OK
    report.add_rate("rgb rate (Hz)", dead, expected_min_hz=5.0)
    tracker = ProblemTracker(ListLogger(), clock=clock)
    tracker.report("camera_info_missing", "no camera_info yet")
    report.add_problems(tracker)
    level, message = report.summarise()
    assert level == Level.ERROR and message == "rgb rate (Hz) 0.0 Hz < 5 Hz"
    assert report.values["input rate (Hz)"] == "10"
    assert report.values["problem: camera_info_missing"] == "no camera_info yet"

    stats = LatencyStats()
    stats.add(0.012)
    report.add_latency("latency", stats)
    assert report.values["latency p50 (ms)"] == "12"

    status = to_status(report)
    assert isinstance(status, DiagnosticStatus)
    assert status.level == DiagnosticStatus.ERROR and status.name == "thermal_depth: pipeline"
    assert {kv.key: kv.value for kv in status.values}["problem: camera_info_missing"] == "no camera_info yet"
    array = make_array([status], 5_000_000_001)
    assert array.header.stamp.sec == 5 and array.status[0] is status


def test_warn_only_report():
    report = HealthReport("x")
    report.add_check(Level.WARN, "slow")
    report.add_check(Level.WARN, "late")
    assert report.summarise() == (Level.WARN, "slow; late")
    assert to_status(report).level == DiagnosticStatus.WARN


# ------------------------------------------------------------------------------------------ parameters

TABLE = ParamTable(
    [
        ParamSpec("seed", int, 0, "random seed"),
        ParamSpec("rate_scale", float, 1.0, "playback speed, 1 = real time", positive),
        ParamSpec("scenario", str, "day", "lighting", one_of("day", "night", "fog")),
        ParamSpec("teacher.enabled", bool, False, "run the RGB teacher"),
        ParamSpec("sync.slop_s", float, 0.02, "pairing tolerance (s)", in_range(0.0, 1.0)),
        ParamSpec("depth_range_m", "list[float]", [0.5, 80.0], "valid depth range (m)"),
    ]
)


def test_param_table_validate_converts_and_lists_every_error():
    values = TABLE.validate({"rate_scale": 2, "teacher.enabled": True})
    assert values["rate_scale"] == 2.0 and isinstance(values["rate_scale"], float)
    assert values["scenario"] == "day" and values["depth_range_m"] == [0.5, 80.0]
    with pytest.raises(ConfigError) as info:
        TABLE.validate({"rate_scale": -1.0, "scenario": "rain", "teacher.enabled": "yes", "bogus": 1, "seed": 1.5},
                       node_name="sim_rig")
    text = str(info.value)
    assert text.startswith("invalid parameters for sim_rig:")
    for piece in ("rate_scale = -1.0: must be > 0", "scenario = 'rain': must be one of day, night, fog",
                  "teacher.enabled = 'yes': must be a bool", "bogus: unknown parameter", "seed = 1.5: must be an integer"):
        assert piece in text


def test_param_table_rows_for_readme():
    rows = TABLE.rows()
    assert rows[0] == ("seed", "int", "0", "random seed")
    assert rows[3] == ("teacher.enabled", "bool", "false", "run the RGB teacher")
    assert rows[5] == ("depth_range_m", "double[]", "[0.5, 80.0]", "valid depth range (m)")
    assert len(TABLE) == 6


def test_param_spec_refuses_bad_definitions():
    with pytest.raises(ValueError, match="description"):
        ParamSpec("x", int, 0, "")
    with pytest.raises(ValueError, match="default"):
        ParamSpec("x", float, -1.0, "bad default", positive)
    with pytest.raises(ValueError, match="twice"):
        ParamTable([ParamSpec("x", int, 0, "a"), ParamSpec("x", int, 0, "b")])


@pytest.mark.ros
def test_param_table_declares_on_a_node_and_refuses_invalid_overrides():
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from ros_harness import ros_context

    with ros_context() as context:
        node = Node("p_ok", context=context, parameter_overrides=[Parameter("rate_scale", value=3)])
        values = TABLE.declare(node)
        assert values["rate_scale"] == 3.0 and values["teacher.enabled"] is False
        descriptor = node.describe_parameter("sync.slop_s")
        assert descriptor.description == "pairing tolerance (s)" and descriptor.read_only
        node.destroy_node()

        bad = Node("p_bad", context=context, parameter_overrides=[Parameter("scenario", value="rain"),
                                                                   Parameter("sync.slop_s", value=5.0)])
        with pytest.raises(ConfigError, match="scenario = 'rain'.*\n.*sync.slop_s = 5.0: must be <= 1.0"):
            TABLE.declare(bad)
        bad.destroy_node()


@pytest.mark.ros
def test_unknown_overrides_are_named_with_a_suggestion():
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from ros_harness import ros_context

    with ros_context() as context:
        node = Node("p_typo", context=context, parameter_overrides=[Parameter("rate_scal", value=2.0)])
        values = TABLE.declare(node)  # a warning, not an error (overrides may target other nodes)
        assert values["rate_scale"] == 1.0
        assert TABLE._unknown_overrides(node) == ["rate_scal: unknown parameter (did you mean 'rate_scale'?)"]
        node.destroy_node()


def test_qos_profiles_match_ros_conventions():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data

    from monother_ros.ros import qos

    for attr in ("history", "depth", "reliability", "durability"):
        assert getattr(qos.SENSOR, attr) == getattr(qos_profile_sensor_data, attr)
    assert qos.describe(qos.SENSOR) == "best effort, keep last 5, volatile"
    assert qos.describe(qos.TF) == "reliable, keep last 100, volatile"
    assert qos.describe(qos.TF_STATIC) == "reliable, keep last 100, transient local"
    assert qos.TF_STATIC_PUBLISHER.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.TF_STATIC_PUBLISHER.depth == 1
    assert qos.DIAGNOSTICS.reliability == ReliabilityPolicy.RELIABLE


@pytest.mark.ros
def test_diagnostics_publisher_over_dds():
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node

    from monother_ros.ros import qos
    from monother_ros.ros.diagnostics import DiagnosticsPublisher
    from ros_harness import Collector, Spinner, ros_context, wait_for_subscribers

    def report() -> HealthReport:
        r = HealthReport("probe: pipeline", hardware_id="cpu")
        r.add_value("frames", 3)
        r.add_check(Level.WARN, "camera_info_missing: none yet")
        return r

    with ros_context() as context:
        node, listener = Node("diag_node", context=context), Node("diag_listener", context=context)
        publisher = DiagnosticsPublisher(node, [report], period_s=60.0)  # published by hand below
        collected = Collector(listener, DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        with Spinner(context, node, listener):
            assert wait_for_subscribers(node, "/diagnostics")
            publisher.publish()
            arrays = collected.wait_for_count(1)
        publisher.destroy()
    status = arrays[0].status[0]
    assert status.name == "probe: pipeline" and status.level == DiagnosticStatus.WARN
    assert status.message == "camera_info_missing: none yet"
    assert [(kv.key, kv.value) for kv in status.values] == [("frames", "3")]

"""Hostile input to thermal_depth over real DDS: each case must give a clear throttled log line, its reason in
/diagnostics, no crash, and normal output again once good input returns.

Cases run in a few node sessions (bad input, then good input) to keep the file fast; the start-up
failures run the node in a separate process (exit code and the one error line).
Thermal session: unknown / wrong encoding, data shorter than height*step, zero width, 1-pixel image, huge
dimensions, step < width*bpp, misaligned step, big-endian mono16 (valid: same depth), NaN intrinsics,
zero intrinsics, camera_info size not matching the image, camera_info never arriving, stamps going
backwards. Teacher session: RGB never arriving, RGB wrong encoding, non-unit quaternion and NaN in TF,
TF arriving 5 s late, RGB stream stopping. Processes: corrupt engine file, invalid parameter values.
"""
from __future__ import annotations

import array
import math
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

S = 1_000_000_000
H, W = 48, 64


class RecordingLogger:
    """Wraps the node logger: every line the ProblemTracker logs is kept (and still logged)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def _keep(self, message: str) -> None:
        with self._lock:
            self.lines.append(message)

    # One rclpy call per line: rclpy's logger refuses two severities from the same calling line.
    def warning(self, message: str) -> None:
        self._keep(message)
        self.inner.warning(message)

    def error(self, message: str) -> None:
        self._keep(message)
        self.inner.error(message)

    def info(self, message: str) -> None:
        self._keep(message)
        self.inner.info(message)

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for line in self.lines if line.startswith(prefix + ":") and "resolved" not in line)


def raw_image(*, height=H, width=W, encoding="mono16", step=None, data=None, stamp_ns=0, frame_id="thermal",
              is_bigendian=0):
    from sensor_msgs.msg import Image

    from monother_ros.ros.convert import make_header

    msg = Image()
    msg.header = make_header(stamp_ns, frame_id)
    msg.height, msg.width, msg.encoding, msg.is_bigendian = height, width, encoding, is_bigendian
    msg.step = width * 2 if step is None else step
    buffer = array.array("B")
    buffer.frombytes(bytes(msg.step * height) if data is None else data)
    msg.data = buffer
    return msg


class Session:
    """A node under test, a client publishing to it and collecting its outputs and /diagnostics."""

    def __init__(self, context, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from monother_ros.ros import qos
        from ros_harness import Collector

        self.node = node
        self.log = RecordingLogger(node.problems._log)
        node.problems._log = self.log
        self.client = Node("hostile_client", context=context)
        self.pub = self.client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        self.pub_info = self.client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        self.depth = Collector(self.client, Image, "depth/image", qos.SENSOR)
        self.points = Collector(self.client, PointCloud2, "depth/points", qos.SENSOR)
        self.diagnostics = Collector(self.client, DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self.stamp = 1000 * S

    def next_stamp(self) -> int:
        self.stamp += 50_000_000
        return self.stamp

    def send_info(self, info) -> None:
        from ros_harness import wait_for

        for _ in range(3):
            self.pub_info.publish(info)
            time.sleep(0.01)
        def cached():
            have = self.node._thermal_info
            return (have is not None and have.width == info.width
                    and np.array_equal(np.asarray(have.k), np.asarray(info.k), equal_nan=True))

        assert wait_for(cached)

    def diagnosed(self, problem: str, since: int = 0, timeout: float = 5.0) -> str:
        """Wait for a /diagnostics message (the ``since``-th received or later) carrying ``problem``;
        returns its reason."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for array_msg in reversed(self.diagnostics.messages[since:]):
                for status in array_msg.status:
                    for kv in status.values:
                        if kv.key == f"problem: {problem}":
                            assert status.level[0] >= 1 and problem in status.message  # WARN or ERROR, named
                            return kv.value
            time.sleep(0.02)
        raise AssertionError(f"{problem} never reached /diagnostics; active: {list(self.node.problems.active())}")

    def bad(self, problem: str, make_msg, *, repeat: int = 3, expect_output: bool = False) -> str:
        """Send bad frames; the problem must be active, logged once (throttled) and in /diagnostics."""
        from ros_harness import wait_for

        published_before = self.node.counters["published"]
        for _ in range(repeat):
            self.pub.publish(make_msg(self.next_stamp()))
            time.sleep(0.03)
        assert wait_for(lambda: self.node.problems.is_active(problem)), (problem, self.node.problems.active())
        since = len(self.diagnostics)  # older diagnostics may still carry an earlier reason
        # Throttled: one log line however often it happens (per problem name).
        assert wait_for(lambda: self.node.problems.occurrences.get(problem, 0) >= min(repeat, 2))
        assert self.log.count(problem) == 1, (problem, self.log.lines)
        reason = self.diagnosed(problem, since)
        assert reason
        if not expect_output:
            assert self.node.counters["published"] == published_before, problem
        assert self.node.worker.alive and self.node.context.ok()
        return reason

    def good(self, image: np.ndarray, *, points: bool = True) -> None:
        """Good frames again: output with the new stamp (and the cloud when camera_info is fine)."""
        from monother_ros.ros.convert import array_to_image
        from ros_harness import wait_for

        stamp = self.next_stamp()
        target = self.points if points else self.depth

        def arrived():
            return any(m.header.stamp.sec * S + m.header.stamp.nanosec == stamp for m in target.messages)

        for _ in range(20):
            self.pub.publish(array_to_image(image, encoding="mono16", stamp_ns=stamp, frame_id="thermal"))
            if wait_for(arrived, 0.5):
                return
        raise AssertionError(f"no output after good input; problems {list(self.node.problems.active())}")


def _thermal(seed=0):
    from test_ros_depth_node import thermal_frame

    return thermal_frame(seed)


def test_hostile_thermal_and_camera_info_inputs():
    from monother_ros.ros.convert import array_to_image, camera_to_info, image_to_array
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import camera, make_node

    image = _thermal(1)
    good_info = camera_to_info(camera(), frame_id="thermal")
    with ros_context() as context:
        node = make_node(context, lazy=False, diagnostics_period_s=0.1, camera_info_timeout_s=0.3)
        s = Session(context, node)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "thermal/image_raw")
            assert wait_for_subscribers(s.client, "/diagnostics")
            # camera_info never arriving: depth is still published, the cloud is not, and it is reported.
            reason = s.bad("camera_info_missing", lambda t: array_to_image(image, encoding="mono16", stamp_ns=t,
                                                                           frame_id="thermal"),
                           repeat=25, expect_output=True)
            assert "no thermal camera_info" in reason and len(s.depth) > 0 and len(s.points) == 0
            s.send_info(good_info)
            s.good(image)
            assert not node.problems.is_active("camera_info_missing")

            cases = [
                ("thermal_unknown_encoding", lambda t: raw_image(encoding="mono12x", stamp_ns=t)),
                ("thermal_bad_encoding", lambda t: raw_image(encoding="bgra8", step=W * 4, stamp_ns=t)),
                ("thermal_data_too_short", lambda t: raw_image(data=bytes(100), stamp_ns=t)),
                ("thermal_zero_size", lambda t: raw_image(width=0, step=0, data=b"", stamp_ns=t)),
                ("thermal_too_small", lambda t: raw_image(width=1, height=1, step=2, stamp_ns=t)),
                ("thermal_too_large", lambda t: raw_image(width=100_000, height=100_000, step=200_000,
                                                          data=bytes(64), stamp_ns=t)),
                ("thermal_step_too_small", lambda t: raw_image(step=W, stamp_ns=t)),
                ("thermal_step_misaligned", lambda t: raw_image(step=W * 2 + 1, data=bytes((W * 2 + 1) * H),
                                                               stamp_ns=t)),
            ]
            for problem, make in cases:
                s.bad(problem, make)
                s.good(image)
                assert not node.problems.is_active(problem), problem

            # Big-endian mono16 is valid: decoded (byte-swapped) to the same depth as native data.
            swapped = raw_image(data=image.astype(">u2").tobytes(), is_bigendian=1, stamp_ns=s.next_stamp())
            s.pub.publish(swapped)
            stamp = swapped.header.stamp
            assert wait_for(lambda: any(m.header.stamp == stamp for m in s.depth.messages), 5.0)
            got = image_to_array(next(m for m in s.depth.messages if m.header.stamp == stamp))
            np.testing.assert_allclose(got, node.engine.infer(image).depth, rtol=1e-6)

            # Bad camera_info: depth keeps coming, no cloud / camera_info, reason in diagnostics.
            nan_info = camera_to_info(camera(), frame_id="thermal")
            nan_info.k = [math.nan] + list(nan_info.k[1:])
            zero_info = camera_to_info(camera(), frame_id="thermal")
            zero_info.k = [0.0] * 9
            small_info = camera_to_info(camera((24, 32)), frame_id="thermal")
            for info, words in ((nan_info, "non-finite"), (zero_info, "all zero"), (small_info, "32x24")):
                s.send_info(info)
                reason = s.bad("camera_info_invalid", lambda t: array_to_image(image, encoding="mono16", stamp_ns=t,
                                                                               frame_id="thermal"),
                               expect_output=True)
                assert words in reason, reason
                s.send_info(good_info)
                s.good(image)
                assert not node.problems.is_active("camera_info_invalid")
                s.log.lines.clear()

            # Stamps going backwards: reported, frame still processed; forward stamps clear it.
            s.stamp -= 2 * S
            reason = s.bad("thermal_stamp_backwards", lambda t: array_to_image(image, encoding="mono16",
                                                                               stamp_ns=t - S, frame_id="thermal"),
                           repeat=1, expect_output=True)
            assert "went back" in reason and node.counters["resets"] >= 1
            s.good(image)
            assert not node.problems.is_active("thermal_stamp_backwards")
            assert node.worker.alive and node.slot.offered >= 40
        node.destroy_node()


@pytest.mark.slow
def test_hostile_rgb_and_tf_inputs_with_the_teacher():
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from monother_ros.core.camera import PinholeCamera
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info
    from monother_ros.ros.tf import transform_to_msg
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import camera, make_node
    from tiny_models import tiny_dual_dir

    image = _thermal(2)
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3)).astype(np.uint8)
    rgb_cam = PinholeCamera(40, 30, 30.0, 30.0, 19.5, 14.5)
    T = np.eye(4)
    T[0, 3] = -0.05
    with ros_context() as context:
        node = make_node(context, model=str(tiny_dual_dir()), backend="torch", lazy=False, diagnostics_period_s=0.1,
                         **{"teacher.enabled": True, "teacher.slop_s": 0.02, "teacher.tf_timeout_s": 0.02})
        s = Session(context, node)
        pub_rgb = s.client.create_publisher(Image, "rgb/image_raw", qos.SENSOR)
        pub_rgb_info = s.client.create_publisher(CameraInfo, "rgb/camera_info", qos.SENSOR)
        pub_tf = s.client.create_publisher(TFMessage, "/tf", qos.TF)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "rgb/image_raw") and wait_for_subscribers(s.client, "/tf")
            s.send_info(camera_to_info(camera(), frame_id="thermal"))
            for _ in range(3):
                pub_rgb_info.publish(camera_to_info(rgb_cam, frame_id="rgb"))
                time.sleep(0.01)
            assert wait_for(lambda: node._rgb_info is not None)

            def thermal_msg(t):
                return array_to_image(image, encoding="mono16", stamp_ns=t, frame_id="thermal")

            # No RGB at all: the student runs at once, the missing RGB is reported.
            s.bad("rgb_missing", thermal_msg, expect_output=True)

            def tf_at(stamp_ns, *, q=None, t=None):
                msg = transform_to_msg("rgb", "thermal", stamp_ns, T)
                if q is not None:
                    r = msg.transform.rotation
                    r.x, r.y, r.z, r.w = q
                if t is not None:
                    msg.transform.translation.x = t
                pub_tf.publish(TFMessage(transforms=[msg]))

            def paired(tf_kwargs=None, tf_offset_ns=0, rgb_encoding="rgb8"):
                def make(t):
                    pub_rgb.publish(array_to_image(rgb if rgb_encoding == "rgb8" else rgb[..., 0].astype(np.uint16),
                                                   encoding=rgb_encoding, stamp_ns=t - 5_000_000, frame_id="rgb"))
                    for dt in (-S // 10, S // 10):  # TF around the thermal stamp (dynamic, interpolated)
                        tf_at(t + dt + tf_offset_ns, **(tf_kwargs or {}))
                    time.sleep(0.03)
                    return thermal_msg(t)
                return make

            def teacher_resumes():
                runs = node.counters["teacher_runs"]
                for _ in range(30):
                    s.pub.publish(paired()(s.next_stamp()))
                    if wait_for(lambda: node.counters["teacher_runs"] > runs, 0.5):
                        return
                raise AssertionError(f"teacher never ran again: {node.health().values}")

            teacher_resumes()
            assert not node.problems.is_active("rgb_missing")
            cases = [
                ("rgb_bad_encoding", paired(rgb_encoding="mono16"), None),
                ("tf_unavailable", paired({"q": (0.0, 0.0, 0.0, 2.0)}), "non_unit_quaternion"),
                ("tf_unavailable", paired({"t": math.nan}), "nan"),
                ("tf_unavailable", paired(tf_offset_ns=-5 * S), None),  # TF 5 s late: extrapolation
            ]
            for problem, make, rejected in cases:
                node.tf_buffer.clear()
                before = dict(node.tf_buffer.rejected)
                reason = s.bad(problem, make, expect_output=True)
                if rejected is not None:
                    assert node.tf_buffer.rejected.get(rejected, 0) > before.get(rejected, 0), node.tf_buffer.rejected
                if problem == "tf_unavailable" and rejected is None:
                    assert "extrapolation" in reason, reason
                teacher_resumes()
                assert not node.problems.is_active(problem), problem
                s.log.lines.clear()

            # The RGB stream stops: thermal keeps flowing on the student, the stop is reported.
            s.stamp += 3 * S
            reason = s.bad("rgb_stopped", thermal_msg, expect_output=True)
            assert "stopped" in reason
            teacher_resumes()
            assert not node.problems.is_active("rgb_stopped")
        node.destroy_node()


@pytest.mark.slow
def test_corrupt_engine_file_and_bad_parameters_exit_with_one_clear_line(tmp_path):
    from ros_harness import NodeProcess
    from tiny_models import tiny_student_dir

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not an ONNX protobuf" * 10)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    src = tiny_student_dir()
    for name in ("config.json", "metadata.json", "model.safetensors"):
        data = (src / name).read_bytes()
        (truncated / name).write_bytes(data[: len(data) // 2] if name == "model.safetensors" else data)
    runs = [
        (["-p", f"model:={corrupt}", "-p", "backend:=onnxruntime"], "corrupt.onnx"),
        (["-p", f"model:={truncated}", "-p", "backend:=torch"], "model.safetensors"),
        (["-p", "min_confidence:=3.0", "-p", "teacher.slop_s:=-1.0"], "min_confidence = 3.0: must be <= 1.0"),
    ]
    procs = [NodeProcess("monother_ros.ros.depth_node", ["--ros-args", *args], log_dir=tmp_path) for args, _ in runs]
    for proc, (_, words) in zip(procs, runs):
        deadline = time.monotonic() + 60
        while proc.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        code = proc.stop()
        errors = [line for line in proc.output().splitlines() if line.startswith("thermal_depth: error:")]
        assert code == 2, proc.output()
        assert len(errors) == 1 and words in errors[0], proc.output()
        assert "Traceback" not in proc.output()

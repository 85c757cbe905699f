"""The thermal_depth node over real rclpy/DDS: outputs (values, headers, camera_info, cloud), laziness,
latest-only dropping without blocking the executor, the teacher path (pairing, TF, warped confidence,
fusion), clock jumps, parameters; plus the pure parts (LatestSlot). The pair engine and the fusion
math alone: test_runtime_pair_engine.py.

Models are tiny random ones built with the real code (``tiny_models.py``)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

S = 1_000_000_000
H, W = 48, 64


def thermal_frame(seed: int = 0, hw=(H, W)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (20000 + 60 * yy + 900 * np.sin(xx / 5.0) + rng.normal(0, 50, hw)).astype(np.uint16)


def camera(hw=(H, W)):
    from monother_ros.core.camera import PinholeCamera

    return PinholeCamera(hw[1], hw[0], 50.0, 52.0, hw[1] / 2 - 0.5, hw[0] / 2 + 0.5)


def make_node(context, **params):
    from rclpy.parameter import Parameter

    from monother_ros.ros.depth_node import ThermalDepthNode
    from tiny_models import tiny_student_dir

    params.setdefault("model", str(tiny_student_dir()))
    params.setdefault("backend", "onnxruntime")
    params.setdefault("num_threads", 1)
    # These tests resend one frame many times; the frozen-driver check has its own test (test_ros_camera_inputs).
    params.setdefault("frame_check.max_identical_frames", 0)
    return ThermalDepthNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


# ------------------------------------------------------------------------------------------ pure parts


def test_latest_slot_replaces_and_counts():
    from monother_ros.ros.worker import LatestSlot, Worker

    slot = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take(0) == 3 and slot.take(0.01) is None
    assert (slot.offered, slot.dropped, slot.taken) == (3, 2, 1)
    seen, gate = [], threading.Event()

    def handler(item):
        gate.wait(2.0)
        seen.append(item)
        if item == "boom":
            raise RuntimeError("bad frame")

    errors = []
    worker = Worker(slot, handler, on_error=errors.append).start()
    slot.put("a")
    assert _wait(lambda: worker.busy.is_set())
    slot.put("boom"), slot.put("c")  # "boom" replaced by "c" while "a" is processed
    gate.set()
    assert _wait(lambda: seen == ["a", "c"])
    slot.put("boom")
    assert _wait(lambda: len(errors) == 1 and worker.alive)
    assert worker.stop() and slot.dropped == 3


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return bool(pred())


# ------------------------------------------------------------------------------------------ parameters


def test_invalid_parameters_are_refused_at_start():
    from rclpy.parameter import Parameter

    from monother_ros.errors import ConfigError
    from monother_ros.ros.depth_node import ThermalDepthNode
    from ros_harness import ros_context

    with ros_context() as context:
        with pytest.raises(ConfigError, match=r"backend = 'cuda'[\s\S]*min_confidence = 2.0: must be <= 1.0"):
            ThermalDepthNode(context=context, parameter_overrides=[Parameter("backend", value="cuda"),
                                                                  Parameter("min_confidence", value=2.0)])
        with pytest.raises(ConfigError, match="does not exist"):
            ThermalDepthNode(context=context, parameter_overrides=[Parameter("model", value="/nonexistent/m")])


def test_rig_yaml_depth_section_matches_the_declared_parameters():
    import yaml

    from monother_ros.ros.depth_node import DEPTH_PARAMETERS
    from ros_harness import REPO_ROOT

    section = yaml.safe_load((REPO_ROOT / "config" / "rig.yaml").read_text())["/**/thermal_depth"]["ros__parameters"]

    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flatten(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    values = dict(flatten(section))
    assert set(values) == set(DEPTH_PARAMETERS.specs)
    assert DEPTH_PARAMETERS.validate(values) == DEPTH_PARAMETERS.defaults()


def test_model_without_teacher_is_refused_with_teacher_enabled():
    from monother_ros.errors import ConfigError
    from ros_harness import ros_context

    with ros_context() as context:
        with pytest.raises(ConfigError, match="needs a dual model .* without a teacher"):
            make_node(context, **{"teacher.enabled": True, "backend": "auto"})


# ------------------------------------------------------------------------------------------ over DDS


def test_outputs_values_headers_cloud_and_laziness():
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from monother_ros.core.cloud import depth_to_points
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info, image_to_array, point_cloud_to_array
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers

    cam = camera()
    with ros_context() as context:
        node = make_node(context)
        client = Node("client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_info = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        with Spinner(context, node, client):
            # Lazy: nobody listens, so the node subscribes to nothing and computes nothing.
            time.sleep(0.3)
            assert not node.subscribed and client.count_subscribers("thermal/image_raw") == 0
            depth = Collector(client, Image, "depth/image", qos.SENSOR)
            conf = Collector(client, Image, "depth/confidence", qos.SENSOR)
            info = Collector(client, CameraInfo, "depth/camera_info", qos.SENSOR)
            points = Collector(client, PointCloud2, "depth/points", qos.SENSOR)
            assert wait_for(lambda: node.subscribed, 10.0)
            assert wait_for_subscribers(client, "thermal/image_raw")
            assert wait_for_subscribers(client, "thermal/camera_info")
            image = thermal_frame(3)
            stamp = 1_700_000_000 * S + 123
            for _ in range(3):  # camera_info is best effort: send a few before the image
                pub_info.publish(camera_to_info(cam, stamp_ns=stamp, frame_id="thermal_optical_frame"))
                time.sleep(0.02)
            assert wait_for(lambda: node._thermal_info is not None)
            deadline = time.monotonic() + 10
            while len(points) == 0 and time.monotonic() < deadline:
                pub.publish(array_to_image(image, encoding="mono16", stamp_ns=stamp, frame_id="thermal_optical_frame"))
                time.sleep(0.1)
            assert points.wait_for_count(1) and depth.wait_for_count(1) and conf.wait_for_count(1)
            assert info.wait_for_count(1)
            d_msg, c_msg, i_msg, p_msg = depth.messages[-1], conf.messages[-1], info.messages[-1], points.messages[-1]
            for m in (d_msg, c_msg, i_msg, p_msg):
                assert m.header.frame_id == "thermal_optical_frame"
                assert m.header.stamp.sec * S + m.header.stamp.nanosec == stamp
            assert d_msg.encoding == "32FC1" and c_msg.encoding == "32FC1"
            expected = node.engine.infer(image)
            got = image_to_array(d_msg)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected.depth))
            np.testing.assert_allclose(got, expected.depth, rtol=1e-6)
            confidence = image_to_array(c_msg)
            np.testing.assert_allclose(confidence, expected.confidence, rtol=1e-6)
            assert float(confidence.min()) >= 0.0 and float(confidence.max()) <= 1.0
            np.testing.assert_allclose(np.asarray(i_msg.k).reshape(3, 3), cam.K)
            assert (i_msg.width, i_msg.height) == (W, H)
            cloud = point_cloud_to_array(p_msg)
            assert cloud.shape == (H, W, 4) and [f.name for f in p_msg.fields] == ["x", "y", "z", "intensity"]
            np.testing.assert_allclose(cloud[..., :3], depth_to_points(expected.depth, cam), rtol=1e-6, equal_nan=True)
            np.testing.assert_allclose(cloud[..., 3], expected.confidence, rtol=1e-6)
            assert not p_msg.is_dense

            # Every output gone -> the node unsubscribes again.
            for c in (depth, conf, info, points):
                client.destroy_subscription(c.subscription)
            assert wait_for(lambda: not node.subscribed, 10.0)
            assert wait_for(lambda: client.count_subscribers("thermal/image_raw") == 0, 10.0)
        node.destroy_node()


def test_latest_only_drops_frames_and_executor_stays_free():
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers

    with ros_context() as context:
        node = make_node(context, diagnostics_period_s=0.1)
        real_infer = node.engine.infer

        def slow_infer(image):  # the real engine plus 0.3 s, as a big model on a small CPU
            time.sleep(0.3)
            return real_infer(image)

        node.engine.infer = slow_infer
        timer_ticks = []
        node.create_timer(0.02, lambda: timer_ticks.append(time.monotonic()))
        client = Node("client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        depth = Collector(client, Image, "depth/image", qos.SENSOR)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "thermal/image_raw")
            image = thermal_frame(1)
            sent_at = time.monotonic()
            for i in range(20):  # 20 frames in ~0.4 s while each takes 0.3 s
                pub.publish(array_to_image(image, encoding="mono16", stamp_ns=S + i * 20_000_000, frame_id="t"))
                time.sleep(0.02)
            assert wait_for(lambda: node.slot.offered >= 15 and not node.worker.busy.is_set()
                            and node.slot.taken == node.counters["published"], 10.0)
            assert wait_for(lambda: len(depth) >= node.counters["published"], 5.0)
            published = node.counters["published"]
            assert node.slot.dropped >= 10 and published <= 5
            assert node.slot.dropped + node.slot.taken == node.slot.offered
            # The newest frame is always the one processed last.
            last = depth.messages[-1].header.stamp
            assert last.sec * S + last.nanosec == S + 19 * 20_000_000 or node.slot.offered < 20
            # The executor kept running its timer at ~50 Hz while the worker was busy.
            during = [t for t in timer_ticks if sent_at < t < sent_at + 1.0]
            assert len(during) >= 25
            report = node.health()
            assert report.values["frames dropped (worker busy)"] == str(node.slot.dropped)
        node.destroy_node()


def test_lazy_fallback_polls_subscription_counts_without_matched_events(monkeypatch):
    """Humble has no publisher matched events: the node then polls get_subscription_count()."""
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from monother_ros.ros import depth_node, qos
    from ros_harness import Spinner, ros_context, wait_for

    monkeypatch.setattr(depth_node, "_matched_events_supported", lambda: False)
    with ros_context() as context:
        node = make_node(context)
        assert node.health().values["laziness by"] == "subscription count poll"
        client = Node("client", context=context)
        with Spinner(context, node, client):
            assert not node.subscribed
            sub = client.create_subscription(Image, "depth/confidence", lambda m: None, qos.SENSOR)
            assert wait_for(lambda: node.subscribed, 10.0)
            client.destroy_subscription(sub)
            assert wait_for(lambda: not node.subscribed, 10.0)
        node.destroy_node()


def test_clock_jump_back_resets_with_sim_time():
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    from monother_ros.ros import qos
    from monother_ros.ros.convert import ns_to_stamp
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers

    with ros_context() as context:
        node = make_node(context, use_sim_time=True)
        client = Node("clock", context=context)
        pub = client.create_publisher(Clock, "/clock", qos.CLOCK)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "/clock")
            pub.publish(Clock(clock=ns_to_stamp(100 * S)))
            assert wait_for(lambda: node.get_clock().now().nanoseconds == 100 * S)
            node.rate_in.tick()
            node.rate_in.tick()
            pub.publish(Clock(clock=ns_to_stamp(10 * S)))  # a bag loop
            assert wait_for(lambda: node.counters["resets"] == 1)
            assert node.rate_in.rate_hz() == 0.0
            pub.publish(Clock(clock=ns_to_stamp(11 * S)))  # forward again: no reset
            assert wait_for(lambda: node.get_clock().now().nanoseconds == 11 * S)
            assert node.counters["resets"] == 1
        node.destroy_node()


@pytest.mark.slow
def test_teacher_path_pairs_rgb_warps_confidence_and_fuses():
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    from monother_ros.core.camera import PinholeCamera
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info, image_to_array
    from monother_ros.core.fusion import fuse
    from monother_ros.ros.tf import StaticTransformBroadcaster, transform_to_msg
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
    from tiny_models import tiny_dual_dir

    rgb_cam = PinholeCamera(80, 60, 60.0, 60.0, 39.5, 29.5)
    T_rgb_thermal = np.eye(4)
    T_rgb_thermal[0, 3] = -0.05
    with ros_context() as context:
        node = make_node(context, model=str(tiny_dual_dir()), backend="torch",
                         **{"teacher.enabled": True, "fusion.enabled": True, "teacher.slop_s": 0.02})
        client = Node("client", context=context)
        pub_t = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_ti = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        pub_r = client.create_publisher(Image, "rgb/image_raw", qos.SENSOR)
        pub_ri = client.create_publisher(CameraInfo, "rgb/camera_info", qos.SENSOR)
        static = StaticTransformBroadcaster(client)
        static.send(transform_to_msg("rgb_optical_frame", "thermal_optical_frame", 0, T_rgb_thermal))
        depth = Collector(client, Image, "depth/image", qos.SENSOR)
        conf = Collector(client, Image, "depth/confidence", qos.SENSOR)
        teacher = Collector(client, Image, "teacher/confidence", qos.SENSOR)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "rgb/image_raw", timeout=15)
            assert wait_for(lambda: node.tf_buffer.can_transform("rgb_optical_frame", "thermal_optical_frame"), 10)
            rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3)).astype(np.uint8)
            thermal = thermal_frame(5)
            # Thermal alone first (no RGB yet): output at once, student only.
            for _ in range(3):
                pub_ti.publish(camera_to_info(camera(), frame_id="thermal_optical_frame"))
                pub_ri.publish(camera_to_info(rgb_cam, frame_id="rgb_optical_frame"))
                time.sleep(0.02)
            pub_t.publish(array_to_image(thermal, encoding="mono16", stamp_ns=5 * S, frame_id="thermal_optical_frame"))
            assert depth.wait_for_count(1, 10)
            assert node.counters["student_only"] >= 1 and node.counters["teacher_runs"] == 0
            # Then an RGB frame 10 ms before the next thermal frame: a pair within the slop.
            deadline = time.monotonic() + 15
            k = 0
            while len(teacher) == 0 and time.monotonic() < deadline:
                k += 1
                pub_r.publish(array_to_image(rgb, encoding="rgb8", stamp_ns=6 * S + k * S // 10 - 10_000_000,
                                             frame_id="rgb_optical_frame"))
                time.sleep(0.05)
                pub_t.publish(array_to_image(thermal, encoding="mono16", stamp_ns=6 * S + k * S // 10,
                                             frame_id="thermal_optical_frame"))
                time.sleep(0.3)
            assert teacher.wait_for_count(1, 5), node.health().values
            assert node.counters["teacher_runs"] >= 1
            t_msg = teacher.messages[-1]
            stamp = t_msg.header.stamp.sec * S + t_msg.header.stamp.nanosec
            assert wait_for(lambda: any(m.header.stamp == t_msg.header.stamp for m in depth.messages + conf.messages))
            d_msg = next(m for m in reversed(depth.messages) if m.header.stamp == t_msg.header.stamp)
            c_msg = next(m for m in reversed(conf.messages) if m.header.stamp == t_msg.header.stamp)
            t_conf = image_to_array(t_msg)
            assert t_conf.shape == (H, W) and 0.0 <= float(t_conf.min()) and float(t_conf.max()) <= 1.0
            assert float(t_conf.max()) > 0.0  # the teacher sees part of the thermal view
            # The published depth is the documented fusion of the runner's outputs for that pair.
            res = node.teacher.infer_pair(thermal, rgb, camera(), rgb_cam, T_rgb_thermal)
            fused_d, fused_c = fuse(res.student_depth, res.student_confidence, res.teacher_depth,
                                    res.teacher_confidence)
            np.testing.assert_allclose(image_to_array(d_msg), fused_d, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(image_to_array(c_msg), fused_c, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(t_conf, res.teacher_confidence, rtol=1e-4, atol=1e-5)
            assert stamp >= 6 * S
        node.destroy_node()


def test_hot_swap_from_the_model_topic_and_corrupt_model_refused(tmp_path):
    import torch
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.checkpoints import save_model
    from monother_ros.model.variants import get_preset
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, image_to_array
    from monother_ros.runtime.engine import make_backend
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers

    config = get_preset("test-tiny")
    torch.manual_seed(7)
    new_dir = save_model(DepthBranch(config).eval(), config, tmp_path / "adapted")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.json", "metadata.json"):
        (corrupt / name).write_bytes((new_dir / name).read_bytes())
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    image = thermal_frame(4)
    expected_new = make_backend(new_dir, "torch", num_threads=1).infer(image).depth
    with ros_context() as context:
        node = make_node(context, backend="torch")
        old_hash = node.engine.info.model_hash
        client = Node("adaptation_stub", context=context)
        model_pub = client.create_publisher(String, "adaptation/model_path", qos.TF_STATIC_PUBLISHER)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        depth = Collector(client, Image, "depth/image", qos.SENSOR)

        def depth_now(k):
            stamp = (50 + k) * S
            assert wait_for_subscribers(client, "thermal/image_raw")
            for _ in range(20):
                pub.publish(array_to_image(image, encoding="mono16", stamp_ns=stamp, frame_id="t"))
                if wait_for(lambda: any(m.header.stamp.sec == 50 + k for m in depth.messages), 0.5):
                    return image_to_array(next(m for m in depth.messages if m.header.stamp.sec == 50 + k))
            raise AssertionError("no depth")

        with Spinner(context, node, client):
            before = depth_now(0)
            model_pub.publish(String(data=str(corrupt)))
            assert wait_for(lambda: node.problems.is_active("model_swap_failed"), 20.0)
            assert "model.safetensors" in node.problems.active()["model_swap_failed"].reason
            np.testing.assert_array_equal(depth_now(1), before)  # still the old engine
            model_pub.publish(String(data=str(new_dir)))
            assert wait_for(lambda: node.counters["model_swaps"] == 1, 20.0)
            assert not node.problems.is_active("model_swap_failed")
            assert node.health().values["model hash"] != old_hash[:16]
            np.testing.assert_allclose(depth_now(2), expected_new, rtol=1e-5, equal_nan=True)
        node.destroy_node()


def test_hot_swap_with_the_teacher_is_the_same_on_both_routes(tmp_path):
    """The model topic and the in-process hand-over (``request_model``) both end in the engine holder: with
    the teacher on, each swap keeps the running teacher and runs the folder's student; a folder the
    teacher path cannot take keeps the running engine (WARN + /diagnostics)."""
    import torch
    from rclpy.node import Node
    from std_msgs.msg import String

    from monother_ros.model.checkpoints import load_model, save_model
    from monother_ros.ros import qos
    from monother_ros.ros.diagnostics import Level
    from monother_ros.runtime.export import folder_hash
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from tiny_models import tiny_dual_dir, tiny_student_dir

    dual, config = load_model(tiny_dual_dir())
    folders = []
    for k in (1, 2):
        with torch.no_grad():
            for p in dual.student.parameters():
                p.mul_(1.03)
        folders.append(save_model(dual.student, config, tmp_path / f"adapt-{k:06d}"))
    with ros_context() as context:
        node = make_node(context, model=str(tiny_dual_dir()), backend="torch", **{"teacher.enabled": True})
        teacher = node.teacher.teacher
        client = Node("adaptation_stub", context=context)
        model_pub = client.create_publisher(String, "adaptation/model_path", qos.TF_STATIC_PUBLISHER)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "adaptation/model_path")
            model_pub.publish(String(data=str(folders[0])))  # across processes
            assert wait_for(lambda: node.counters["model_swaps"] == 1, 30.0), node.problems.active()
            assert node.teacher.teacher is teacher and node.model_path == folders[0]
            assert node.engine.info.model_hash == folder_hash(folders[0])
            node.request_model(folders[1])  # in-process hand-over
            assert wait_for(lambda: node.counters["model_swaps"] == 2, 30.0), node.problems.active()
            assert node.teacher.teacher is teacher and node.engine.info.model_hash == folder_hash(folders[1])
            node.request_model(tiny_student_dir() / "model.onnx")
            assert wait_for(lambda: node.problems.is_active("model_swap_failed"), 30.0)
            problem = node.problems.active()["model_swap_failed"]
            assert "ONNX" in problem.reason and str(folders[1]) in problem.reason and problem.level == Level.WARN
            assert node.engine.info.model_hash == folder_hash(folders[1])
            values = node.health().values
            assert values["model hash"] == folder_hash(folders[1])[:16] and values["last swap"].startswith("failed")
        node.destroy_node()

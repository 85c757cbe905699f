"""Inputs of real drivers over DDS: compressed transport, camera_info_url, frame id fill, crop, grey/colour-mapped
thermal, lens distortion, blind/saturated/frozen frames (depth node and adaptation node), and the sim rig
publishing compressed. Each hostile case: a clear throttled log line, its reason in /diagnostics, no crash,
normal output again on the next good frame (the ``Session`` helper of test_ros_robustness)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

S = 1_000_000_000
H, W = 48, 64


def _thermal(seed=0, hw=(H, W)):
    from test_ros_depth_node import thermal_frame

    return thermal_frame(seed, hw)


def compressed_msg(payload: bytes, fmt: str, stamp_ns: int, frame_id: str = "thermal"):
    from monother_ros.ros.convert import make_compressed_image

    return make_compressed_image(payload, fmt, stamp_ns, frame_id)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


def _output_for(collector, stamp, timeout=5.0):
    from ros_harness import wait_for

    assert wait_for(lambda: any(_stamp(m) == stamp for m in collector.messages), timeout), stamp
    return next(m for m in collector.messages if _stamp(m) == stamp)


def _until_output(s, make, collector=None, tries=20):
    """Publish ``make(stamp)`` until the node answers that stamp; returns the output message."""
    from ros_harness import wait_for

    collector = s.depth if collector is None else collector
    for _ in range(tries):
        stamp = s.next_stamp()
        s.pub.publish(make(stamp))
        if wait_for(lambda: any(_stamp(m) == stamp for m in collector.messages), 0.5):
            _settle(s.node)
            return next(m for m in collector.messages if _stamp(m) == stamp)
    raise AssertionError(f"no output; problems {list(s.node.problems.active())}")


def _settle(node, timeout=5.0):
    """Wait until every frame handed to the node is finished (published, rejected or dropped)."""
    from ros_harness import wait_for

    slots = [node.slot] + ([node._decode_ahead.output] if node._decode_ahead is not None else [])

    def idle():
        c = node.counters
        return (all(slot.offered == slot.taken + slot.dropped for slot in slots) and not node.worker.busy.is_set()
                and c["received"] == c["published"] + c["rejected"])

    time.sleep(0.05)  # frames still in DDS
    assert wait_for(idle, timeout), (node.counters, node.slot.offered)


def _status_level(s, problem, since=0):
    """The /diagnostics level of the status that carries ``problem``."""
    s.diagnosed(problem, since)
    for array_msg in reversed(s.diagnostics.messages[since:]):
        for status in array_msg.status:
            if any(kv.key == f"problem: {problem}" for kv in status.values):
                return status.level[0]
    raise AssertionError(problem)


def test_compressed_thermal_png_jpeg_and_hostile_payloads():
    from sensor_msgs.msg import CompressedImage

    from monother_ros.core.image_codec import encode_compressed_image as encode_compressed
    from monother_ros.ros import qos
    from monother_ros.ros.convert import camera_to_info, image_to_array
    from ros_harness import Spinner, ros_context, wait_for_subscribers
    from test_ros_depth_node import camera, make_node
    from test_ros_robustness import Session

    image = _thermal(3)
    grey = (image >> 6).astype(np.uint8)
    png16, fmt16 = encode_compressed(image, "mono16", "png")
    png8, fmt8 = encode_compressed(grey, "mono8", "png")
    jpeg8, fmtj = encode_compressed(grey, "mono8", "jpeg")
    with ros_context() as context:
        node = make_node(context, lazy=False, diagnostics_period_s=0.1, **{"thermal.transport": "compressed"})
        s = Session(context, node)
        s.pub = s.client.create_publisher(CompressedImage, "thermal/image_raw/compressed", qos.SENSOR)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "thermal/image_raw/compressed")
            assert s.client.count_subscribers("thermal/image_raw") == 0  # raw is not subscribed
            s.send_info(camera_to_info(camera(), frame_id="thermal"))
            # 16-bit PNG: lossless, so the depth is exactly the raw frame's.
            out = _until_output(s, lambda t: compressed_msg(png16, fmt16, t))
            np.testing.assert_allclose(image_to_array(out), node.engine.infer(image).depth, rtol=1e-6)
            out = _until_output(s, lambda t: compressed_msg(png8, fmt8, t))
            np.testing.assert_allclose(image_to_array(out), node.engine.infer(grey).depth, rtol=1e-6)
            assert _until_output(s, lambda t: compressed_msg(jpeg8, fmtj, t)).height == H
            cases = [
                ("thermal_corrupt_payload", lambda t: compressed_msg(png16[: len(png16) // 2], fmt16, t), "truncated"),
                ("thermal_corrupt_payload", lambda t: compressed_msg(b"\xff\xd8\xff" + bytes(300), fmtj, t), "JPEG"),
                ("thermal_depth_mismatch", lambda t: compressed_msg(png16, "mono8; png compressed", t), "16-bit"),
                ("thermal_depth_mismatch", lambda t: compressed_msg(png8, "mono16; png compressed", t), "8-bit"),
                ("thermal_unknown_format", lambda t: compressed_msg(png16, "yuv422; theora", t), "yuv422"),
            ]
            for problem, make, words in cases:
                reason = s.bad(problem, make)
                assert words in reason, reason
                _until_output(s, lambda t: compressed_msg(png16, fmt16, t))
                assert not node.problems.is_active(problem)
                s.log.lines.clear()
            assert node.worker.alive
        node.destroy_node()


def _calibration_file(path, *, width, height, fx=50.0, fy=52.0, cx=31.5, cy=24.5, d=(0.0, 0.0, 0.0, 0.0, 0.0)):
    path.write_text(
        f"image_width: {width}\nimage_height: {height}\ncamera_name: test_thermal\n"
        f"camera_matrix: {{rows: 3, cols: 3, data: [{fx}, 0.0, {cx}, 0.0, {fy}, {cy}, 0.0, 0.0, 1.0]}}\n"
        f"distortion_model: plumb_bob\ndistortion_coefficients: {{rows: 1, cols: 5, data: {list(d)}}}\n"
        "rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n"
        f"projection_matrix: {{rows: 3, cols: 4, data: [{fx}, 0.0, {cx}, 0.0, 0.0, {fy}, {cy}, 0.0, 0.0, 0.0, 1.0, 0.0]}}\n")
    return path


def test_calibration_file_frame_id_fill_crop_grey_colour_and_distortion(tmp_path):
    from sensor_msgs.msg import CameraInfo, PointCloud2

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info, image_to_array
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import camera, make_node
    from test_ros_robustness import Session

    crop = [1, 1, 2, 0]  # top, bottom, left, right: a 66x50 driver frame becomes 64x48
    full = _thermal(4, (H + 2, W + 2))
    cropped = full[1:-1, 2:]
    calib = _calibration_file(tmp_path / "thermal.yaml", width=W + 2, height=H + 2, cx=33.5, cy=25.5)
    with ros_context() as context:
        node = make_node(context, lazy=False, diagnostics_period_s=0.1, camera_info_timeout_s=0.2,
                         **{"thermal.camera_info_url": calib.as_uri(), "thermal.frame_id": "optris_optical",
                            "thermal.crop": crop})
        s = Session(context, node)
        info_out = Collector(s.client, CameraInfo, "depth/camera_info", qos.SENSOR)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "thermal/image_raw")
            # An Optris-like driver: mono16, EMPTY frame_id, no camera_info at all.
            out = _until_output(s, lambda t: array_to_image(full, encoding="mono16", stamp_ns=t, frame_id=""),
                                collector=s.points)
            assert isinstance(out, PointCloud2) and out.header.frame_id == "optris_optical"
            assert (out.height, out.width) == (H, W)
            depth = _output_for(s.depth, _stamp(out))
            np.testing.assert_allclose(image_to_array(depth), node.engine.infer(cropped).depth, rtol=1e-6)
            info = _output_for(info_out, _stamp(out))
            assert (info.width, info.height) == (W, H) and info.header.frame_id == "optris_optical"
            assert info.k[2] == pytest.approx(33.5 - 2) and info.k[5] == pytest.approx(25.5 - 1)
            assert info.p[2] == pytest.approx(33.5 - 2) and info.p[6] == pytest.approx(25.5 - 1)
            assert not node.problems.is_active("camera_info_missing")
            # A driver frame_id is kept (the fill is for empty ones only).
            out = _until_output(s, lambda t: array_to_image(full, encoding="mono16", stamp_ns=t, frame_id="boson"))
            assert out.header.frame_id == "boson"
            # A received camera_info wins over the file; of the uncropped size it is cropped alike.
            s.send_info(camera_to_info(camera((H + 2, W + 2)), frame_id="thermal"))
            out = _until_output(s, lambda t: array_to_image(full, encoding="mono16", stamp_ns=t), collector=s.points)
            info = _output_for(info_out, _stamp(out))
            assert info.k[0] == 50.0 and info.k[2] == pytest.approx(camera((H + 2, W + 2)).cx - 2)
            # Grey sent as rgb8 is accepted (same depth as mono8); a colour-mapped one is refused, naming the setting.
            grey = (cropped >> 6).astype(np.uint8)
            grey_full = np.zeros((H + 2, W + 2), np.uint8)
            grey_full[1:-1, 2:] = grey
            grey_full[0], grey_full[-1], grey_full[:, :2] = 200, 10, 90  # the cropped border must not matter
            as_rgb = np.repeat(grey_full[..., None], 3, axis=2)
            out = _until_output(s, lambda t: array_to_image(as_rgb, encoding="rgb8", stamp_ns=t, frame_id="thermal"))
            np.testing.assert_allclose(image_to_array(out), node.engine.infer(grey).depth, rtol=1e-6)
            palette = np.stack([grey_full, 255 - grey_full, grey_full // 2], axis=2)
            reason = s.bad("thermal_colour_mapped", lambda t: array_to_image(palette, encoding="bgr8", stamp_ns=t,
                                                                             frame_id="thermal"))
            assert "colour-mapped" in reason and "Y16" in reason and "Optris" in reason
            _until_output(s, lambda t: array_to_image(full, encoding="mono16", stamp_ns=t, frame_id="thermal"))
            assert not node.problems.is_active("thermal_colour_mapped")
            # A crop larger than the frame: rejected, reason named, next frame fine.
            s.bad("thermal_crop_too_large", lambda t: array_to_image(full[:3], encoding="mono16", stamp_ns=t,
                                                                     frame_id="thermal"))
            # Lens distortion: same K, only D changes -> the camera is rebuilt (cache keyed on D) and the
            # distortion is warned about once and shown in /diagnostics as WARN.
            distorted = camera_to_info(camera((H + 2, W + 2)), frame_id="thermal")
            distorted.d = [-0.25, 0.08, 0.0, 0.0, 0.0]
            s.send_info(distorted)
            for _ in range(3):
                _until_output(s, lambda t: array_to_image(full, encoding="mono16", stamp_ns=t, frame_id="thermal"))
            since = len(s.diagnostics)
            assert wait_for(lambda: any(kv.key == "lens distortion" and "rectified" in kv.value
                                        for a in s.diagnostics.messages[since:] for st in a.status for kv in st.values))
            status = next(st for a in reversed(s.diagnostics.messages) for st in a.status
                          if any(kv.key == "lens distortion" for kv in st.values))
            assert status.level[0] == 1 and "lens distortion" in status.message
            assert "plumb_bob" in node._distortion and "-0.25" in node._distortion
            s.send_info(camera_to_info(camera((H + 2, W + 2)), frame_id="thermal"))
            _until_output(s, lambda t: array_to_image(full, encoding="mono16", stamp_ns=t, frame_id="thermal"))
            assert wait_for(lambda: node._distortion is None)
        node.destroy_node()


@pytest.mark.parametrize("case", ["missing", "malformed"])
def test_bad_camera_info_url_is_reported_and_depth_still_flows(tmp_path, case):
    from monother_ros.ros.convert import array_to_image
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import make_node
    from test_ros_robustness import Session

    url = tmp_path / "absent.yaml"
    if case == "malformed":
        url = tmp_path / "bad.yaml"
        url.write_text("image_width: 64\nimage_height: 48\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2]}\n")
    image = _thermal(5)
    with ros_context() as context:
        node = make_node(context, lazy=False, diagnostics_period_s=0.1, camera_info_timeout_s=0.2,
                         **{"thermal.camera_info_url": f"file://{url}"})
        s = Session(context, node)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "thermal/image_raw")
            assert node.problems.is_active("camera_info_url_thermal")
            assert _status_level(s, "camera_info_url_thermal") == 2  # ERROR, named
            reason = s.diagnosed("camera_info_url_thermal")
            assert ("does not exist" if case == "missing" else "camera_matrix must be 3x3") in reason, reason
            assert str(url) in reason
            # depth is still published, without cloud, and the missing camera_info is reported as today
            for _ in range(10):
                s.pub.publish(array_to_image(image, encoding="mono16", stamp_ns=s.next_stamp(), frame_id="thermal"))
                time.sleep(0.05)
            assert wait_for(lambda: node.problems.is_active("camera_info_missing"))
            assert len(s.depth.wait_for_count(1)) > 0 and len(s.points) == 0
            since = len(s.diagnostics)
            # The WARN sits under the ERROR in the status message, but has its own value with the reason.
            assert wait_for(lambda: any(kv.key == "problem: camera_info_missing" and "thermal.camera_info_url" in kv.value
                                        for a in s.diagnostics.messages[since:] for st in a.status for kv in st.values))
            assert node.problems.is_active("camera_info_url_thermal")  # good frames do not clear a bad file
            assert node.worker.alive
        node.destroy_node()


def test_blind_saturated_and_frozen_frames_give_no_depth_and_recover():
    from monother_ros.ros.convert import array_to_image, camera_to_info
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import camera, make_node
    from test_ros_robustness import Session

    rng = np.random.default_rng(0)
    shutter = (8000 + rng.normal(0, 3, (H, W))).astype(np.uint16)
    saturated = np.full((H, W), 65535, np.uint16)
    saturated[:10] = _thermal(6)[:10]
    hot_pixel = np.zeros((H, W), np.uint16)
    hot_pixel[5, 5] = 65535
    with ros_context() as context:
        node = make_node(context, lazy=False, diagnostics_period_s=0.1,
                         **{"frame_check.max_identical_frames": 5})
        s = Session(context, node)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "thermal/image_raw")
            s.send_info(camera_to_info(camera(), frame_id="thermal"))
            seeds = iter(range(100, 200))

            def fresh(t):  # a new scene every frame (sensor noise): never frozen
                return array_to_image(_thermal(next(seeds)), encoding="mono16", stamp_ns=t, frame_id="thermal")

            _until_output(s, fresh)
            for frame, words in ((shutter, "low_contrast"), (np.full((H, W), 30000, np.uint16), "low_contrast"),
                                 (hot_pixel, "saturated"), (saturated, "saturated")):
                since = len(s.diagnostics)
                reason = s.bad("blind_frame", lambda t, f=frame: array_to_image(f, encoding="mono16", stamp_ns=t,
                                                                                frame_id="thermal"))
                assert words in reason and "no depth" in reason, reason
                assert _status_level(s, "blind_frame", since) == 2  # ERROR while it lasts
                _until_output(s, fresh)
                assert not node.problems.is_active("blind_frame")
                s.log.lines.clear()
            # A frozen driver: the same frame again and again. The first 5 repeats still get depth, then none.
            frozen = _thermal(7)
            published = node.counters["published"]
            for _ in range(12):
                s.pub.publish(array_to_image(frozen, encoding="mono16", stamp_ns=s.next_stamp(), frame_id="thermal"))
                time.sleep(0.05)
            assert wait_for(lambda: node.problems.is_active("blind_frame"))
            assert "frozen" in s.diagnosed("blind_frame")
            assert wait_for(lambda: node.counters["received"] >= node.counters["published"] + 6, 5.0)
            assert node.counters["published"] - published <= 6
            _until_output(s, fresh)
            assert not node.problems.is_active("blind_frame") and node.worker.alive
        node.destroy_node()


@pytest.mark.slow
def test_compressed_rgb_feeds_the_teacher_and_a_corrupt_jpeg_falls_back_to_the_student():
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from tf2_msgs.msg import TFMessage

    from monother_ros.core.camera import PinholeCamera
    from monother_ros.core.image_codec import encode_compressed_image as encode_compressed
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info
    from monother_ros.ros.tf import transform_to_msg
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from test_ros_depth_node import camera, make_node
    from test_ros_robustness import Session
    from tiny_models import tiny_dual_dir

    image = _thermal(8)
    yy, xx = np.mgrid[0:30, 0:40]
    rgb = np.stack([xx * 6, yy * 8, 60 + 0 * xx], axis=2).astype(np.uint8)
    jpeg, fmt = encode_compressed(rgb[..., ::-1], "bgr8", "jpeg")
    rgb_cam = PinholeCamera(40, 30, 30.0, 30.0, 19.5, 14.5)
    T = np.eye(4)
    T[0, 3] = -0.05
    with ros_context() as context:
        node = make_node(context, model=str(tiny_dual_dir()), backend="torch", lazy=False, diagnostics_period_s=0.1,
                         **{"teacher.enabled": True, "teacher.slop_s": 0.02, "teacher.tf_timeout_s": 0.02,
                            "rgb.transport": "compressed", "rgb.frame_id": "rgb"})
        s = Session(context, node)
        pub_rgb = s.client.create_publisher(CompressedImage, "rgb/image_raw/compressed", qos.SENSOR)
        pub_rgb_info = s.client.create_publisher(CameraInfo, "rgb/camera_info", qos.SENSOR)
        pub_tf = s.client.create_publisher(TFMessage, "/tf_static", qos.TF_STATIC_PUBLISHER)
        with Spinner(context, node, s.client):
            assert wait_for_subscribers(s.client, "rgb/image_raw/compressed")
            s.send_info(camera_to_info(camera(), frame_id="thermal"))
            pub_tf.publish(TFMessage(transforms=[transform_to_msg("rgb", "thermal", 0, T)]))
            for _ in range(3):
                pub_rgb_info.publish(camera_to_info(rgb_cam, frame_id="rgb"))
                time.sleep(0.01)
            assert wait_for(lambda: node._rgb_info is not None)

            def paired(payload):
                def make(t):
                    # empty frame_id: rgb.frame_id fills it, so the TF lookup finds "rgb"
                    pub_rgb.publish(compressed_msg(payload, fmt, t - 5_000_000, frame_id=""))
                    time.sleep(0.03)
                    return array_to_image(image, encoding="mono16", stamp_ns=t, frame_id="thermal")
                return make

            runs = node.counters["teacher_runs"]
            for _ in range(30):
                s.pub.publish(paired(jpeg)(s.next_stamp()))
                if wait_for(lambda: node.counters["teacher_runs"] > runs, 0.5):
                    break
            assert node.counters["teacher_runs"] > runs, (node.problems.active(), node.health().values)
            reason = s.bad("rgb_corrupt_payload", paired(jpeg[: len(jpeg) // 3]), expect_output=True)
            assert "student only" in reason
        node.destroy_node()


@pytest.mark.slow
def test_adaptation_node_takes_compressed_pairs_and_refuses_blind_frames(tmp_path):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, CompressedImage

    from monother_ros.core.image_codec import encode_compressed_image as encode_compressed
    from monother_ros.ros import qos
    from monother_ros.ros.adaptation_node import OnlineAdaptationNode
    from monother_ros.ros.convert import camera_to_info
    from monother_ros.ros.tf import StaticTransformBroadcaster, transform_to_msg
    from monother_ros.sim import SimRig
    from ros_harness import Spinner, ros_context, wait_for, wait_for_subscribers
    from tiny_models import tiny_dual_dir

    rig = SimRig(seed=4, scenario="night", family="campus")
    cam_t, cam_r = rig.thermal_camera.resized(70, 56), rig.rgb_camera.resized(70, 56)
    frames = [(rig.render_thermal(t, cam_t).counts, rig.render_rgb(t, cam_r).rgb) for t in (1.0, 2.0, 3.0)]
    params = {"model": str(tiny_dual_dir()), "start_paused": True, "checkpoint.dir": str(tmp_path / "ckpt"),
              "checkpoint.resume": False, "status_period_s": 0.2, "thermal.transport": "compressed",
              "rgb.transport": "compressed", "tf_timeout_s": 0.5}
    with ros_context() as context:
        node = OnlineAdaptationNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        client = Node("adapt_inputs_client", context=context)
        pub_t = client.create_publisher(CompressedImage, "thermal/image_raw/compressed", qos.SENSOR)
        pub_r = client.create_publisher(CompressedImage, "rgb/image_raw/compressed", qos.SENSOR)
        pub_ti = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        pub_ri = client.create_publisher(CameraInfo, "rgb/camera_info", qos.SENSOR)
        tf = StaticTransformBroadcaster(client)
        tf.send(transform_to_msg("rgb_optical_frame", "thermal_optical_frame", 0, rig.T_rgb_thermal))
        stamp = [5 * S]

        def send(thermal, rgb_payload=None):
            stamp[0] += 100_000_000
            pub_ti.publish(camera_to_info(cam_t, frame_id="thermal_optical_frame"))
            pub_ri.publish(camera_to_info(cam_r, frame_id="rgb_optical_frame"))
            pub_t.publish(compressed_msg(*encode_compressed(thermal, "mono16", "png"), stamp[0], "thermal_optical_frame"))
            payload, fmt = rgb_payload or encode_compressed(frames[0][1], "rgb8", "jpeg")
            pub_r.publish(compressed_msg(payload, fmt, stamp[0], "rgb_optical_frame"))
            time.sleep(0.08)

        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "thermal/image_raw/compressed")
            assert wait_for_subscribers(client, "rgb/image_raw/compressed")
            for k in range(40):
                send(frames[k % 3][0])
                if node.counters["pairs"] >= 2:
                    break
            assert node.counters["pairs"] >= 2, (node.counters, node.problems.active())
            pairs, rejected = node.counters["pairs"], node.counters["rejected"]
            for _ in range(5):
                send(np.full(frames[0][0].shape, 9000, np.uint16))  # closed shutter
            assert wait_for(lambda: node.problems.is_active("blind_frame"), 5.0), node.problems.active()
            assert node.counters["rejected"] > rejected and node.counters["pairs"] == pairs
            assert node.problems.active()["blind_frame"].level == 2
            for _ in range(5):
                send(frames[1][0], rgb_payload=(b"\xff\xd8\xff\xe0" + bytes(50), "rgb8; jpeg compressed bgr8"))
            assert wait_for(lambda: node.problems.is_active("rgb_bad_image"), 5.0), node.problems.active()
            assert "corrupt" in node.problems.active()["rgb_bad_image"].reason
            for k in range(40):
                send(frames[k % 3][0])
                if node.counters["pairs"] > pairs:
                    break
            assert node.counters["pairs"] > pairs and not node.problems.is_active("blind_frame")
        node.destroy_node()


def test_sim_rig_publishes_compressed_and_the_depth_node_reads_it_without_blind_frames():
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image

    from monother_ros.core.image_codec import decode_compressed_image
    from monother_ros.ros import qos
    from monother_ros.ros.sim_node import SimRigNode
    from ros_harness import Collector, Spinner, ros_context, wait_for
    from test_ros_depth_node import make_node

    with ros_context() as context:
        sim = SimRigNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in {
            "transport": "compressed", "render_scale": 0.15, "scenario": "fog", "seed": 3, "publish_lidar": False,
            "publish_gt_depth": False}.items()])
        node = make_node(context, **{"thermal.transport": "compressed", "frame_check.max_identical_frames": 10})
        client = Node("sim_compressed_client", context=context)
        depth = Collector(client, Image, "depth/image", qos.SENSOR)
        rgb = Collector(client, CompressedImage, "rgb/image_raw/compressed", qos.SENSOR)
        with Spinner(context, sim, node, client):
            assert len(depth.wait_for_count(8, 60.0)) >= 8, (node.counters, node.problems.active())
            assert len(rgb.wait_for_count(2, 30.0)) >= 2
            image = decode_compressed_image(rgb.messages[0].data, rgb.messages[0].format)
            assert image.shape == (sim.rgb_camera.height, sim.rgb_camera.width, 3)
            assert rgb.messages[0].format == "rgb8; jpeg compressed bgr8"
            assert node.problems.occurrences.get("blind_frame", 0) == 0 and node.counters["rejected"] == 0
            assert depth.messages[0].height == sim.thermal_camera.height
            assert sim.pub_thermal is None  # compressed only
        for n in (client, node, sim):
            n.destroy_node()


def test_rig_transport_option_reaches_every_node_of_the_graph():
    import argparse

    from monother_ros.ros.commands import add_commands, transport_overrides
    from monother_ros.ros.sim_node import SIM_PARAMETERS
    from monother_ros.ros.depth_node import DEPTH_PARAMETERS
    from monother_ros.ros.adaptation_node import ADAPTATION_PARAMETERS

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    assert parser.parse_args(["rig", "--sim", "--transport", "compressed"]).transport == "compressed"
    with pytest.raises(SystemExit):
        parser.parse_args(["rig", "--transport", "theora"])
    overrides = transport_overrides("compressed")
    assert transport_overrides("") == {}
    # every override names a declared parameter of its node, with a valid value
    for table, name in ((SIM_PARAMETERS, "sim_rig"), (DEPTH_PARAMETERS, "thermal_depth"),
                        (ADAPTATION_PARAMETERS, "online_adaptation")):
        assert overrides[name] and table.validate(overrides[name])
    assert overrides["thermal_depth"] == {"thermal.transport": "compressed", "rgb.transport": "compressed"}


def test_live_replay_of_a_compressed_bag_reaches_the_node_on_the_compressed_transport(tmp_path):
    """``monother eval --live`` path: a bag recording 16-bit PNG thermal on /thermal/image_raw/compressed is
    played into the real node graph, which subscribes the compressed transport and answers every frame."""
    from monother_ros.core.image_codec import encode_compressed_image as encode_compressed
    from monother_ros.eval.live import _transport_of
    from monother_ros.ros.bag_player import play_and_record
    from test_eval_bag_reader import INFO, TS, _header, make_info, write_messages
    from test_ros_depth_node import camera
    from tiny_models import tiny_student_dir

    assert _transport_of("sensor_msgs/msg/CompressedImage", "/thermal/image_raw/compressed") == "compressed"
    assert _transport_of("sensor_msgs/msg/Image", "/thermal/image_raw") == "raw"
    from monother_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="<base>/compressed"):
        _transport_of("sensor_msgs/msg/CompressedImage", "/thermal/png")
    items, stamps = [], []
    for k in range(6):
        stamp = 50 * S + k * 100_000_000
        payload, fmt = encode_compressed(_thermal(20 + k), "mono16", "png")
        msg = TS.types["sensor_msgs/msg/CompressedImage"](header=_header(stamp, "thermal"), format=fmt,
                                                         data=np.frombuffer(payload, np.uint8))
        items.append(("/thermal/image_raw/compressed", "sensor_msgs/msg/CompressedImage", stamp, msg))
        items.append(("/thermal/camera_info", INFO, stamp - 1, make_info(camera(), stamp, "thermal")))
        stamps.append(stamp)
    bag = write_messages(tmp_path / "compressed_bag", items)
    recording = play_and_record(bag, tiny_student_dir(), backend="onnxruntime", rate=2.0,
                                thermal_topic="/thermal/image_raw/compressed",
                                topics=("/thermal/image_raw/compressed", "/thermal/camera_info"), num_threads=1,
                                ready_timeout_s=60.0, drain_s=3.0, thermal_transport="compressed")
    assert recording.published == 6
    assert set(recording.outputs) == set(stamps), (sorted(recording.outputs), stamps)
    depth = recording.outputs[stamps[0]][0]
    assert depth.shape == (H, W) and np.isfinite(depth).mean() > 0.5

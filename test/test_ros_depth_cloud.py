"""thermal_depth over real rclpy/DDS: depth/points agrees with depth_image_proc run on depth/image +
depth/camera_info; the cloud options (decimation, range limit, rgb); TF as tf2 does it inside the node
(a frame changing parent mid-stream, a stale transform, a hand-typed quaternion).

depth_image_proc is not installable here: its ``convertDepth<float>`` (point_cloud_xyz) is written out
below from its documented behaviour (centre and focal lengths from image_geometry's PinholeCameraModel,
which reads P). sensor_msgs_py is not installed either: clouds are decoded the way its ``read_points``
does (a structured dtype from the fields, itemsize point_step, reshaped to height x width)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

S = 1_000_000_000
H, W = 48, 64


def thermal_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    return (20000 + 60 * yy + 900 * np.sin(xx / 5.0) + rng.normal(0, 50, (H, W))).astype(np.uint16)


def thermal_camera():
    from monother_ros.core.camera import PinholeCamera

    return PinholeCamera(W, H, 50.0, 52.0, W / 2 - 0.5, H / 2 + 0.5)


def make_node(context, **params):
    from rclpy.parameter import Parameter

    from monother_ros.ros.depth_node import ThermalDepthNode
    from tiny_models import tiny_student_dir

    params.setdefault("model", str(tiny_student_dir()))
    params.setdefault("backend", "onnxruntime")
    params.setdefault("num_threads", 1)
    return ThermalDepthNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def read_points(msg) -> np.ndarray:
    """sensor_msgs_py.point_cloud2.read_points(reshape_organized_cloud=True), written out."""
    formats = {7: "f4"}  # PointField.FLOAT32
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": [f.name for f in msg.fields],
                      "formats": [order + formats[f.datatype] for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    assert msg.row_step == msg.point_step * msg.width
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height).reshape(msg.height, msg.width)


def xyz_of(cloud: np.ndarray) -> np.ndarray:
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)


def depth_image_proc_points(depth: np.ndarray, info) -> np.ndarray:
    """depth_image_proc convertDepth<float>: x = (u - cx) * z / fx, y = (v - cy) * z / fy, z, with
    cx, cy, fx, fy = P[0,2], P[1,2], P[0,0], P[1,1] (no binning / ROI here); non-finite depth -> NaN."""
    P = np.asarray(info.p, np.float64).reshape(3, 4)
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    z = depth.astype(np.float64)
    out = np.stack([(u - P[0, 2]) * z / P[0, 0], (v - P[1, 2]) * z / P[1, 1], z], axis=-1)
    out[~np.isfinite(depth)] = np.nan
    return out


def info_with_rectified_p():
    """A calibrated camera whose P (rectified model) differs from K, with distortion, as a real
    camera_calibration result looks."""
    from monother_ros.ros.convert import camera_to_info

    info = camera_to_info(thermal_camera(), frame_id="thermal_optical_frame")
    K = np.asarray(info.k).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    P[0, 0] *= 1.04
    P[1, 1] *= 1.03
    P[0, 2] += 3.0
    P[1, 2] -= 2.0
    info.p = [float(v) for v in P.ravel()]
    info.d = [-0.21, 0.05, 0.001, -0.002, 0.0]
    info.r = [0.9999, -0.01, 0.0, 0.01, 0.9999, 0.0, 0.0, 0.0, 1.0]
    return info


def publish_until(collector, publish, predicate=lambda m: True, timeout=15.0):
    """Publish repeatedly until the collector holds a message satisfying ``predicate``; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish()
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            for msg in reversed(collector.messages):
                if predicate(msg):
                    return msg
            time.sleep(0.01)
    raise AssertionError(f"no matching message on {collector.topic} within {timeout} s")


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


def test_raw_geometry_info_keeps_the_raw_model_and_sets_p_from_k():
    from monother_ros.ros.convert import camera_from_info, raw_geometry_info

    info = info_with_rectified_p()
    info.binning_x, info.binning_y = 2, 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 8, 4, 48, 40
    p_before = list(info.p)
    out = raw_geometry_info(info)
    assert list(info.p) == p_before  # the input is not modified
    K = np.asarray(info.k).reshape(3, 3)
    np.testing.assert_array_equal(np.asarray(out.p).reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
    np.testing.assert_array_equal(np.asarray(out.r), np.eye(3).ravel())
    assert list(out.d) == list(info.d) and out.distortion_model == info.distortion_model
    assert (out.width, out.height, out.binning_x, out.binning_y) == (W, H, 2, 2)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (8, 4, 48, 40)
    assert out.header.frame_id == info.header.frame_id
    # Binning and ROI act on P as on K (image_geometry does both): the rectified and raw models agree.
    assert camera_from_info(out, use_rectified=True) == camera_from_info(out)
    assert camera_from_info(info, use_rectified=True) != camera_from_info(info)


def test_depth_image_proc_on_depth_image_and_camera_info_agrees_with_depth_points():
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, image_to_array
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers

    info_in = info_with_rectified_p()
    with ros_context() as context:
        node = make_node(context)
        client = Node("client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_info = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        depth = Collector(client, Image, "depth/image", qos.SENSOR)
        info = Collector(client, CameraInfo, "depth/camera_info", qos.SENSOR)
        points = Collector(client, PointCloud2, "depth/points", qos.SENSOR)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "thermal/camera_info", timeout=15)
            assert wait_for(lambda: (pub_info.publish(info_in), node._thermal_info is not None)[1], 10.0)
            stamp = 1_700_000_000 * S + 7
            image = thermal_frame(1)
            publish_until(points, lambda: pub.publish(array_to_image(image, encoding="mono16", stamp_ns=stamp,
                                                                     frame_id="thermal_optical_frame")))
            assert info.wait_for_count(1) and depth.wait_for_count(1)
            d_msg = next(m for m in depth.messages if stamp_of(m) == stamp)
            i_msg = next(m for m in info.messages if stamp_of(m) == stamp)
            p_msg = next(m for m in points.messages if stamp_of(m) == stamp)
        node.destroy_node()

    # The published camera_info: raw-image geometry, P = [K | 0], R = I; K, D, model and size kept.
    K = np.asarray(info_in.k).reshape(3, 3)
    np.testing.assert_array_equal(np.asarray(i_msg.k), np.asarray(info_in.k))
    np.testing.assert_array_equal(np.asarray(i_msg.p).reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
    np.testing.assert_array_equal(np.asarray(i_msg.r), np.eye(3).ravel())
    np.testing.assert_array_equal(np.asarray(i_msg.d), np.asarray(info_in.d))
    assert i_msg.distortion_model == info_in.distortion_model and (i_msg.width, i_msg.height) == (W, H)
    assert i_msg.header.frame_id == d_msg.header.frame_id == p_msg.header.frame_id == "thermal_optical_frame"

    cloud = read_points(p_msg)
    assert cloud.shape == (H, W) and not p_msg.is_dense
    depth_image = image_to_array(d_msg)
    assert np.isfinite(depth_image).mean() > 0.5
    expected = depth_image_proc_points(depth_image, i_msg)
    got = xyz_of(cloud)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    assert np.max(np.abs(got[finite] - expected[finite])) <= 1e-5
    # With the input's own P (what used to be republished) depth_image_proc would disagree by far more.
    old = depth_image_proc_points(depth_image, info_in)
    assert np.nanmax(np.abs(old - got)) > 1e-2


def test_cloud_decimation_and_range_limit_over_dds():
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from monother_ros.core.cloud import CloudOptions, depth_to_points
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info, image_to_array
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers

    cam = thermal_camera()
    with ros_context() as context:
        node = make_node(context, **{"cloud.decimation": 3})
        client = Node("client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_info = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        depth = Collector(client, Image, "depth/image", qos.SENSOR)
        points = Collector(client, PointCloud2, "depth/points", qos.SENSOR)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "thermal/camera_info", timeout=15)
            info = camera_to_info(cam, frame_id="thermal_optical_frame")
            assert wait_for(lambda: (pub_info.publish(info), node._thermal_info is not None)[1], 10.0)
            image = thermal_frame(2)
            publish_until(points, lambda: pub.publish(array_to_image(image, encoding="mono16", stamp_ns=5 * S,
                                                                     frame_id="thermal_optical_frame")))
            d_msg = depth.wait_for_count(1)[-1]
            p_msg = points.messages[-1]
            # Decimation 3 on 48 x 64: rows 0, 3, ..., 45 and columns 0, 3, ..., 63 -> 16 x 22, organised.
            assert (p_msg.height, p_msg.width, p_msg.point_step, p_msg.row_step) == (16, 22, 16, 16 * 22)
            assert [f.name for f in p_msg.fields] == ["x", "y", "z", "intensity"]
            depth_image = image_to_array(d_msg)
            np.testing.assert_array_equal(xyz_of(read_points(p_msg)), depth_to_points(depth_image, cam)[::3, ::3])

            # A range limit (the median range of the full cloud): the farther half become NaN.
            full = depth_to_points(depth_image, cam)
            ranges = np.linalg.norm(full.astype(np.float64), axis=-1)
            limit = float(np.nanmedian(ranges))
            node.params["cloud.max_range_m"] = limit  # as a runtime parameter change would set it
            node.params["cloud.decimation"] = 1
            count = len(points)
            publish_until(points, lambda: pub.publish(array_to_image(image, encoding="mono16", stamp_ns=6 * S,
                                                                     frame_id="thermal_optical_frame")),
                          lambda m: stamp_of(m) == 6 * S)
            assert len(points) > count
            p_msg = next(m for m in points.messages if stamp_of(m) == 6 * S)
            got = xyz_of(read_points(p_msg))
            assert got.shape == (H, W, 3)
            expected = depth_to_points(depth_image, cam, CloudOptions(max_range_m=limit))
            np.testing.assert_array_equal(got, expected)
            clear = np.abs(ranges - limit) > 1e-5 * limit  # away from float rounding at the limit itself
            far, near = clear & (ranges > limit), clear & (ranges < limit)
            assert 0.3 < far.mean() < 0.7 and np.isnan(got[far]).all() and np.isfinite(got[near]).all()
        node.destroy_node()


def test_cloud_built_by_a_whole_frame_engine_equals_the_cpu_cloud():
    """A torch engine running whole frames on its device (CUDA in use; the same code on CPU tensors
    here) builds depth/points itself; the message equals the CPU back-projection of depth/image,
    also after a decimation change at runtime (the engine is told the new options)."""
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from monother_ros.core.cloud import CloudOptions, depth_to_points
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info, image_to_array
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers

    cam = thermal_camera()
    with ros_context() as context:
        node = make_node(context, backend="torch", device="cpu")
        engine = node.models.engine
        engine._device_frames = True  # what CUDA selects; the CPU runs the same torch ops
        client = Node("client", context=context)
        pub = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_info = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        depth = Collector(client, Image, "depth/image", qos.SENSOR)
        confidence = Collector(client, Image, "depth/confidence", qos.SENSOR)
        points = Collector(client, PointCloud2, "depth/points", qos.SENSOR)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "thermal/camera_info", timeout=15)
            info = camera_to_info(cam, frame_id="thermal_optical_frame")
            assert wait_for(lambda: (pub_info.publish(info), node._thermal_info is not None)[1], 10.0)
            image = thermal_frame(4)
            for stamp, decimation in ((7 * S, 1), (8 * S, 2)):
                node.params["cloud.decimation"] = decimation  # as a runtime parameter change would set it
                publish_until(points, lambda: pub.publish(array_to_image(image, encoding="mono16", stamp_ns=stamp,
                                                                         frame_id="thermal_optical_frame")),
                              lambda m: stamp_of(m) == stamp)
                assert wait_for(lambda: any(stamp_of(m) == stamp for m in depth.messages)
                                and any(stamp_of(m) == stamp for m in confidence.messages), 10.0)
                assert node._engine_cloud_state == (engine, (cam, CloudOptions(decimation, 0.0, False)))
                assert node.counters["engine_clouds"] >= 1  # published from the engine's packed points
                p_msg = next(m for m in points.messages if stamp_of(m) == stamp)
                d_img = image_to_array(next(m for m in depth.messages if stamp_of(m) == stamp))
                c_img = image_to_array(next(m for m in confidence.messages if stamp_of(m) == stamp))
                cloud = read_points(p_msg)
                expected = depth_to_points(d_img, cam)[::decimation, ::decimation]
                got = xyz_of(cloud)
                assert got.shape == expected.shape and np.isfinite(got).mean() > 0.5
                np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
                finite = np.isfinite(expected)
                assert np.max(np.abs(got[finite] - expected[finite])) <= 1e-4 * np.nanmax(np.abs(expected))
                intensity = cloud["intensity"][finite[..., 0]]
                np.testing.assert_allclose(intensity, c_img[::decimation, ::decimation][finite[..., 0]], rtol=1e-6)
        node.destroy_node()


# ----------------------------------------------------------------------------- rgb field and TF like tf2

RGB_W, RGB_H = 80, 80
MOUNT_A = (0.05, 0.0, 0.0)
MOUNT_B = (-0.1, 0.05, 0.0)
HAND_TYPED_Q = (0.0, 0.0, 0.71, 0.71)  # |q|^2 = 1.0082: a 90 deg roll, accepted and normalised as in tf2


def rgb_image() -> np.ndarray:
    rows, cols = np.mgrid[0:RGB_H, 0:RGB_W]
    return np.stack([cols * 3, rows * 3, (rows + cols) % 256], axis=-1).astype(np.uint8)


def T_rgb_thermal(mount: str) -> np.ndarray:
    """By hand: world = thermal optical frame; world_T_mount_a = translation; world_T_mount_b =
    translation + 90 deg about z; rgb_optical_frame sits at its mount's origin. T = inv(world_T_mount)."""
    world_T_mount = np.eye(4)
    if mount == "a":
        world_T_mount[:3, 3] = MOUNT_A
    else:
        world_T_mount[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
        world_T_mount[:3, 3] = MOUNT_B
    return np.linalg.inv(world_T_mount)


def test_rgb_cloud_with_a_parent_change_mid_stream_and_a_stale_transform():
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from monother_ros.core.camera import PinholeCamera
    from monother_ros.core.cloud import RgbView, colour_points
    from monother_ros.ros import qos
    from monother_ros.ros.convert import array_to_image, camera_to_info, make_header
    from monother_ros.ros.tf import StaticTransformBroadcaster
    from ros_harness import Collector, Spinner, ros_context, wait_for, wait_for_subscribers
    from geometry_msgs.msg import TransformStamped

    def tf(parent, child, stamp_ns, t=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0)):
        msg = TransformStamped()
        msg.header = make_header(stamp_ns, parent)
        msg.child_frame_id = child
        msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = t
        r = msg.transform.rotation
        r.x, r.y, r.z, r.w = q
        return msg

    rgb_cam = PinholeCamera(RGB_W, RGB_H, 40.0, 40.0, 39.5, 39.5)
    rgb = rgb_image()
    base = 100 * S
    with ros_context() as context:
        node = make_node(context, **{"cloud.rgb": True, "teacher.slop_s": 0.02, "teacher.tf_timeout_s": 0.2})
        assert node.teacher is None and node.tf_buffer is not None
        client = Node("client", context=context)
        pub_t = client.create_publisher(Image, "thermal/image_raw", qos.SENSOR)
        pub_ti = client.create_publisher(CameraInfo, "thermal/camera_info", qos.SENSOR)
        pub_r = client.create_publisher(Image, "rgb/image_raw", qos.SENSOR)
        pub_ri = client.create_publisher(CameraInfo, "rgb/camera_info", qos.SENSOR)
        pub_tf = client.create_publisher(TFMessage, "/tf", qos.TF)
        static = StaticTransformBroadcaster(client)
        static.send([tf("world", "thermal_optical_frame", 0),
                     tf("world", "mount_a", 0, MOUNT_A),
                     tf("world", "mount_b", 0, MOUNT_B, HAND_TYPED_Q)])
        points = Collector(client, PointCloud2, "depth/points", qos.SENSOR)
        with Spinner(context, node, client):
            assert wait_for_subscribers(client, "rgb/image_raw", timeout=15)
            assert wait_for_subscribers(client, "/tf", timeout=15)
            assert wait_for(lambda: node.tf_buffer.can_transform("mount_b", "thermal_optical_frame"), 10)
            # rgb_optical_frame hangs under mount_a until 100.5 s, under mount_b afterwards.
            dynamic = [tf("mount_a", "rgb_optical_frame", base + k * S // 10) for k in (-2, 2, 4)]
            dynamic += [tf("mount_b", "rgb_optical_frame", base + k * S // 10) for k in (6, 8, 12, 14, 16, 18)]
            pub_tf.publish(TFMessage(transforms=dynamic))
            assert wait_for(lambda: node.tf_buffer.latest_stamp("rgb_optical_frame") == base + 18 * S // 10, 10)
            # One stale message, 41.8 s older than the newest: ignored and counted, the cache kept (tf2).
            pub_tf.publish(TFMessage(transforms=[tf("mount_a", "rgb_optical_frame", 60 * S)]))
            assert wait_for(lambda: node.tf_buffer.rejected.get("old_data") == 1, 10)
            assert node.tf_buffer.rejected == {"old_data": 1}  # the hand-typed quaternion was accepted

            for _ in range(3):
                pub_ti.publish(camera_to_info(thermal_camera(), frame_id="thermal_optical_frame"))
                pub_ri.publish(camera_to_info(rgb_cam, frame_id="rgb_optical_frame"))
                time.sleep(0.02)
            assert wait_for(lambda: node._thermal_info is not None and node._rgb_info is not None)
            thermal = thermal_frame(4)
            seen = {}
            for stamp, mount in ((base, "a"), (base + S, "b"), (base + 3 * S // 2, "b")):
                def send(stamp=stamp):
                    pub_r.publish(array_to_image(rgb, encoding="rgb8", stamp_ns=stamp - 5_000_000,
                                                 frame_id="rgb_optical_frame"))
                    time.sleep(0.05)
                    pub_t.publish(array_to_image(thermal, encoding="mono16", stamp_ns=stamp,
                                                 frame_id="thermal_optical_frame"))

                def coloured(msg, stamp=stamp):
                    return stamp_of(msg) == stamp and bool((read_points(msg)["rgb"].view(np.uint32) != 0).any())

                seen[mount, stamp] = read_points(publish_until(points, send, coloured))
            health = node.health().values
            assert "old_data" in health["tf rejected"] and health["tf"] == "ok", health
        node.destroy_node()

    for (mount, stamp), cloud in seen.items():
        xyz = xyz_of(cloud)
        got = cloud["rgb"].view(np.uint32)
        right = colour_points(xyz, RgbView(rgb, rgb_cam, T_rgb_thermal(mount)))
        wrong = colour_points(xyz, RgbView(rgb, rgb_cam, T_rgb_thermal("b" if mount == "a" else "a")))
        visible = right != 0
        assert visible.mean() > 0.3, (mount, visible.mean())
        # The colours come from the parent valid at the frame's stamp (pixel-exact but for rounding ties).
        assert (got == right).mean() > 0.99, (mount, stamp, (got == right).mean())
        assert (got == wrong).mean() < 0.5
        # Black where the RGB camera does not see the point (and for invalid points).
        assert (got[~visible] == 0).all()

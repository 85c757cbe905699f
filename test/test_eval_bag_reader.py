"""Bag reading with rosbags: topics, time order, Image/CameraInfo/TF/PointCloud2 decoding, bad bags.

The bags are written here with rosbags' writer so each case controls stamps and payload layout
(padding, byte order); ``write_messages`` and the ``make_*`` builders are reused by the training tests.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.core.image_codec import ImageDecodeError, decode_image_buffer, encode_image, to_rgb
from monother_ros.errors import BagError
from monother_ros.eval.bag_reader import (
    BagReader,
    camera_info_to_pinhole,
    image_to_numpy,
    list_topics,
    pointcloud2_to_array,
)

TS = get_typestore(Stores.LATEST)
T = TS.types
IMAGE, INFO, TF, CLOUD = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CameraInfo",
    "tf2_msgs/msg/TFMessage",
    "sensor_msgs/msg/PointCloud2",
)


def _header(stamp_ns: int, frame: str):
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)


def make_image(array: np.ndarray, encoding: str, stamp_ns: int, frame: str, *, pad: int = 0, bigendian: bool = False):
    """rosbags Image for ``array``; ``pad`` extra bytes per row, optional big-endian payload."""
    enc = encode_image(array, encoding)
    arr = np.asarray(array)
    if bigendian:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    row = np.ascontiguousarray(arr).view(np.uint8).reshape(enc.height, -1)
    if pad:
        row = np.concatenate([row, np.full((enc.height, pad), 0xAB, np.uint8)], axis=1)
    return T[IMAGE](
        header=_header(stamp_ns, frame), height=enc.height, width=enc.width, encoding=encoding,
        is_bigendian=int(bigendian), step=enc.step + pad, data=np.ascontiguousarray(row).reshape(-1),
    )


def make_info(cam: PinholeCamera, stamp_ns: int, frame: str):
    return T[INFO](
        header=_header(stamp_ns, frame), height=cam.height, width=cam.width, distortion_model="plumb_bob",
        d=np.zeros(5), k=cam.K.reshape(-1), r=np.eye(3).reshape(-1),
        p=np.concatenate([cam.K, np.zeros((3, 1))], 1).reshape(-1), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def make_tf(transforms: list[tuple[str, str, np.ndarray]], stamp_ns: int = 0):
    """TFMessage from (parent, child, T_parent_child) triples."""
    out = []
    for parent, child, M in transforms:
        q = se3.matrix_to_quaternion(M[:3, :3])
        t = M[:3, 3]
        out.append(T["geometry_msgs/msg/TransformStamped"](
            header=_header(stamp_ns, parent), child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
                rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
            ),
        ))
    return T[TF](transforms=out)


def make_cloud(points: np.ndarray, stamp_ns: int, frame: str, *, extra_pad: int = 4):
    """PointCloud2 with float32 x, y, z, intensity and ``extra_pad`` unused bytes per point."""
    n = len(points)
    fields = [T["sensor_msgs/msg/PointField"](name=nm, offset=4 * i, datatype=7, count=1) for i, nm in enumerate("xyz")]
    fields.append(T["sensor_msgs/msg/PointField"](name="intensity", offset=12, datatype=7, count=1))
    point_step = 16 + extra_pad
    buf = np.zeros((n, point_step), np.uint8)
    rec = np.concatenate([points.astype(np.float32), np.arange(n, dtype=np.float32)[:, None]], 1)
    buf[:, :16] = rec.view(np.uint8).reshape(n, 16)
    return T[CLOUD](
        header=_header(stamp_ns, frame), height=1, width=n, fields=fields, is_bigendian=False,
        point_step=point_step, row_step=point_step * n, data=buf.reshape(-1), is_dense=True,
    )


def write_messages(path: Path, items: list[tuple[str, str, int, object]], storage: str = "mcap") -> Path:
    """Write (topic, msgtype, log_time_ns, msg) items as a rosbag2 bag at ``path`` (a new folder)."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.open()
    connections = {}
    for topic, msgtype, t_ns, msg in sorted(items, key=lambda it: it[2]):
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
        writer.write(connections[topic], t_ns, TS.serialize_cdr(msg, msgtype))
    writer.close()
    return path


# ------------------------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    "encoding,dtype,shape",
    [("mono8", np.uint8, (3, 5)), ("mono16", np.uint16, (3, 5)), ("16UC1", np.uint16, (4, 3)),
     ("32FC1", np.float32, (2, 7)), ("rgb8", np.uint8, (3, 5, 3)), ("bgr8", np.uint8, (2, 4, 3))],
)
@pytest.mark.parametrize("pad", [0, 8])
@pytest.mark.parametrize("bigendian", [False, True])
def test_decode_roundtrip_with_padding_and_byte_order(encoding, dtype, shape, pad, bigendian):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        array = rng.uniform(0, 80, shape).astype(dtype)
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    msg = make_image(array, encoding, 0, "cam", pad=pad, bigendian=bigendian)
    out = image_to_numpy(msg)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_decode_is_zero_copy_for_native_padded_rows():
    data = np.arange(2 * 10, dtype=np.uint8)
    out = decode_image_buffer(data, height=2, width=4, step=10, encoding="mono16")
    assert np.shares_memory(out, data)
    assert out[1, 0] == 10 + 11 * 256  # row 1 starts at byte 10, little-endian


def test_to_rgb_swaps_bgr_and_replicates_mono():
    bgr = np.array([[[1, 2, 3]]], np.uint8)
    assert to_rgb(bgr, "bgr8").tolist() == [[[3, 2, 1]]]
    assert to_rgb(np.array([[7]], np.uint8), "mono8").tolist() == [[[7, 7, 7]]]


@pytest.mark.parametrize(
    "kwargs,reason",
    [(dict(encoding="yuv422"), "unknown_encoding"), (dict(step=7), "step_too_small"),
     (dict(height=9), "data_too_short"), (dict(width=0), "zero_size"), (dict(step=17), "step_misaligned")],
)
def test_decode_rejects_malformed(kwargs, reason):
    args = dict(height=2, width=4, step=8, encoding="mono16")
    args.update(kwargs)
    with pytest.raises(ImageDecodeError) as info:
        decode_image_buffer(bytes(64), **args)
    assert info.value.reason == reason


# --------------------------------------------------------------------------------------------- bags


def _sample_bag(path: Path, storage: str) -> Path:
    cam = PinholeCamera.from_hfov(8, 6, 60.0)
    items = []
    # Log times deliberately out of insertion order across topics; header stamps differ from log times.
    for i in range(3):
        stamp = 1_000_000_000 + i * 33_000_000
        items.append(("/thermal/image_raw", IMAGE, stamp + 5_000_000, make_image(np.full((6, 8), i, np.uint16), "mono16", stamp, "thermal_optical")))
    for i in range(2):
        stamp = 1_010_000_000 + i * 50_000_000
        items.append(("/rgb/image_raw", IMAGE, stamp, make_image(np.full((6, 8, 3), i, np.uint8), "rgb8", stamp, "rgb_optical")))
    items.append(("/thermal/camera_info", INFO, 1_000_000_000, make_info(cam, 1_000_000_000, "thermal_optical")))
    M = se3.make_transform(se3.rotation_about_axis([0, 1, 0], 0.1), [0.1, -0.02, 0.03])
    items.append(("/tf_static", TF, 900_000_000, make_tf([("base_link", "thermal_optical", se3.make_transform(np.eye(3), [0, 0, 1])), ("base_link", "rgb_optical", M)])))
    items.append(("/lidar/points", CLOUD, 1_020_000_000, make_cloud(np.array([[1, 2, 3], [np.nan, 0, 0], [4, 5, 6]], float), 1_020_000_000, "lidar")))
    return write_messages(path, items, storage)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_topics_counts_and_time_order(tmp_path, storage):
    bag = _sample_bag(tmp_path / "bag", storage)
    topics = {t.name: t for t in list_topics(bag)}
    assert topics["/thermal/image_raw"].count == 3 and topics["/thermal/image_raw"].msgtype == IMAGE
    assert topics["/rgb/image_raw"].count == 2 and topics["/tf_static"].count == 1
    with BagReader(bag) as reader:
        messages = list(reader.messages())
        times = [m.log_time_ns for m in messages]
        assert times == sorted(times) and len(messages) == 8
        thermal = [m for m in messages if m.topic == "/thermal/image_raw"]
        assert [m.stamp_ns for m in thermal] == [1_000_000_000, 1_033_000_000, 1_066_000_000]
        assert [int(image_to_numpy(m.msg)[0, 0]) for m in thermal] == [0, 1, 2]
        cam = camera_info_to_pinhole(reader.first_message("/thermal/camera_info").msg)
        assert cam == PinholeCamera.from_hfov(8, 6, 60.0)


def test_static_tf_lookup_chains_through_the_tree(tmp_path):
    bag = _sample_bag(tmp_path / "bag", "mcap")
    M = se3.make_transform(se3.rotation_about_axis([0, 1, 0], 0.1), [0.1, -0.02, 0.03])
    with BagReader(bag) as reader:
        tree = reader.static_transforms()
        T_rgb_thermal = tree.lookup("rgb_optical", "thermal_optical")
        expected = se3.invert(M) @ se3.make_transform(np.eye(3), [0, 0, 1])
        np.testing.assert_allclose(T_rgb_thermal, expected, atol=1e-9)
        np.testing.assert_allclose(tree.lookup("thermal_optical", "rgb_optical") @ T_rgb_thermal, np.eye(4), atol=1e-9)
        with pytest.raises(BagError, match="not in the static TF tree"):
            tree.lookup("rgb_optical", "nowhere")


def test_pointcloud2_fields_and_nan_rows(tmp_path):
    bag = _sample_bag(tmp_path / "bag", "mcap")
    with BagReader(bag) as reader:
        msg = reader.first_message("/lidar/points").msg
    xyz = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(xyz, np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    xyzi = pointcloud2_to_array(msg, ("x", "y", "z", "intensity"), drop_nan=False)
    assert xyzi.shape == (3, 4) and xyzi[2, 3] == 2.0
    with pytest.raises(BagError, match="lacks field"):
        pointcloud2_to_array(msg, ("x", "rgb"))


def test_missing_bag_and_missing_topic(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nope")
    bag = _sample_bag(tmp_path / "bag", "mcap")
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match="lacks topic.*/gt/depth"):
            list(reader.messages(["/gt/depth"]))


def test_not_a_bag(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("this: [is not\n")
    with pytest.raises(BagError, match="cannot open bag"):
        BagReader(tmp_path / "junk")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_raises_bag_error(tmp_path, storage):
    bag = _sample_bag(tmp_path / "bag", storage)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    blob = data_file.read_bytes()
    data_file.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BagError):
        with BagReader(bag) as reader:
            list(reader.messages())


# ------------------------------------------------------------- recordings: compressed, ROS 1, damaged
def test_compressed_topics_decode_to_the_raw_frames():
    from monother_ros.eval.bag_reader import decoded_encoding, resolve_image_topic
    from test_eval_offline import sim_recordings

    bags = sim_recordings()
    decoded: dict[str, list[np.ndarray]] = {}
    for kind in ("raw", "compressed", "compressed_ros1"):
        with BagReader(bags[kind]) as reader:
            thermal = resolve_image_topic(reader.topics, "/thermal/image_raw")
            rgb = resolve_image_topic(reader.topics, "/rgb/image_raw")
            assert (thermal == "/thermal/image_raw") == (kind == "raw")
            frames = []
            for m in reader.messages([thermal, rgb]):
                image = image_to_numpy(m.msg)
                frames.append((m.topic.split("/")[1], image, decoded_encoding(m.msg, image)))
            decoded[kind] = frames
    raw_thermal = [f for f in decoded["raw"] if f[0] == "thermal"]
    raw_rgb = [f for f in decoded["raw"] if f[0] == "rgb"]
    for kind in ("compressed", "compressed_ros1"):
        thermal = [f for f in decoded[kind] if f[0] == "thermal"]
        rgb = [f for f in decoded[kind] if f[0] == "rgb"]
        assert len(thermal) == len(raw_thermal) == 6 and len(rgb) == len(raw_rgb) == 4
        for (_, a, enc_a), (_, b, enc_b) in zip(raw_thermal, thermal):
            assert enc_a == enc_b == "mono16" and b.dtype == np.uint16
            np.testing.assert_array_equal(a, b)  # 16-bit PNG is lossless
        for (_, a, _), (_, b, enc_b) in zip(raw_rgb, rgb):
            assert enc_b == "rgb8" and b.shape == a.shape
            # JPEG drops the pixel noise; 16x16 block means (per channel, so RGB order matters) survive.
            blocks = [x.astype(np.float64).reshape(45, 16, 80, 16, 3).mean(axis=(1, 3)) for x in (a, b)]
            assert np.abs(blocks[0] - blocks[1]).mean() < 1.5


def test_ros1_bag_reads_like_its_ros2_source():
    from test_eval_offline import sim_recordings

    bags = sim_recordings()
    with BagReader(bags["raw"]) as ros2, BagReader(bags["raw_ros1"]) as ros1:
        assert ros1.ros_version == 1 and ros2.ros_version == 2
        assert {t.name: (t.msgtype, t.count) for t in ros1.topics.values()} == \
            {t.name: (t.msgtype, t.count) for t in ros2.topics.values()}
        info1 = ros1.first_message("/thermal/camera_info").msg
        assert hasattr(info1, "K") and not hasattr(info1, "k")  # ROS 1 field names
        assert camera_info_to_pinhole(info1) == camera_info_to_pinhole(ros2.first_message("/thermal/camera_info").msg)
        a = [(m.topic, m.stamp_ns) for m in ros2.messages()]
        b = [(m.topic, m.stamp_ns) for m in ros1.messages()]
        assert sorted(a) == sorted(b)
        np.testing.assert_allclose(ros1.static_transforms().lookup("rgb_optical_frame", "thermal_optical_frame"),
                                   ros2.static_transforms().lookup("rgb_optical_frame", "thermal_optical_frame"))
        cloud1 = pointcloud2_to_array(ros1.first_message("/lidar/points").msg)
        np.testing.assert_array_equal(cloud1, pointcloud2_to_array(ros2.first_message("/lidar/points").msg))
        assert json.loads(ros1.first_message("/rig/info").msg.data)["scenario"] == "night"


@pytest.mark.parametrize("as_folder", [False, True])
def test_crash_truncated_mcap_yields_the_messages_before_the_cut(tmp_path, as_folder):
    bag = _sample_bag(tmp_path / "bag", "mcap")
    storage = next(bag.glob("*.mcap"))
    with BagReader(bag) as reader:
        intact = [(m.topic, m.log_time_ns, m.stamp_ns) for m in reader.messages()]
    blob = storage.read_bytes()
    data_end = blob.find(b"\x0f" + (4).to_bytes(8, "little"))  # the DataEnd record (opcode 0x0f, 4 bytes)
    assert data_end > 0
    # Cut inside the summary (every chunk intact), in the middle, and only the last magic byte lost.
    for cut_at in (data_end + 5, int(len(blob) * 0.6), len(blob) - 1):
        target = tmp_path / f"cut_{cut_at}"
        if as_folder:
            shutil.copytree(bag, target)
            next(target.glob("*.mcap")).write_bytes(blob[:cut_at])
            # ros2 bag record writes metadata.yaml when it stops: a crashed recording folder has none.
            (target / "metadata.yaml").unlink()
        else:
            target = target.with_suffix(".mcap")
            target.write_bytes(blob[:cut_at])
        got = []
        with BagReader(target) as reader:
            if cut_at == len(blob) - 1:  # the footer survived: nothing is missing, no error
                assert not reader.salvaged
                got = [(m.topic, m.log_time_ns, m.stamp_ns) for m in reader.messages()]
                assert got == intact
                continue
            assert reader.salvaged
            with pytest.raises(BagError, match=r"truncated.*mcap recover"):
                for m in reader.messages():
                    got.append((m.topic, m.log_time_ns, m.stamp_ns))
        assert got and got == intact[: len(got)]
        if cut_at == data_end + 5:
            assert got == intact


def test_garbage_mcap_is_still_an_error(tmp_path):
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 3)
    with pytest.raises(BagError, match="nothing readable"):
        BagReader(bad)


@pytest.mark.parametrize("compression", [None, "bz2"])
def test_ros1_bag_without_index_yields_the_messages_before_the_cut(tmp_path, compression):
    from monother_ros.sim.bag import export_rosbag1

    source = _sample_bag(tmp_path / "bag", "mcap")
    ros1 = export_rosbag1(source, tmp_path / "whole.bag", compression=compression)
    with BagReader(ros1) as reader:
        assert not reader.salvaged
        intact = [(m.topic, m.log_time_ns, m.stamp_ns) for m in reader.messages()]
        thermal = [image_to_numpy(m.msg).copy() for m in reader.messages(["/thermal/image_raw"])]
    blob = ros1.read_bytes()
    index_at = blob.rfind(b"op=\x06")  # the first chunk-info record: the index starts near there
    for cut_at in (len(blob) - 10, index_at - 20):
        cut = tmp_path / f"cut_{cut_at}.bag"
        cut.write_bytes(blob[:cut_at])
        got, images = [], []
        with BagReader(cut) as reader:
            assert reader.salvaged and reader.ros_version == 1
            with pytest.raises(BagError, match="truncated.*rosbag reindex"):
                for m in reader.messages():
                    got.append((m.topic, m.log_time_ns, m.stamp_ns))
                    if m.topic == "/thermal/image_raw":
                        images.append(image_to_numpy(m.msg))
        assert sorted(got) == sorted(intact)  # the cuts are past the data: every message is there
        for a, b in zip(thermal, images):
            np.testing.assert_array_equal(a, b)
    # Cut inside the (single) chunk: the complete records before the cut are read.
    if compression is None:
        cut = tmp_path / "mid.bag"
        cut.write_bytes(blob[: blob.find(b"op=\x04") - 300])  # the chunk's last messages (before its index)
        with BagReader(cut) as reader:
            partial = []
            with pytest.raises(BagError, match="truncated"):
                for m in reader.messages():
                    partial.append((m.topic, m.log_time_ns, m.stamp_ns))
        assert partial and len(partial) < len(intact) and set(partial) <= set(intact)


def test_compressed_messages_decode_with_their_encoding():
    from monother_ros.core.image_codec import encode_compressed_image
    from monother_ros.eval.bag_reader import decoded_encoding, is_compressed_image, resolve_image_topic

    Compressed = T["sensor_msgs/msg/CompressedImage"]
    depth_mm = np.array([[0, 1500], [65535, 20000]], np.uint16)
    data, _ = encode_compressed_image(depth_mm, "16UC1", "png")
    header = np.zeros(12, np.uint8).tobytes()  # image_transport compressedDepth config header
    depth_msg = Compressed(header=_header(0, "cam"), format="16UC1; compressedDepth png",
                           data=np.frombuffer(header + data, np.uint8))
    image = image_to_numpy(depth_msg)
    assert is_compressed_image(depth_msg) and decoded_encoding(depth_msg, image) == "16UC1"
    np.testing.assert_array_equal(image, depth_mm)
    mono8, fmt = encode_compressed_image(np.full((3, 4), 9, np.uint8), "mono8", "jpeg")
    msg = Compressed(header=_header(0, "cam"), format=fmt, data=np.frombuffer(mono8, np.uint8))
    assert decoded_encoding(msg, image_to_numpy(msg)) == "mono8"
    bad = Compressed(header=_header(0, "cam"), format="mono16; png compressed", data=np.frombuffer(mono8, np.uint8))
    with pytest.raises(BagError, match="malformed CompressedImage.*8-bit"):
        image_to_numpy(bad)
    topics = ["/thermal/image_raw/compressed", "/gt/depth/compressedDepth", "/rgb/image_raw", "/rgb/image_raw/compressed"]
    assert resolve_image_topic(topics, "/thermal/image_raw") == "/thermal/image_raw/compressed"
    assert resolve_image_topic(topics, "/gt/depth") == "/gt/depth/compressedDepth"
    assert resolve_image_topic(topics, "/rgb/image_raw") == "/rgb/image_raw"  # raw wins when both exist
    assert resolve_image_topic(topics, "/nothing") == "/nothing"

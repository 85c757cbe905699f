"""The simulated rig's rosbag2 bags: topics, types, counts, rates, encodings, frames, determinism, atomicity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monother_ros.errors import ConfigError
from monother_ros.sim import bag as simbag
from monother_ros.sim.bag import SIM_EPOCH_NS, preview_path_for, write_bag
from monother_ros.sim.rig import SimRig

EXPECTED_TYPES = {
    "/thermal/image_raw": "sensor_msgs/msg/Image",
    "/thermal/camera_info": "sensor_msgs/msg/CameraInfo",
    "/rgb/image_raw": "sensor_msgs/msg/Image",
    "/rgb/camera_info": "sensor_msgs/msg/CameraInfo",
    "/gt/depth": "sensor_msgs/msg/Image",
    "/lidar/points": "sensor_msgs/msg/PointCloud2",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/rig/info": "std_msgs/msg/String",
}


def _read_all(path: Path) -> tuple[dict[str, list], dict[str, str], object]:
    """topic -> [(bag timestamp, decoded message, raw bytes)], topic -> type, metadata.yaml contents."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    out: dict[str, list] = {}
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, store.deserialize_cdr(raw, conn.msgtype), bytes(raw)))
    import yaml

    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return out, types, meta


@pytest.fixture(scope="module")
def one_second_bag(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("simbag") / "night_urban"
    summary = write_bag(path, seconds=1.0, seed=5, scenario="night", family="urban", storage="mcap")
    return path, summary


@pytest.mark.slow
def test_bag_topics_types_counts(one_second_bag) -> None:
    path, summary = one_second_bag
    msgs, types, meta = _read_all(path)
    assert types == EXPECTED_TYPES
    counts = {k: len(v) for k, v in msgs.items()}
    assert counts == {"/thermal/image_raw": 30, "/thermal/camera_info": 30, "/gt/depth": 30, "/rgb/image_raw": 20,
                      "/rgb/camera_info": 20, "/lidar/points": 10, "/tf_static": 1, "/rig/info": 1}
    assert summary.counts == counts
    info = json.loads(meta["custom_data"][simbag.CUSTOM_DATA_KEY])
    assert (info["seed"], info["scenario"], info["family"]) == (5, "night", "urban")
    assert json.loads(msgs["/rig/info"][0][1].data) == info


@pytest.mark.slow
def test_bag_encodings_frames_stamps_rates(one_second_bag) -> None:
    path, _ = one_second_bag
    msgs, _, _ = _read_all(path)
    rig = SimRig(5, "night", "urban")

    def stamp_ns(m) -> int:
        return m.header.stamp.sec * 10**9 + m.header.stamp.nanosec

    for topic, enc, frame, shape, step in (
        ("/thermal/image_raw", "mono16", "thermal_optical_frame", (512, 640), 1280),
        ("/gt/depth", "32FC1", "thermal_optical_frame", (512, 640), 2560),
        ("/rgb/image_raw", "rgb8", "rgb_optical_frame", (720, 1280), 3840),
    ):
        for bag_t, m, _ in msgs[topic]:
            got = (m.encoding, m.header.frame_id, (m.height, m.width), m.step, m.is_bigendian)
            assert got == (enc, frame, shape, step, 0)
            assert stamp_ns(m) == bag_t and bag_t >= SIM_EPOCH_NS
    th_t = np.array([t for t, _, _ in msgs["/thermal/image_raw"]])
    rgb_t = np.array([t for t, _, _ in msgs["/rgb/image_raw"]])
    np.testing.assert_allclose(np.diff(th_t), 1e9 / 30, atol=1)  # 30 Hz
    d_rgb = np.diff(rgb_t)
    assert abs(d_rgb.mean() - 5e7) < 3e6 and d_rgb.std() > 5e5 and np.all(np.abs(d_rgb - 5e7) < 7e6)  # ~20 Hz, jittered
    # Never synchronised: every RGB stamp is at least 4 ms from every thermal stamp.
    assert np.min(np.abs(rgb_t[:, None] - th_t[None, :])) > 4e6
    np.testing.assert_allclose(np.diff([t for t, _, _ in msgs["/lidar/points"]]), 1e8, atol=1)
    # GT depth at every thermal stamp; camera_info at every image stamp, matching the rig's intrinsics.
    assert [t for t, _, _ in msgs["/gt/depth"]] == th_t.tolist()
    for topic, image_topic, cam, frame in (
            ("/thermal/camera_info", "/thermal/image_raw", rig.thermal_camera, "thermal_optical_frame"),
            ("/rgb/camera_info", "/rgb/image_raw", rig.rgb_camera, "rgb_optical_frame")):
        assert [t for t, _, _ in msgs[topic]] == [t for t, _, _ in msgs[image_topic]]
        info = msgs[topic][0][1]
        assert info.header.frame_id == frame and (info.width, info.height) == (cam.width, cam.height)
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), cam.K)
    depth = np.frombuffer(msgs["/gt/depth"][3][1].data.tobytes(), "<f4").reshape(512, 640)
    assert np.isnan(depth).any() and np.nanmax(depth) <= 80.0 and np.nanmin(depth) > 0.5
    cloud = msgs["/lidar/points"][0][1]
    assert cloud.header.frame_id == "lidar_link"
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
    assert cloud.point_step == 16 and cloud.row_step == 16 * cloud.width and cloud.width > 5000
    tf = msgs["/tf_static"][0][1]
    got = {(t.header.frame_id, t.child_frame_id): t.transform for t in tf.transforms}
    for child, T in (("thermal_optical_frame", rig.T_base_thermal), ("rgb_optical_frame", rig.T_base_rgb),
                     ("lidar_link", rig.T_base_lidar)):
        tr = got[("base_link", child)].translation
        np.testing.assert_allclose([tr.x, tr.y, tr.z], T[:3, 3], atol=1e-9)


@pytest.mark.slow
def test_bag_opens_with_mcap_ros2_decoder(one_second_bag) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path, _ = one_second_bag
    files = list(path.glob("*.mcap"))
    assert len(files) == 1 and files[0].name == f"{path.name}.mcap"
    counts: dict[str, int] = {}
    with open(files[0], "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/thermal/image_raw" and counts[channel.topic] == 1:
                assert schema.name == "sensor_msgs/msg/Image" and decoded.encoding == "mono16"
                img = np.frombuffer(bytes(decoded.data), "<u2").reshape(decoded.height, decoded.width)
                assert img.std() > 50  # a real image, not a constant
    assert counts["/thermal/image_raw"] == 30 and counts["/rgb/image_raw"] == 20 and counts["/tf_static"] == 1


@pytest.mark.slow
def test_preview_written_next_to_bag(one_second_bag) -> None:
    from PIL import Image

    path, summary = one_second_bag
    assert summary.preview == preview_path_for(path) and summary.preview.is_file()
    with Image.open(summary.preview) as im:
        assert im.format == "PNG" and im.width >= 320 + 455 + 320 and im.height >= 3 * 256
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def images(p: Path, seed: int, storage: str) -> dict[str, list[bytes]]:
        write_bag(p, seconds=0.12, seed=seed, scenario="day", family="campus", storage=storage, workers=0,
                  preview=False)
        msgs, _, _ = _read_all(p)
        return {t: [raw for _, _, raw in msgs[t]] for t in ("/thermal/image_raw", "/rgb/image_raw", "/gt/depth")}

    a = images(tmp_path / "a", 11, "mcap")
    b = images(tmp_path / "b", 11, "sqlite3")  # the storage does not change the data
    c = images(tmp_path / "c", 12, "mcap")
    assert len(a["/thermal/image_raw"]) == 4 and len(a["/rgb/image_raw"]) == 3
    assert a == b
    for topic in a:
        assert all(x != y for x, y in zip(a[topic], c[topic])), topic


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = SimRig.render_rgb

    def failing(self, t, camera=None, *, noise=True):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated crash")
        return real(self, t, camera, noise=noise)

    monkeypatch.setattr(SimRig, "render_rgb", failing)
    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_bag(out, seconds=0.3, seed=1, workers=0)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_raise_before_writing(tmp_path: Path) -> None:
    for kwargs in ({"scenario": "dusk"}, {"family": "desert"}, {"storage": "rosbag1"}, {"seconds": -1.0},
                   {"seconds": 0.0}, {"seconds": float("nan")}):
        args = {"seconds": 0.1, "seed": 0, **kwargs}
        with pytest.raises(ConfigError):
            write_bag(tmp_path / "x", **args)
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="exists"):
        write_bag(tmp_path / "exists", seconds=0.1, seed=0)
    with pytest.raises(ConfigError, match="does not exist"):
        write_bag(tmp_path / "no" / "such" / "bag", seconds=0.1, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]

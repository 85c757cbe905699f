"""Write the simulated rig to a rosbag2 bag (mcap or sqlite3) through ``rosbags``; no rclpy.

Topics (header stamps = ``SIM_EPOCH_NS`` + simulation time; bag timestamps equal header stamps):

============================  ===========================  ===============================================
topic                         type                         content
============================  ===========================  ===============================================
``/thermal/image_raw``        sensor_msgs/msg/Image        mono16, 640x512, ``thermal_optical_frame``, 30 Hz
``/thermal/camera_info``      sensor_msgs/msg/CameraInfo   every thermal stamp, plumb_bob with zero distortion
``/rgb/image_raw``            sensor_msgs/msg/Image        rgb8, 1280x720, ``rgb_optical_frame``, ~20 Hz jittered
``/rgb/camera_info``          sensor_msgs/msg/CameraInfo   every RGB stamp
``/gt/depth``                 sensor_msgs/msg/Image        32FC1 metres (optical z, NaN invalid) at every thermal
                                                           stamp, ``thermal_optical_frame``
``/lidar/points``             sensor_msgs/msg/PointCloud2  x, y, z, intensity float32, ``lidar_link``, 10 Hz
``/tf_static``                tf2_msgs/msg/TFMessage       base_link -> thermal_optical_frame, rgb_optical_frame,
                                                           lidar_link (one message, transient-local QoS)
``/rig/info``                 std_msgs/msg/String          JSON: seed, scenario, family, ... (one message,
                                                           transient-local QoS)
============================  ===========================  ===============================================

With ``compress`` (e.g. ``{"thermal": "png", "rgb": "jpeg"}``) a camera stream is recorded the way
image_transport's ``compressed`` transport publishes it instead: ``/thermal/image_raw/compressed`` /
``/rgb/image_raw/compressed`` (sensor_msgs/msg/CompressedImage; thermal as 16-bit PNG, RGB as JPEG or PNG,
format strings as image_transport writes them) in place of the raw topic.

``export_rosbag1`` converts a written bag into a ROS 1 ``.bag`` (ROS 1 Noetic message definitions).

The same JSON text is also in the bag's ``metadata.yaml`` under ``rosbag2_bagfile_information.custom_data``
(rosbag2 metadata v9, as ``ros2 bag record --custom-data`` writes it), key ``monother.rig``.

Atomicity: the bag is written to a hidden temporary sibling directory and renamed when complete; the
preview mosaic ``<bag>_preview.png`` is written next to the bag the same way. A failing or interrupted
run removes its temporary files and leaves no bag.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from monother_ros.core.se3 import matrix_to_quaternion
from monother_ros.errors import BagError, ConfigError
from monother_ros.sim.rig import (
    BASE_FRAME, COUNTS_AT_0C, COUNTS_PER_K, LIDAR_FRAME, MAX_DEPTH_M, RGB_FRAME, THERMAL_FRAME, SensorEvent, SimRig,
)
from monother_ros.sim.scene import FAMILIES
from monother_ros.sim.shading import SCENARIOS

_log = logging.getLogger(__name__)

SIM_EPOCH_NS = 1_700_000_000 * 10**9
TOPIC_THERMAL = "/thermal/image_raw"
TOPIC_THERMAL_INFO = "/thermal/camera_info"
TOPIC_RGB = "/rgb/image_raw"
TOPIC_RGB_INFO = "/rgb/camera_info"
TOPIC_DEPTH = "/gt/depth"
TOPIC_LIDAR = "/lidar/points"
TOPIC_TF_STATIC = "/tf_static"
TOPIC_INFO = "/rig/info"
CUSTOM_DATA_KEY = "monother.rig"
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
COMPRESSED_SUFFIX = "/compressed"  # image_transport's compressed transport topic
# stream -> codecs it may be compressed with (thermal is 16-bit: PNG only).
COMPRESSIBLE: dict[str, tuple[str, ...]] = {"thermal": ("png",), "rgb": ("jpeg", "png")}
_PREVIEW_FRAMES = 3


@dataclass
class BagSummary:
    """What ``write_bag`` wrote.

    Attributes:
        path: the bag directory; preview: the preview PNG; counts: messages per topic; seconds: simulated
        duration; wall_s: time taken to write; info: the rig description stored in the bag.
    """

    path: Path
    preview: Path | None
    counts: dict[str, int]
    seconds: float
    wall_s: float
    storage: str
    info: dict = field(default_factory=dict)


def preview_path_for(bag: Path) -> Path:
    """Where ``write_bag`` puts the preview mosaic of ``bag``: ``<bag>_preview.png`` beside it."""
    bag = Path(bag)
    return bag.with_name(bag.name + "_preview.png")


def check_output_path(path: Path) -> Path:
    """Raise ``ConfigError`` when a bag cannot be created at ``path``; return it absolute."""
    path = Path(path).expanduser().absolute()
    if path.exists():
        raise ConfigError(f"output {path} already exists; refusing to overwrite")
    parent = path.parent
    if not parent.exists():
        raise ConfigError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"output parent {parent} is not a directory")
    # Probe by creating (and removing) a folder: os.access says yes to root even where mkdir fails.
    probe = parent / f".{path.name}.probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise ConfigError(f"output directory {parent} is not writable ({exc.strerror})") from None
    if preview_path_for(path).exists():
        raise ConfigError(f"preview {preview_path_for(path)} already exists; refusing to overwrite")
    return path


# --- message construction ---------------------------------------------------------------------------
class _Messages:
    """Builds and serialises messages with the rosbags type store (ROS 2 Kilted; Humble-identical types)."""

    def __init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        t = self.store.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.Image = t["sensor_msgs/msg/Image"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.RegionOfInterest = t["sensor_msgs/msg/RegionOfInterest"]
        self.PointCloud2 = t["sensor_msgs/msg/PointCloud2"]
        self.PointField = t["sensor_msgs/msg/PointField"]
        self.TFMessage = t["tf2_msgs/msg/TFMessage"]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]
        self.String = t["std_msgs/msg/String"]
        self.CompressedImage = t["sensor_msgs/msg/CompressedImage"]

    def header(self, stamp_ns: int, frame_id: str):
        return self.Header(stamp=self.Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)

    def serialize(self, msg, msgtype: str) -> bytes:
        return self.store.serialize_cdr(msg, msgtype)

    def image(self, stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str):
        data = np.ascontiguousarray(array)
        h, w = data.shape[:2]
        return self.Image(header=self.header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                          is_bigendian=0, step=data.nbytes // h, data=data.view(np.uint8).reshape(-1))

    def compressed_image(self, stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str, codec: str):
        from monother_ros.core.image_codec import encode_compressed_image

        data, fmt = encode_compressed_image(array, encoding, codec)
        return self.CompressedImage(header=self.header(stamp_ns, frame_id), format=fmt,
                                    data=np.frombuffer(data, dtype=np.uint8))

    def camera_info(self, stamp_ns: int, frame_id: str, camera):
        K = camera.K
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(
            header=self.header(stamp_ns, frame_id), height=camera.height, width=camera.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
            p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def cloud(self, stamp_ns: int, frame_id: str, points: np.ndarray):
        pts = np.ascontiguousarray(points, dtype="<f4")
        fields = [self.PointField(name=n, offset=4 * i, datatype=self.PointField.FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]
        return self.PointCloud2(header=self.header(stamp_ns, frame_id), height=1, width=pts.shape[0],
                                fields=fields, is_bigendian=False, point_step=16, row_step=16 * pts.shape[0],
                                data=pts.view(np.uint8).reshape(-1), is_dense=True)

    def tf_static(self, stamp_ns: int, transforms: list[tuple[str, str, np.ndarray]]):
        out = []
        for parent, child, T in transforms:
            q = matrix_to_quaternion(T[:3, :3])
            out.append(self.TransformStamped(
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=self.Transform(
                    translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                    rotation=self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))))
        return self.TFMessage(transforms=out)


def _qos(latched: bool):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1 if latched else 10, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
                deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
                liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)]


# --- parallel rendering -------------------------------------------------------------------------------
_WORKER_RIG: SimRig | None = None


def _worker_init(seed: int, scenario: str, family: str) -> None:
    global _WORKER_RIG
    # Ctrl-C goes to the whole process group: only the writer handles it (and cleans up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_RIG = SimRig(seed, scenario, family)  # type: ignore[arg-type]


def _render_event(event: SensorEvent, rig: SimRig | None = None):
    rig = rig or _WORKER_RIG
    assert rig is not None  # set by _worker_init in every worker process
    if event.kind == "thermal":
        frame = rig.render_thermal(event.t)
        return frame.counts, frame.depth
    if event.kind == "rgb":
        return rig.render_rgb(event.t).rgb
    return rig.lidar_scan(event.t)


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def write_bag(path: str | Path, *, seconds: float, seed: int, scenario: str = "day", family: str = "urban",
              storage: Literal["mcap", "sqlite3"] = "mcap", workers: int | None = None,
              preview: bool = True, compress: Mapping[str, str] | None = None) -> BagSummary:
    """Simulate ``seconds`` of the rig and write a rosbag2 bag at ``path`` (a new directory).

    Args:
        path: the bag directory to create; must not exist.
        seconds: simulated duration (> 0), seconds.
        seed: scene / trajectory / noise seed.
        scenario: ``day``, ``night`` or ``fog``; family: ``urban`` or ``campus``.
        storage: ``mcap`` or ``sqlite3``.
        workers: rendering processes (default: up to 2; 0 renders in this process).
        preview: also write ``<bag>_preview.png`` (see ``preview_path_for``).
        compress: stream (``thermal``, ``rgb``) -> codec (``png``; ``jpeg`` for RGB): record that stream
            on ``<topic>/compressed`` as sensor_msgs/CompressedImage instead of the raw topic.

    Returns:
        A ``BagSummary``.

    Raises:
        ConfigError: bad arguments or an output that exists / cannot be written.
        BagError: writing failed (nothing is left behind).
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if storage not in STORAGES:
        raise ConfigError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"duration must be a positive number of seconds, got {seconds}")
    compress = dict(compress or {})
    for stream, codec in compress.items():
        if codec not in COMPRESSIBLE.get(stream, ()):
            raise ConfigError(f"cannot compress stream {stream!r} as {codec!r}; choose from "
                              + "; ".join(f"{k}: {', '.join(v)}" for k, v in COMPRESSIBLE.items()))
    path = check_output_path(Path(path))
    preview_file = preview_path_for(path)
    # The bag is built inside a hidden sibling folder (so its storage file already has its final name)
    # and moved into place only when complete.
    tmp_dir = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()
    tmp = tmp_dir / path.name
    start = time.perf_counter()
    rig = SimRig(seed, scenario, family)  # type: ignore[arg-type]
    info = {"seed": int(seed), "scenario": scenario, "family": family, "seconds": float(seconds),
            "epoch_ns": SIM_EPOCH_NS, "thermal_frame": THERMAL_FRAME, "rgb_frame": RGB_FRAME,
            "lidar_frame": LIDAR_FRAME, "base_frame": BASE_FRAME, "generator": "monother_ros.sim",
            "max_depth_m": MAX_DEPTH_M,
            # Nominal radiometric scale of the mono16 counts (before fixed-pattern noise and vignetting).
            "thermal_counts_at_0c": COUNTS_AT_0C, "thermal_counts_per_k": COUNTS_PER_K}
    try:
        counts, previews = _write(tmp, rig, seconds, storage, info, _default_workers() if workers is None else workers,
                                  preview, compress)
        if preview and previews:
            from monother_ros.sim.preview import save_png

            save_png(_preview_image(previews), preview_file)
        try:
            os.rename(tmp, path)
        except OSError as exc:
            preview_file.unlink(missing_ok=True)
            raise BagError(f"cannot move the finished bag to {path}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    shutil.rmtree(tmp_dir, ignore_errors=True)
    wall = time.perf_counter() - start
    _log.info("wrote %s (%.1f s simulated) in %.1f s", path, seconds, wall)
    return BagSummary(path, preview_file if preview else None, counts, float(seconds), wall, storage, info)


def _write(tmp: Path, rig: SimRig, seconds: float, storage: str, info: dict, workers: int,
           want_preview: bool, compress: Mapping[str, str]) -> tuple[dict[str, int], list]:
    from rosbags.rosbag2 import StoragePlugin, Writer

    msgs = _Messages()
    events = rig.schedule(seconds)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    counts: dict[str, int] = {}
    n_thermal = sum(e.kind == "thermal" for e in events)
    picks = np.linspace(0, max(n_thermal - 1, 0), min(_PREVIEW_FRAMES, n_thermal))
    preview_idx = set(picks.round().astype(int).tolist())
    previews: list[dict] = []
    last_rgb = None
    with Writer(tmp, version=9, storage_plugin=plugin) as writer:
        writer.set_custom_data(CUSTOM_DATA_KEY, json.dumps(info, sort_keys=True))
        conns = {}
        image, info_t, cloud_t = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/PointCloud2"
        compressed_t = "sensor_msgs/msg/CompressedImage"
        # (topic, type) of each camera stream: raw, or image_transport's compressed sub-topic.
        streams = {name: (topic + COMPRESSED_SUFFIX, compressed_t) if name in compress else (topic, image)
                   for name, topic in (("thermal", TOPIC_THERMAL), ("rgb", TOPIC_RGB))}
        specs = [(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", True), (TOPIC_INFO, "std_msgs/msg/String", True),
                 (*streams["thermal"], False), (TOPIC_THERMAL_INFO, info_t, False), (TOPIC_DEPTH, image, False),
                 (*streams["rgb"], False), (TOPIC_RGB_INFO, info_t, False), (TOPIC_LIDAR, cloud_t, False)]
        for topic, msgtype, latched in specs:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=msgs.store,
                                                 offered_qos_profiles=_qos(latched))
            counts[topic] = 0

        def put(topic: str, stamp_ns: int, msg, msgtype: str) -> None:
            writer.write(conns[topic], stamp_ns, msgs.serialize(msg, msgtype))
            counts[topic] += 1

        def put_image(stream: str, stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str) -> None:
            topic, msgtype = streams[stream]
            if stream in compress:
                msg = msgs.compressed_image(stamp_ns, frame_id, array, encoding, compress[stream])
            else:
                msg = msgs.image(stamp_ns, frame_id, array, encoding)
            put(topic, stamp_ns, msg, msgtype)

        t0 = SIM_EPOCH_NS
        put(TOPIC_TF_STATIC, t0, msgs.tf_static(t0, [(BASE_FRAME, THERMAL_FRAME, rig.T_base_thermal),
                                                      (BASE_FRAME, RGB_FRAME, rig.T_base_rgb),
                                                      (BASE_FRAME, LIDAR_FRAME, rig.T_base_lidar)]),
            "tf2_msgs/msg/TFMessage")
        put(TOPIC_INFO, t0, msgs.String(data=json.dumps(info, sort_keys=True)), "std_msgs/msg/String")
        thermal_index = 0
        for event, result in _rendered(events, rig, workers):
            stamp = SIM_EPOCH_NS + event.stamp_ns
            if event.kind == "thermal":
                counts_img, depth = result
                put_image("thermal", stamp, THERMAL_FRAME, counts_img, "mono16")
                put(TOPIC_THERMAL_INFO, stamp, msgs.camera_info(stamp, THERMAL_FRAME, rig.thermal_camera),
                    "sensor_msgs/msg/CameraInfo")
                put(TOPIC_DEPTH, stamp, msgs.image(stamp, THERMAL_FRAME, depth, "32FC1"), "sensor_msgs/msg/Image")
                if want_preview and thermal_index in preview_idx:
                    previews.append({"thermal": counts_img, "depth": depth, "rgb": last_rgb})
                thermal_index += 1
            elif event.kind == "rgb":
                put_image("rgb", stamp, RGB_FRAME, result, "rgb8")
                put(TOPIC_RGB_INFO, stamp, msgs.camera_info(stamp, RGB_FRAME, rig.rgb_camera),
                    "sensor_msgs/msg/CameraInfo")
                last_rgb = result
                for p in previews:
                    if p["rgb"] is None:
                        p["rgb"] = result
            else:
                put(TOPIC_LIDAR, stamp, msgs.cloud(stamp, LIDAR_FRAME, result), "sensor_msgs/msg/PointCloud2")
    return counts, previews


def export_rosbag1(source: str | Path, target: str | Path, *, compression: Literal["bz2", "lz4"] | None = None) -> Path:
    """Convert a rosbag2 bag (as ``write_bag`` writes it) into a ROS 1 bag file at ``target``.

    Messages are migrated to the ROS 1 Noetic definitions (``Header.seq`` added, ``CameraInfo.K``/``D``/
    ``R``/``P`` upper case) by ``rosbags``' converter, which writes through ``rosbags.rosbag1.Writer``;
    types Noetic lacks (tf2_msgs/TFMessage) keep the source's definition. The metadata's custom data
    has no place in a ROS 1 bag; ``/rig/info`` carries the same text. Written atomically.

    Args:
        source: the rosbag2 bag (directory or storage file).
        target: the ``.bag`` file to create; must not exist.
        compression: chunk compression (None: uncompressed chunks, as ``rosbag record`` writes by default).

    Raises:
        ConfigError: ``target`` exists, does not end in ``.bag``, or cannot be written.
        BagError: the conversion failed (nothing is left behind).
    """
    import contextlib
    import io

    from rosbags.convert import ConverterError, convert
    from rosbags.typesys import Stores, get_typestore

    target = Path(target)
    if target.suffix != ".bag":
        raise ConfigError(f"a ROS 1 bag file name ends in .bag, got {target}")
    target = check_output_path(target)
    tmp = target.with_name(f".{target.stem}.partial-{os.getpid()}.bag")
    tmp.unlink(missing_ok=True)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # the converter prints its notes
            convert([Path(source)], tmp, "mcap", 9, compression, "file", None, get_typestore(Stores.ROS1_NOETIC),
                    [], [], [], [])
        os.rename(tmp, target)
    except ConverterError as exc:
        tmp.unlink(missing_ok=True)
        raise BagError(f"cannot convert {source} to a ROS 1 bag: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if log.getvalue().strip():
        _log.debug("rosbag1 conversion of %s: %s", source, log.getvalue().strip())
    return target


def _rendered(events: list[SensorEvent], rig: SimRig, workers: int):
    """Yield (event, rendered data) in event order, rendering ahead in ``workers`` processes."""
    if workers <= 0:
        for e in events:
            yield e, _render_event(e, rig)
        return
    # fork is fast, but forking a process that runs other threads (an rclpy executor, say) can deadlock.
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    window = 4 * workers  # bounded read-ahead keeps memory flat
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(rig.seed, rig.scenario, rig.family)) as pool:
        pending: list[tuple[SensorEvent, Future]] = []
        it = iter(events)
        try:
            for e in it:
                pending.append((e, pool.submit(_render_event, e)))
                if len(pending) >= window:
                    ev, fut = pending.pop(0)
                    yield ev, fut.result()
            while pending:
                ev, fut = pending.pop(0)
                yield ev, fut.result()
        except BaseException:
            for _, fut in pending:
                fut.cancel()
            raise


def _preview_image(previews: list[dict]) -> np.ndarray:
    from monother_ros.sim.preview import colorize_depth, colorize_thermal, mosaic

    rows = []
    for p in previews:
        row = [colorize_thermal(p["thermal"])]
        if p["rgb"] is not None:
            row.append(p["rgb"])
        row.append(colorize_depth(p["depth"]))
        rows.append(row)
    return mosaic(rows, tile_height=256)

"""The MS2 (Multi-Spectral Stereo) dataset layout and its conversion into a rosbag2 bag.

Layout (as read by the MonoTher-Depth reference ``zoedepth/data/ms2thermal.py``)::

    ROOT/sync_data/<seq>/thr/img_left/NNNNNN.png        16-bit thermal (640x256)
    ROOT/sync_data/<seq>/rgb/img_left/NNNNNN.png        8-bit RGB
    ROOT/sync_data/<seq>/calib.npy                      pickled dict: K_rgbL, K_thrL (3x3), R_nir2thr,
                                                        T_nir2thr, R_nir2rgb, T_nir2rgb (translations in mm)
    ROOT/proj_depth/<seq>/thr/depth_filtered/NNNNNN.png uint16 = metres x 256, 0 = no depth
    ROOT/[splits/]test_{day,night,rainy}_list.txt      sequence names per condition

Extrinsics: ``[R_nir2thr | T_nir2thr * 1e-3]`` maps points of the left NIR camera (the calibration's
reference) into the left thermal camera (``T_thr_nir``), likewise for RGB, so
``T_rgb_thr = T_rgb_nir @ inv(T_thr_nir)`` (the reference's ``pose_t2rgb``).

``import_sequence`` writes a bag with the simulator's topics (``sim.bag``): ``/thermal/image_raw``
(mono16), ``/thermal/camera_info``, ``/rgb/image_raw`` (rgb8), ``/rgb/camera_info``, ``/gt/depth`` (32FC1
metres, NaN invalid, thermal frame; only for frames with a depth map), ``/tf_static`` (``base_link`` ->
``nir_optical_frame`` (the NIR camera looking along base_link's x) -> ``thermal_optical_frame``,
``rgb_optical_frame``) and ``/rig/info`` + metadata ``custom_data['monother.rig']`` (JSON: source,
sequence, scenario). MS2's sync_data carries no timestamps, so stamps are synthetic: frame k at
``MS2_EPOCH_NS + k / rate``. Thermal, RGB and depth of a frame share its stamp (MS2 is synchronised).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.core.safe_npy import UnsafeDataError, load_npy_data
from monother_ros.errors import BagError, ConfigError

__all__ = [
    "CALIB_KEYS",
    "MS2_CONDITIONS",
    "ImportSummary",
    "import_sequence",
    "ms2_extrinsics",
    "read_calib",
    "sequence_condition",
]

LOG = logging.getLogger(__name__)

CALIB_KEYS: tuple[str, ...] = ("K_rgbL", "K_thrL", "R_nir2thr", "T_nir2thr", "R_nir2rgb", "T_nir2rgb")
# Split list name -> condition tag.
MS2_CONDITIONS: dict[str, str] = {"test_day": "day", "test_night": "night", "test_rainy": "rain"}
MS2_EPOCH_NS = 1_600_000_000 * 10**9
DEFAULT_RATE_HZ = 15.0
NIR_FRAME = "nir_optical_frame"


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Load an MS2 ``calib.npy`` (a pickled dict) and check the keys this package uses.

    The pickle is read by ``core.safe_npy.load_npy_data``: only numpy arrays, scalars, dtypes and plain
    containers are rebuilt, any other global (code) is refused before it runs.

    Raises:
        ConfigError: missing file, refused or malformed content, not a dict, a missing key or a wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"MS2 calibration {path} does not exist")
    try:
        # The file is a pickled dict: read it as data only (a crafted pickle cannot run code here).
        calib = load_npy_data(path)
    except UnsafeDataError as exc:
        raise ConfigError(f"cannot read MS2 calibration {path}: {exc}") from None
    if not isinstance(calib, Mapping):
        raise ConfigError(f"MS2 calibration {path} is not a dict")
    missing = [k for k in CALIB_KEYS if k not in calib]
    if missing:
        raise ConfigError(f"MS2 calibration {path} lacks {', '.join(missing)} (has {', '.join(map(str, calib))})")
    out = {k: np.asarray(calib[k], dtype=np.float64) for k in CALIB_KEYS}
    for k in ("K_rgbL", "K_thrL", "R_nir2thr", "R_nir2rgb"):
        if out[k].shape != (3, 3):
            raise ConfigError(f"MS2 calibration {path}: {k} has shape {out[k].shape}, expected (3, 3)")
    for k in ("T_nir2thr", "T_nir2rgb"):
        if out[k].size != 3:
            raise ConfigError(f"MS2 calibration {path}: {k} has {out[k].size} values, expected 3")
        out[k] = out[k].reshape(3)
    return out


def ms2_extrinsics(calib: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(T_thr_nir, T_rgb_nir)``: 4x4, metres (MS2 translations are millimetres)."""
    def extrinsic(target: str) -> np.ndarray:
        translation_m = np.asarray(calib[f"T_nir2{target}"], float).reshape(3) * 1e-3  # MS2: millimetres
        return se3.make_transform(np.asarray(calib[f"R_nir2{target}"], float), translation_m)

    return extrinsic("thr"), extrinsic("rgb")


def sequence_condition(root: str | Path, sequence: str) -> str | None:
    """Condition tag (day / night / rain) of ``sequence`` from the MS2 test split lists, or None."""
    root = Path(root)
    for split, tag in MS2_CONDITIONS.items():
        for folder in (root, root / "splits"):
            lst = folder / f"{split}_list.txt"
            if lst.is_file() and sequence in {line.strip() for line in lst.read_text().splitlines()}:
                return tag
    return None


def read_png(path: Path) -> np.ndarray:
    """An MS2 PNG as stored (uint16 thermal / depth, uint8 RGB); ConfigError when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.array(image)
    except OSError as exc:
        raise ConfigError(f"cannot read image {path}: {exc}") from exc


@dataclass
class ImportSummary:
    """What ``import_sequence`` wrote: the bag path, frames, frames with ground truth, condition."""

    path: Path
    frames: int
    with_gt: int
    condition: str


class _Builder:
    """rosbags messages of the standard topics."""

    def __init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        self.t = self.store.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        t = self.t
        stamp = t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str) -> Any:
        data = np.ascontiguousarray(array)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        h, w = data.shape[:2]
        return self.t["sensor_msgs/msg/Image"](header=self.header(stamp_ns, frame_id), height=h, width=w,
                                               encoding=encoding, is_bigendian=0, step=data.nbytes // h,
                                               data=data.view(np.uint8).reshape(-1))

    def camera_info(self, stamp_ns: int, frame_id: str, camera: PinholeCamera) -> Any:
        t = self.t
        P = np.zeros((3, 4))
        P[:, :3] = camera.K
        return t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=camera.height, width=camera.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=camera.K.reshape(-1), r=np.eye(3).reshape(-1),
            p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def tf(self, stamp_ns: int, transforms: list[tuple[str, str, np.ndarray]]) -> Any:
        t = self.t
        out = []
        for parent, child, T in transforms:
            q = se3.matrix_to_quaternion(T[:3, :3])
            out.append(t["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                               w=float(q[3])))))
        return t["tf2_msgs/msg/TFMessage"](transforms=out)


def _latched_qos() -> list[Any]:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False)]


def import_sequence(root: str | Path, sequence: str, out: str | Path, *, storage: str = "mcap",
                    rate_hz: float | None = None, condition: str | None = None, max_frames: int = 0,
                    depth_folder: str = "depth_filtered") -> ImportSummary:
    """Convert one MS2 sequence into a rosbag2 bag (see the module docstring for topics and frames).

    Args:
        root: MS2 root (holds ``sync_data`` and ``proj_depth``).
        sequence: sequence folder name.
        out: bag folder to create (must not exist).
        storage: ``mcap`` or ``sqlite3``.
        rate_hz: frame rate of the synthetic stamps (default 15 Hz).
        condition: condition tag (default: from the split lists, else ``unknown``).
        max_frames: at most this many frames (0 = all).
        depth_folder: ``proj_depth/<seq>/thr/<depth_folder>``.

    Returns:
        An :class:`ImportSummary`.

    Raises:
        ConfigError: missing folders / calibration / images, an existing output, bad options.
        BagError: writing failed (nothing is left behind).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from monother_ros.sim.bag import (
        CUSTOM_DATA_KEY, TOPIC_DEPTH, TOPIC_INFO, TOPIC_RGB, TOPIC_RGB_INFO, TOPIC_TF_STATIC, TOPIC_THERMAL,
        TOPIC_THERMAL_INFO,
    )
    from monother_ros.sim.rig import BASE_FRAME, RGB_FRAME, THERMAL_FRAME

    root, out = Path(root), Path(out).expanduser().absolute()
    rate = DEFAULT_RATE_HZ if rate_hz is None else float(rate_hz)
    if not np.isfinite(rate) or rate <= 0:
        raise ConfigError(f"--rate must be a positive frame rate, got {rate_hz}")
    if storage not in ("mcap", "sqlite3"):
        raise ConfigError(f"unknown storage {storage!r}; use mcap or sqlite3")
    sync = root / "sync_data" / sequence
    thermal_dir, rgb_dir = sync / "thr" / "img_left", sync / "rgb" / "img_left"
    depth_dir = root / "proj_depth" / sequence / "thr" / depth_folder
    if not thermal_dir.is_dir():
        raise ConfigError(f"MS2 sequence {sequence}: {thermal_dir} does not exist")
    if out.exists():
        raise ConfigError(f"output {out} already exists; refusing to overwrite")
    if not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist")
    calib = read_calib(sync / "calib.npy")
    T_thr_nir, T_rgb_nir = ms2_extrinsics(calib)
    files = sorted(thermal_dir.glob("*.png"))
    if max_frames:
        files = files[:max_frames]
    if not files:
        raise ConfigError(f"MS2 sequence {sequence}: no thermal images in {thermal_dir}")
    if not depth_dir.is_dir():
        LOG.warning("MS2 sequence %s: no depth folder %s; the bag has no /gt/depth", sequence, depth_dir)
    tag = condition or sequence_condition(root, sequence) or "unknown"
    info = {"source": "ms2", "sequence": sequence, "scenario": tag, "rate_hz": rate, "root": str(root),
            "depth_folder": depth_folder, "thermal_frame": THERMAL_FRAME, "rgb_frame": RGB_FRAME,
            "base_frame": BASE_FRAME, "generator": "monother_ros.eval.ms2"}
    b = _Builder()
    tmp_dir = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    tmp = tmp_dir / out.name
    with_gt = 0
    try:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(tmp, version=9, storage_plugin=plugin) as writer:
            writer.set_custom_data(CUSTOM_DATA_KEY, json.dumps(info, sort_keys=True))
            specs = [(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", True), (TOPIC_INFO, "std_msgs/msg/String", True),
                     (TOPIC_THERMAL, "sensor_msgs/msg/Image", False),
                     (TOPIC_THERMAL_INFO, "sensor_msgs/msg/CameraInfo", False),
                     (TOPIC_DEPTH, "sensor_msgs/msg/Image", False), (TOPIC_RGB, "sensor_msgs/msg/Image", False),
                     (TOPIC_RGB_INFO, "sensor_msgs/msg/CameraInfo", False)]
            conns = {topic: writer.add_connection(topic, msgtype, typestore=b.store,
                                                  **({"offered_qos_profiles": _latched_qos()} if latched else {}))
                     for topic, msgtype, latched in specs}

            def put(topic: str, stamp: int, msg: Any, msgtype: str) -> None:
                writer.write(conns[topic], stamp, b.store.serialize_cdr(msg, msgtype))

            t0 = MS2_EPOCH_NS
            # base_link (x forward, z up) -> NIR optical frame looking along x, then the calibration.
            T_base_nir = se3.make_transform(se3.OPTICAL_FROM_BODY_ROTATION.T, np.zeros(3))
            tf = b.tf(t0, [(BASE_FRAME, NIR_FRAME, T_base_nir), (NIR_FRAME, THERMAL_FRAME, se3.invert(T_thr_nir)),
                           (NIR_FRAME, RGB_FRAME, se3.invert(T_rgb_nir))])
            put(TOPIC_TF_STATIC, t0, tf, "tf2_msgs/msg/TFMessage")
            info_msg = b.t["std_msgs/msg/String"](data=json.dumps(info, sort_keys=True))
            put(TOPIC_INFO, t0, info_msg, "std_msgs/msg/String")
            for k, thermal_file in enumerate(files):
                stamp = t0 + int(round(k * 1e9 / rate))
                thermal = read_png(thermal_file)
                if thermal.ndim != 2 or thermal.dtype not in (np.uint16, np.uint8):
                    raise ConfigError(f"{thermal_file}: expected a 16-bit single-channel thermal image, got "
                                      f"{thermal.dtype} {thermal.shape}")
                cam_t = PinholeCamera.from_matrix(calib["K_thrL"], thermal.shape[1], thermal.shape[0])
                enc = "mono16" if thermal.dtype == np.uint16 else "mono8"
                put(TOPIC_THERMAL, stamp, b.image(stamp, THERMAL_FRAME, thermal, enc), "sensor_msgs/msg/Image")
                put(TOPIC_THERMAL_INFO, stamp, b.camera_info(stamp, THERMAL_FRAME, cam_t), "sensor_msgs/msg/CameraInfo")
                depth_file = depth_dir / thermal_file.name
                if depth_file.is_file():
                    raw = read_png(depth_file)
                    if raw.shape != thermal.shape:
                        raise ConfigError(f"{depth_file}: depth {raw.shape} does not match thermal {thermal.shape}")
                    metres = raw.astype(np.float32) / np.float32(256.0)  # MS2: uint16 = metres x 256, 0 invalid
                    metres[raw == 0] = np.nan
                    put(TOPIC_DEPTH, stamp, b.image(stamp, THERMAL_FRAME, metres, "32FC1"), "sensor_msgs/msg/Image")
                    with_gt += 1
                rgb_file = rgb_dir / thermal_file.name
                if rgb_file.is_file():
                    rgb = read_png(rgb_file)
                    if rgb.ndim == 2:
                        rgb = np.repeat(rgb[..., None], 3, axis=2)
                    rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
                    cam_r = PinholeCamera.from_matrix(calib["K_rgbL"], rgb.shape[1], rgb.shape[0])
                    put(TOPIC_RGB, stamp, b.image(stamp, RGB_FRAME, rgb, "rgb8"), "sensor_msgs/msg/Image")
                    put(TOPIC_RGB_INFO, stamp, b.camera_info(stamp, RGB_FRAME, cam_r), "sensor_msgs/msg/CameraInfo")
        os.rename(tmp, out)
    except ConfigError:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise BagError(f"writing {out} failed: {type(exc).__name__}: {exc}") from exc
    shutil.rmtree(tmp_dir, ignore_errors=True)
    LOG.info("imported MS2 %s: %d frames (%d with depth) -> %s", sequence, len(files), with_gt, out)
    return ImportSummary(out, len(files), with_gt, tag)

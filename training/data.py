"""One dataset interface over rosbag2 bags and the MS2 folder layout.

Every source is decoded ONCE into ``FrameRecord``s at the training resolution (thermal already
percentile-normalised to [0, 1], RGB in [0, 1], ground truth resized with nearest neighbour, intrinsics
rescaled with ``PinholeCamera.resized``), kept in memory and optionally in an ``.npz`` cache folder, so
epochs cost no decoding. ``PairedFrames`` turns records into samples, applying the seeded photometric
augmentation (brightness / contrast / gamma, no geometry) and the network normalisation on the fly.

Sample (``PairedFrames[i]``), all torch tensors unless noted:

* ``thermal``: (3, h, w) float32, thermal normalised (mean 0.45, std 0.225), replicated to 3 channels.
* ``rgb``: (3, h', w') float32, ImageNet-normalised.
* ``K_thermal`` (3, 3), ``K_rgb`` (3, 3): float32 intrinsics at the network input sizes.
* ``T_rgb_thermal``: (4, 4) float32, maps thermal optical-frame points into the RGB optical frame.
* ``gt_depth_thermal``: (h, w) float32 metres, 0 = invalid, or None.
* ``gt_depth_rgb``: (h', w') float32 metres, 0 = invalid, or None (MS2's own; bags: splatted thermal GT).
* ``meta``: dict (source, frame index, thermal / RGB stamps in ns) - plain Python.

Sources (strings, as in ``TrainConfig.train_data``): a bag (rosbag2 directory, ``.mcap`` or ``.db3``, or a
ROS 1 ``.bag``; image streams raw or on image_transport's ``<topic>/compressed``), or
``ms2:<root>:<split>`` where ``<split>`` names ``<root>/<split>_list.txt`` (one sequence per line) or
one sequence under ``<root>/sync_data``.

Bags: thermal and RGB frames are paired by nearest header stamp within ``pair_tolerance_s``; thermal
frames without an RGB partner are skipped and counted (``PairingReport``). Ground truth comes from the
depth topic (``/gt/depth``, matched to the thermal stamp) or, failing that, from the LiDAR cloud
nearest in time projected into the thermal camera through /tf_static (nearest return per pixel); the
teacher's ground truth ``gt_depth_rgb`` is that thermal GT splatted into the RGB camera (z-buffer).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from monother_ros.core import preprocess
from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.core.image_codec import to_rgb
from monother_ros.core.warp import splat_depth_np
from monother_ros.errors import BagError, ConfigError

LOG = logging.getLogger(__name__)

CACHE_VERSION = 1
MIN_DEPTH_M = 1e-3


@dataclass(frozen=True)
class DataOptions:
    """How sources are read (the data fields of ``TrainConfig``; see there for meanings)."""

    input_size: tuple[int, int]
    rgb_input_size: tuple[int, int]
    thermal_topic: str = "/thermal/image_raw"
    thermal_info_topic: str = "/thermal/camera_info"
    rgb_topic: str = "/rgb/image_raw"
    rgb_info_topic: str = "/rgb/camera_info"
    tf_topic: str = "/tf_static"
    gt_depth_topic: str = "/gt/depth"
    lidar_topic: str = "/lidar/points"
    gt_source: str = "auto"
    pair_tolerance_s: float = 0.03
    max_frames: int = 0
    frame_stride: int = 1
    max_depth_m: float = 80.0

    @classmethod
    def from_config(cls, config: Any, input_size: Sequence[int], rgb_input_size: Sequence[int], max_depth_m: float) -> "DataOptions":
        names = {f.name for f in dataclasses.fields(cls)} - {"input_size", "rgb_input_size", "max_frames", "max_depth_m"}
        return cls(
            input_size=(int(input_size[0]), int(input_size[1])),
            rgb_input_size=(int(rgb_input_size[0]), int(rgb_input_size[1])),
            max_frames=int(config.max_frames_per_source),
            max_depth_m=float(max_depth_m),
            **{n: getattr(config, n) for n in names},
        )


@dataclass
class FrameRecord:
    """One thermal/RGB pair at the training resolution (numpy, before augmentation/normalisation).

    Attributes:
        thermal: (h, w) float32 in [0, 1] (per-frame 2nd/98th percentile normalised).
        rgb: (3, h', w') float32 in [0, 1].
        K_thermal, K_rgb: (3, 3) float64 at the training sizes.
        T_rgb_thermal: (4, 4) float64.
        gt_thermal, gt_rgb: metres, 0 = invalid, or None.
        meta: source, index, stamps.
    """

    thermal: np.ndarray
    rgb: np.ndarray
    K_thermal: np.ndarray
    K_rgb: np.ndarray
    T_rgb_thermal: np.ndarray
    gt_thermal: np.ndarray | None
    gt_rgb: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairingReport:
    """What pairing did with one source's frames."""

    source: str
    thermal_frames: int = 0
    rgb_frames: int = 0
    paired: int = 0
    skipped_no_rgb: int = 0  # thermal frames without an RGB frame within the tolerance
    without_gt: int = 0  # paired frames with no ground truth (kept; they only feed label-free losses)
    gt_source: str = "none"

    def summary(self) -> str:
        return (
            f"{self.source}: {self.paired} pairs from {self.thermal_frames} thermal / {self.rgb_frames} RGB frames, "
            f"{self.skipped_no_rgb} thermal frames skipped (no RGB partner), {self.without_gt} without ground truth "
            f"(GT from {self.gt_source})"
        )


# ---------------------------------------------------------------------------------- array helpers


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=True, the engines' resize) of (H, W) or (H, W, C) [0, 1] images.

    Returns (h, w) for a 2-D input, else channels first (C, h, w), float32.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    if tuple(image.shape[:2]) != tuple(size):
        image = preprocess.resize_bilinear_np(image, tuple(size))
    return image if image.ndim == 2 else np.ascontiguousarray(np.moveaxis(image, -1, 0))


def resize_depth_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) depth map with the align_corners pixel mapping.

    Nearest never mixes valid and invalid (0 / NaN) depths; output invalid pixels are 0.
    """
    depth = np.asarray(depth, dtype=np.float32)
    h, w = depth.shape
    H, W = size
    rows = np.rint(np.arange(H) * ((h - 1) / max(H - 1, 1))).astype(np.int64)
    cols = np.rint(np.arange(W) * ((w - 1) / max(W - 1, 1))).astype(np.int64)
    out = depth[rows[:, None], cols[None, :]]
    return np.where(np.isfinite(out) & (out > 0), out, 0.0).astype(np.float32)


def project_points_nearest(points: np.ndarray, camera: PinholeCamera, T_camera_points: np.ndarray, *, min_z: float = 0.01) -> np.ndarray:
    """Sparse depth image from 3D points: nearest return per pixel.

    Args:
        points: (N, 3) metres in the points' frame.
        camera: target camera (its size is the output size).
        T_camera_points: (4, 4) maps the points' frame into the camera's optical frame.
        min_z: points closer than this (or behind) are dropped.

    Returns:
        (H, W) float32 z-depth in metres, 0 where no point lands.
    """
    pts = se3.transform_points(T_camera_points, np.asarray(points, dtype=np.float64)[:, :3])
    z = pts[:, 2]
    keep = np.isfinite(z) & (z >= min_z)
    pts, z = pts[keep], z[keep]
    u = np.rint(camera.fx * pts[:, 0] / z + camera.cx)
    v = np.rint(camera.fy * pts[:, 1] / z + camera.cy)
    inside = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    flat = v[inside].astype(np.int64) * camera.width + u[inside].astype(np.int64)
    zbuf = np.full(camera.height * camera.width, np.inf)
    np.minimum.at(zbuf, flat, z[inside])
    zbuf[~np.isfinite(zbuf)] = 0.0
    return zbuf.reshape(camera.height, camera.width).astype(np.float32)


def nearest_pairs(reference_ns: np.ndarray, candidate_ns: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """For each reference stamp, the index of the nearest candidate stamp within the tolerance, else -1.

    Both arrays must be sorted ascending. Ties go to the earlier candidate.
    """
    reference_ns = np.asarray(reference_ns, dtype=np.int64)
    candidate_ns = np.asarray(candidate_ns, dtype=np.int64)
    if candidate_ns.size == 0:
        return np.full(reference_ns.shape, -1, dtype=np.int64)
    right = np.clip(np.searchsorted(candidate_ns, reference_ns), 0, candidate_ns.size - 1)
    left = np.clip(right - 1, 0, candidate_ns.size - 1)
    d_left = np.abs(reference_ns - candidate_ns[left])
    d_right = np.abs(candidate_ns[right] - reference_ns)
    best = np.where(d_left <= d_right, left, right)
    best_d = np.minimum(d_left, d_right)
    return np.where(best_d <= tolerance_ns, best, -1)


# ----------------------------------------------------------------------------------------- bags


def _thermal_unit(raw: np.ndarray) -> np.ndarray:
    """(H, W) raw thermal (uint16 or uint8 counts) -> float32 in [0, 1], per-frame percentile normalised."""
    if raw.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"thermal frames must be 8- or 16-bit counts, got {raw.dtype}")
    return preprocess.thermal_to_unit(raw)


def _rgb_unit(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) integer RGB -> float32 in [0, 1]."""
    return image[..., :3].astype(np.float32) / float(np.iinfo(image.dtype).max)


def load_bag(path: str | Path, options: DataOptions) -> tuple[list[FrameRecord], PairingReport]:
    """Decode a bag (rosbag2 or ROS 1) into training records.

    Raises:
        BagError: unreadable bag or missing thermal / RGB / camera_info / TF topics.
    """
    from monother_ros.eval.bag_reader import (
        BagReader, camera_info_to_pinhole, decoded_encoding, image_to_numpy, pointcloud2_to_array, resolve_image_topic,
    )

    report = PairingReport(source=str(path))
    with BagReader(path) as bag:
        topics = bag.topics
        # A camera recorded through image_transport's compressed transport: read <topic>/compressed.
        options = dataclasses.replace(options, **{
            name: resolve_image_topic(topics, getattr(options, name)) for name in ("thermal_topic", "rgb_topic", "gt_depth_topic")
        })
        bag.require_topics(options.thermal_topic, options.rgb_topic, options.thermal_info_topic, options.rgb_info_topic, options.tf_topic)
        gt_source = options.gt_source
        if gt_source == "auto":
            gt_source = "depth" if options.gt_depth_topic in topics else "lidar" if options.lidar_topic in topics else "none"
        if gt_source == "depth":
            bag.require_topics(options.gt_depth_topic)
        elif gt_source == "lidar":
            bag.require_topics(options.lidar_topic)
        report.gt_source = gt_source
        wanted = [options.thermal_topic, options.rgb_topic, options.thermal_info_topic, options.rgb_info_topic]
        wanted += [options.gt_depth_topic] if gt_source == "depth" else [options.lidar_topic] if gt_source == "lidar" else []

        h, w = options.input_size
        rh, rw = options.rgb_input_size
        thermal: list[tuple[int, np.ndarray, tuple[int, ...], str]] = []  # (stamp, unit image, raw shape, frame)
        rgb: list[tuple[int, np.ndarray, tuple[int, ...], str]] = []
        gt: dict[int, np.ndarray] = {}
        clouds: list[tuple[int, np.ndarray, str]] = []
        info: dict[str, Any] = {}
        for message in bag.messages(wanted):
            if message.topic == options.thermal_topic:
                raw = image_to_numpy(message.msg)
                if raw.ndim == 3:
                    raw = raw[..., 0]
                thermal.append((message.stamp_ns, resize_image(_thermal_unit(raw), (h, w)), raw.shape, message.msg.header.frame_id))
            elif message.topic == options.rgb_topic:
                decoded = image_to_numpy(message.msg)
                image = to_rgb(decoded, decoded_encoding(message.msg, decoded))
                rgb.append((message.stamp_ns, resize_image(_rgb_unit(image), (rh, rw)), image.shape[:2], message.msg.header.frame_id))
            elif message.topic == options.gt_depth_topic:
                decoded = image_to_numpy(message.msg)
                depth = decoded.astype(np.float32)
                if decoded_encoding(message.msg, decoded) == "16UC1":
                    depth = depth / 1000.0  # REP 118: millimetres
                gt[message.stamp_ns] = resize_depth_nearest(depth, (h, w))
            elif message.topic == options.lidar_topic:
                clouds.append((message.stamp_ns, pointcloud2_to_array(message.msg), message.msg.header.frame_id))
            elif message.topic in (options.thermal_info_topic, options.rgb_info_topic) and message.topic not in info:
                info[message.topic] = (camera_info_to_pinhole(message.msg), message.msg.header.frame_id)
        tf = bag.static_transforms(options.tf_topic)

    for topic in (options.thermal_info_topic, options.rgb_info_topic):
        if topic not in info:
            raise BagError(f"bag {path}: no message on {topic}")
    cam_t, frame_t = info[options.thermal_info_topic]
    cam_r, frame_r = info[options.rgb_info_topic]
    frame_t = frame_t or (thermal[0][3] if thermal else "")
    frame_r = frame_r or (rgb[0][3] if rgb else "")
    T_rgb_thermal = tf.lookup(frame_r, frame_t)
    K_t = cam_t.resized(w, h, align_corners=True)
    K_r = cam_r.resized(rw, rh, align_corners=True)

    thermal.sort(key=lambda item: item[0])
    rgb.sort(key=lambda item: item[0])
    report.thermal_frames, report.rgb_frames = len(thermal), len(rgb)
    tol = int(round(options.pair_tolerance_s * 1e9))
    match = nearest_pairs(np.array([t[0] for t in thermal], np.int64), np.array([r[0] for r in rgb], np.int64), tol)
    cloud_stamps = np.array([c[0] for c in clouds], np.int64)
    cloud_match = nearest_pairs(np.array([t[0] for t in thermal], np.int64), cloud_stamps, tol) if clouds else None
    gt_stamps = np.array(sorted(gt), np.int64)
    # /gt/depth is published at the thermal stamps; allow 1 ms for stamp rounding by writers.
    gt_match = nearest_pairs(np.array([t[0] for t in thermal], np.int64), gt_stamps, 1_000_000) if gt else None
    T_cache: dict[str, np.ndarray] = {}

    records: list[FrameRecord] = []
    kept = 0
    for i, (stamp, th, _, _) in enumerate(thermal):
        j = int(match[i])
        if j < 0:
            report.skipped_no_rgb += 1
            continue
        kept += 1
        if (kept - 1) % options.frame_stride:
            continue
        if options.max_frames and len(records) >= options.max_frames:
            continue
        gt_t: np.ndarray | None = None
        if gt_match is not None and gt_match[i] >= 0:
            gt_t = gt[int(gt_stamps[gt_match[i]])]
        elif cloud_match is not None and cloud_match[i] >= 0:
            _, points, cloud_frame = clouds[int(cloud_match[i])]
            if cloud_frame not in T_cache:
                T_cache[cloud_frame] = tf.lookup(frame_t, cloud_frame)
            gt_t = project_points_nearest(points, K_t, T_cache[cloud_frame])
        gt_r: np.ndarray | None = None
        if gt_t is not None:
            gt_t = np.where(gt_t <= options.max_depth_m, gt_t, 0.0).astype(np.float32)
            # Bags carry GT in the thermal camera only: the teacher's GT is that depth splatted into
            # the RGB camera (z-buffer, holes where nothing lands stay 0 = invalid).
            splat = splat_depth_np(gt_t, K_t.K, K_r.K, T_rgb_thermal, (rh, rw))
            gt_r = np.where(np.isfinite(splat), splat, 0.0).astype(np.float32)
        else:
            report.without_gt += 1
        records.append(FrameRecord(
            thermal=th, rgb=rgb[j][1], K_thermal=K_t.K, K_rgb=K_r.K, T_rgb_thermal=T_rgb_thermal,
            gt_thermal=gt_t, gt_rgb=gt_r,
            meta={"source": str(path), "index": i, "stamp_ns": int(stamp), "rgb_stamp_ns": int(rgb[j][0])},
        ))
    report.paired = kept
    LOG.info("%s", report.summary())
    return records, report


# ------------------------------------------------------------------------------------------- MS2


def ms2_extrinsic(calib: Mapping[str, Any]) -> np.ndarray:
    """``T_rgb_thermal`` (4x4, metres) from an MS2 ``calib.npy`` dict.

    MS2 gives NIR->thermal and NIR->RGB extrinsics (``R_nir2thr``, ``T_nir2thr``, ``R_nir2rgb``,
    ``T_nir2rgb``) with translations in millimetres: T_rgb_thermal = T_rgb_nir @ inv(T_thr_nir).
    """
    from monother_ros.eval.ms2 import ms2_extrinsics  # shared with `monother import-ms2`

    try:
        T_thr_nir, T_rgb_nir = ms2_extrinsics(calib)
    except KeyError as exc:
        raise ConfigError(f"MS2 calib.npy lacks {exc}") from exc
    return T_rgb_nir @ se3.invert(T_thr_nir)


def ms2_sequences(root: Path, split: str) -> list[str]:
    """Sequence names of an MS2 split (``<root>/<split>_list.txt``) or a single sequence name."""
    for candidate in (root / f"{split}_list.txt", root / "splits" / f"{split}_list.txt", root / f"{split}.txt"):
        if candidate.is_file():
            return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
    if (root / "sync_data" / split).is_dir():
        return [split]
    raise ConfigError(f"MS2 root {root}: no split list {split}_list.txt and no sequence sync_data/{split}")


def load_ms2(root: str | Path, split: str, options: DataOptions, *, depth_folder: str = "depth_filtered") -> tuple[list[FrameRecord], PairingReport]:
    """Records of an MS2 split (left thermal + left RGB, both depth maps).

    Raises:
        ConfigError: missing split list, calibration, images or depth maps.
    """
    from monother_ros.eval.ms2 import read_calib, read_png  # shared with `monother import-ms2`

    root = Path(root)
    report = PairingReport(source=f"ms2:{root}:{split}", gt_source="proj_depth")
    h, w = options.input_size
    rh, rw = options.rgb_input_size
    records: list[FrameRecord] = []
    for seq in ms2_sequences(root, split):
        sync = root / "sync_data" / seq
        calib_path = sync / "calib.npy"
        if not calib_path.is_file():
            raise ConfigError(f"MS2 sequence {seq}: {calib_path} is missing")
        calib = read_calib(calib_path)  # a pickled dict, read as data only (crafted pickles run nothing)
        T_rgb_thermal = ms2_extrinsic(calib)
        thermal_files = sorted((sync / "thr" / "img_left").glob("*.png"))
        report.thermal_frames += len(thermal_files)
        for n, thermal_file in enumerate(thermal_files):
            rgb_file = sync / "rgb" / "img_left" / thermal_file.name
            if not rgb_file.is_file():
                report.skipped_no_rgb += 1
                continue
            report.rgb_frames += 1
            report.paired += 1
            if n % options.frame_stride or (options.max_frames and len(records) >= options.max_frames):
                continue
            raw = read_png(thermal_file)
            rgb = read_png(rgb_file)
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[..., None], 3, axis=2)
            cam_t = PinholeCamera.from_matrix(calib["K_thrL"], raw.shape[1], raw.shape[0]).resized(w, h)
            cam_r = PinholeCamera.from_matrix(calib["K_rgbL"], rgb.shape[1], rgb.shape[0]).resized(rw, rh)
            depths = []
            for mod, size in (("thr", (h, w)), ("rgb", (rh, rw))):
                depth_file = root / "proj_depth" / seq / mod / depth_folder / thermal_file.name
                if depth_file.is_file():
                    metres = read_png(depth_file).astype(np.float32) / 256.0  # MS2: uint16 = metres x 256, 0 invalid
                    metres[metres > options.max_depth_m] = 0.0
                    depths.append(resize_depth_nearest(metres, size))
                else:
                    depths.append(None)
            if depths[0] is None:
                report.without_gt += 1
            records.append(FrameRecord(
                thermal=resize_image(_thermal_unit(raw), (h, w)), rgb=resize_image(_rgb_unit(rgb), (rh, rw)),
                K_thermal=cam_t.K, K_rgb=cam_r.K, T_rgb_thermal=T_rgb_thermal, gt_thermal=depths[0], gt_rgb=depths[1],
                meta={"source": f"ms2:{seq}", "index": n, "stamp_ns": n, "rgb_stamp_ns": n, "file": thermal_file.name},
            ))
    LOG.info("%s", report.summary())
    return records, report


# ----------------------------------------------------------------------------------------- cache


def _cache_key(source: str, options: DataOptions) -> str:
    """Hash of the source's identity (path, size, mtime of its files) and the decoding options."""
    parts: list[Any] = [CACHE_VERSION, source, dataclasses.asdict(options)]
    path = Path(source.split(":", 2)[1] if source.startswith("ms2:") else source)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts.append([(str(p.relative_to(path) if path.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _save_cache(path: Path, records: list[FrameRecord], report: PairingReport) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name in ("thermal", "rgb", "K_thermal", "K_rgb", "T_rgb_thermal"):
        arrays[name] = np.stack([getattr(r, name) for r in records]) if records else np.zeros((0,))
    for name in ("gt_thermal", "gt_rgb"):
        present = np.array([getattr(r, name) is not None for r in records], bool)
        arrays[name + "_present"] = present
        if present.any():
            like = next(getattr(r, name) for r in records if getattr(r, name) is not None)
            arrays[name] = np.stack([getattr(r, name) if getattr(r, name) is not None else np.zeros_like(like) for r in records])
    arrays["meta"] = np.array(json.dumps([r.meta for r in records]))
    arrays["report"] = np.array(json.dumps(dataclasses.asdict(report)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # readers never see a half-written cache


def _load_cache(path: Path) -> tuple[list[FrameRecord], PairingReport]:
    with np.load(path, allow_pickle=False) as data:
        metas = json.loads(str(data["meta"]))
        report = PairingReport(**json.loads(str(data["report"])))
        records = []
        for i, meta in enumerate(metas):
            gts = []
            for name in ("gt_thermal", "gt_rgb"):
                gts.append(data[name][i] if bool(data[name + "_present"][i]) else None)
            records.append(FrameRecord(
                thermal=data["thermal"][i], rgb=data["rgb"][i], K_thermal=data["K_thermal"][i], K_rgb=data["K_rgb"][i],
                T_rgb_thermal=data["T_rgb_thermal"][i], gt_thermal=gts[0], gt_rgb=gts[1], meta=meta,
            ))
    return records, report


def load_source(source: str, options: DataOptions, cache_dir: str | Path | None = None) -> tuple[list[FrameRecord], PairingReport]:
    """Records of one source string (bag path or ``ms2:<root>:<split>``), through the cache when given."""
    cache_file = Path(cache_dir) / f"{_cache_key(source, options)}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            records, report = _load_cache(cache_file)
            LOG.info("cache hit %s for %s", cache_file.name, source)
            return records, report
        except (OSError, ValueError, KeyError) as exc:
            LOG.warning("ignoring unreadable cache %s: %s", cache_file, exc)
    if source.startswith("ms2:"):
        try:
            _, root, split = source.split(":", 2)
        except ValueError:
            raise ConfigError(f"MS2 source must be ms2:<root>:<split>, got {source!r}") from None
        records, report = load_ms2(root, split, options)
    else:
        records, report = load_bag(source, options)
    if cache_file is not None:
        _save_cache(cache_file, records, report)
    return records, report


# --------------------------------------------------------------------------------------- dataset


class PairedFrames(Dataset):
    """Torch dataset over ``FrameRecord``s with seeded photometric augmentation.

    The augmentation of sample ``i`` in epoch ``e`` is drawn from a generator seeded with
    ``(seed, e, i)``: independent of worker processes, ranks and iteration order, so single-process and
    distributed runs (and resumed runs) see the same augmented samples. Call ``set_epoch`` each epoch.

    Args:
        records: decoded frames.
        augment: apply brightness / contrast / gamma jitter.
        seed: augmentation seed.
        brightness: additive shift drawn from U(-b, b) (image in [0, 1]).
        contrast: factor drawn from U(1 - c, 1 + c) around the image mean.
        gamma: exponent range (low, high).
        rgb_low_light: probability that a sample's RGB is also made a night-like frame (``_low_light``:
            dim ambient light, lamp-lit pools, read noise): the teacher and the confidence network then meet
            night-like RGB in a day-only supervised stage. 0 = off (the reference recipe).
        reports: pairing reports of the sources (for logs / metrics).
    """

    def __init__(
        self,
        records: Sequence[FrameRecord],
        *,
        augment: bool = False,
        seed: int = 0,
        brightness: float = 0.1,
        contrast: float = 0.1,
        gamma: tuple[float, float] = (0.9, 1.1),
        rgb_low_light: float = 0.0,
        reports: Sequence[PairingReport] = (),
    ) -> None:
        if not 0.0 <= rgb_low_light <= 1.0:
            raise ValueError(f"rgb_low_light is a probability, got {rgb_low_light}")
        self.records = list(records)
        self.augment = augment
        self.seed = int(seed)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.rgb_low_light = float(rgb_low_light)
        self.reports = list(reports)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = rng.uniform(*self.gamma)
        c = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)
        b = rng.uniform(-self.brightness, self.brightness)
        out = np.clip(image, 0.0, 1.0) ** g
        out = (out - out.mean()) * c + out.mean() + b
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    @staticmethod
    def _low_light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A night-like version of an RGB frame (3, H, W) in [0, 1]: a dim ambient level plus one to three
        lamp-lit pools (Gaussian illumination), then read noise. Spatially varying on purpose: the teacher
        fails in the dark parts only, which is what the confidence network has to learn to see."""
        _, h, w = image.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        light = np.full((h, w), rng.uniform(0.02, 0.1), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            sigma = rng.uniform(0.08, 0.3) * max(h, w)
            light += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma * sigma))
        noise_std = rng.uniform(0.005, 0.03)
        noisy = image * np.minimum(light, 1.0) + rng.normal(0.0, noise_std, size=image.shape)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        thermal, rgb = r.thermal, r.rgb
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            thermal = self._jitter(thermal, rng)
            rgb = self._jitter(rgb, rng)
            # Drawn after the jitter (and only when enabled) so runs without it keep their samples.
            if self.rgb_low_light > 0 and rng.random() < self.rgb_low_light:
                rgb = self._low_light(rgb, rng)
        return {
            "thermal": preprocess.to_network_input_torch(torch.from_numpy(thermal)[None, None], thermal.shape, modality="thermal")[0],
            "rgb": preprocess.to_network_input_torch(torch.from_numpy(rgb)[None], rgb.shape[-2:], modality="rgb")[0],
            "K_thermal": torch.from_numpy(np.asarray(r.K_thermal, np.float32)),
            "K_rgb": torch.from_numpy(np.asarray(r.K_rgb, np.float32)),
            "T_rgb_thermal": torch.from_numpy(np.asarray(r.T_rgb_thermal, np.float32)),
            "gt_depth_thermal": None if r.gt_thermal is None else torch.from_numpy(np.asarray(r.gt_thermal, np.float32)),
            "gt_depth_rgb": None if r.gt_rgb is None else torch.from_numpy(np.asarray(r.gt_rgb, np.float32)),
            "meta": dict(r.meta),
        }


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch; optional GT: None when absent from all, zeros (invalid) where missing."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "meta":
            batch[key] = values
        elif all(v is None for v in values):
            batch[key] = None
        elif any(v is None for v in values):
            like = next(v for v in values if v is not None)
            batch[key] = torch.stack([v if v is not None else torch.zeros_like(like) for v in values])
        else:
            batch[key] = torch.stack(values)
    return batch


def build_dataset(
    sources: Iterable[str],
    options: DataOptions,
    *,
    cache_dir: str | Path | None = None,
    augment: bool = False,
    seed: int = 0,
    brightness: float = 0.1,
    contrast: float = 0.1,
    gamma: tuple[float, float] = (0.9, 1.1),
    rgb_low_light: float = 0.0,
) -> PairedFrames:
    """``PairedFrames`` over every source (concatenated in the given order).

    Raises:
        ConfigError: no sources, or no frames at all after pairing.
        BagError: an unreadable bag or one lacking a needed topic.
    """
    sources = list(sources)
    if not sources:
        raise ConfigError("no data sources given (train_data / val_data)")
    records: list[FrameRecord] = []
    reports: list[PairingReport] = []
    for source in sources:
        recs, report = load_source(source, options, cache_dir)
        records.extend(recs)
        reports.append(report)
    if not records:
        raise ConfigError("no thermal/RGB pairs in " + "; ".join(r.summary() for r in reports))
    return PairedFrames(records, augment=augment, seed=seed, brightness=brightness, contrast=contrast, gamma=gamma,
                        rgb_low_light=rgb_low_light, reports=reports)

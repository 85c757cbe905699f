"""Read rosbag2 bags (mcap or sqlite3) and ROS 1 bags (``.bag``) with ``rosbags`` only, no rclpy.

``BagReader`` lists topics and iterates decoded messages in time order; the module-level helpers turn
messages into numpy / package types: ``image_to_numpy`` (sensor_msgs/Image and sensor_msgs/CompressedImage),
``camera_info_to_pinhole`` (sensor_msgs/CameraInfo, ROS 1 or ROS 2 field names), ``StaticTransforms``
(/tf_static -> 4x4 extrinsics between any two frames of the tree), ``pointcloud2_to_array``
(sensor_msgs/PointCloud2 -> (N, k)).

ROS 1 bags are opened with ``rosbags.highlevel.AnyReader`` and decoded with the message definitions the
bag carries; their messages have ROS 1 field names (``CameraInfo.K``, ``Header.seq``), which the helpers
accept. Image topics may be recorded raw or through image_transport's ``compressed`` transport
(``<base>/compressed``, sensor_msgs/CompressedImage): ``resolve_image_topic`` picks whichever the bag has,
``image_to_numpy`` decodes either, ``decoded_encoding`` names the result's encoding.

A crash-truncated mcap (footer lost, ``mcap_salvage``) or ROS 1 bag (index lost, ``rosbag1_salvage``) is
read up to the cut with a warning; reading then ends with a ``BagError`` that says how many messages were
read and how to repair the file (``mcap recover`` / ``rosbag reindex``).

Every failure to read a bag (missing path, not a bag, truncated or corrupt storage, undecodable message,
missing topic) raises ``BagError`` with the path and the reason.

Example::

    with BagReader("run.mcap") as bag:
        print(bag.topics)
        for m in bag.messages(["/thermal/image_raw"]):
            image = image_to_numpy(m.msg)      # (H, W) uint16 for mono16
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from monother_ros.core import se3
from monother_ros.core.camera import PinholeCamera
from monother_ros.core.image_codec import ImageDecodeError, decode_compressed_image, decode_image_buffer, parse_compressed_format
from monother_ros.errors import BagError, CalibrationError

LOG = logging.getLogger(__name__)

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
# image_transport's topic suffixes, in the order a reader prefers them after the raw topic.
TRANSPORT_SUFFIXES: tuple[str, ...] = ("/compressed", "/compressedDepth")
ROSBAG1_SUFFIX = ".bag"

# sensor_msgs/PointField datatype -> numpy dtype letters.
POINTFIELD_DTYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, ROS type (``sensor_msgs/msg/Image``) and message count."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagMessage:
    """A decoded message.

    Attributes:
        topic: topic name.
        msgtype: ROS type name.
        log_time_ns: time the recorder stored it (bag timestamp), nanoseconds.
        stamp_ns: ``header.stamp`` in nanoseconds when the message has a header, else ``log_time_ns``.
        msg: the rosbags message object (attribute access like rclpy messages).
    """

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: int
    msg: Any


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


class BagReader:
    """An open bag: rosbag2 (directory with metadata.yaml, or a single .mcap / .db3 file) or ROS 1 (.bag).

    Args:
        path: bag directory or storage file.

    Attributes:
        ros_version: 1 or 2.
        salvaged: True when the bag is a crash-truncated mcap or ROS 1 bag read up to its cut.

    Raises:
        BagError: the path does not exist or is not a readable bag.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.ros_version = 2
        self.salvaged = False
        self._custom: dict[str, str] | None = None
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if self.path.is_file() and self.path.suffix == ROSBAG1_SUFFIX:
            self._open_rosbag1()
            return
        from rosbags.rosbag2 import Reader

        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises ReaderError, sqlite3/mcap errors, yaml errors, ...
            self._reader = self._salvage_mcap(exc)
        self._typestore = _typestore()
        self._deserialize = self._typestore.deserialize_cdr
        self._register_bag_types()

    def _open_rosbag1(self) -> None:
        from rosbags.highlevel import AnyReader

        self.ros_version = 1
        self._custom = {}  # rosbag1 has no metadata custom data (the simulator's /rig/info topic carries it)
        try:
            self._reader = AnyReader([self.path])
            self._reader.open()
        except Exception as exc:  # AnyReaderError (unindexed, truncated, damaged), OSError, ...
            self._reader = self._salvage_rosbag1(exc)
        # The bag's own message definitions (ROS 1 field names): the reader built its type store from them.
        self._typestore = self._reader.typestore
        self._deserialize = self._reader.deserialize

    def _salvage_rosbag1(self, error: Exception):
        """Fall back to reading an index-less ROS 1 bag up to its cut; ``BagError`` when nothing is readable."""
        from monother_ros.eval.rosbag1_salvage import SalvagedRosbag1

        reason = (f"cannot open ROS 1 bag {self.path}: {type(error).__name__}: {error}. A bag cut short (recorder "
                  "killed, copy interrupted) has no index: rebuild it with `rosbag reindex` (ROS 1)")
        try:
            salvaged = SalvagedRosbag1(self.path)
        except Exception as exc:  # not a bag at all, or cut before its first connection
            raise BagError(f"{reason}; nothing readable in it either ({exc})") from None
        self.salvaged = True
        LOG.warning("bag %s: %s; reading the %d message(s) before the cut (%s)", self.path, salvaged.stopped_reason,
                    salvaged.messages_read, salvaged.repair_hint)
        return salvaged

    def _salvage_mcap(self, error: Exception):
        """Fall back to reading a footer-less mcap up to its cut; re-raise ``error`` as ``BagError`` otherwise."""
        from monother_ros.eval.mcap_salvage import SalvagedMcap, recover_hint

        reason = f"cannot open bag {self.path}: {type(error).__name__}: {error}"
        files = [self.path] if self.path.is_file() else sorted(self.path.glob("*.mcap"))
        if not files or any(f.suffix != ".mcap" for f in files):
            raise BagError(reason) from error
        try:
            salvaged = SalvagedMcap(files)
        except Exception as exc:  # not an mcap at all, or cut inside its first records
            raise BagError(f"{reason}; nothing readable in it either ({exc})") from error
        self._custom = _metadata_custom_data(self.path / "metadata.yaml") if self.path.is_dir() else {}
        if salvaged.stopped_reason is None:  # complete after all (rosbags refused it for another reason)
            LOG.info("bag %s: read with the mcap package (%s)", self.path, reason)
            return salvaged
        self.salvaged = True
        LOG.warning("bag %s: %s; reading the %d message(s) before the cut (%s)", self.path, salvaged.stopped_reason,
                    salvaged.messages_read, recover_hint(files[-1]))
        return salvaged

    def _register_bag_types(self) -> None:
        """Add message definitions stored in the bag for types the default type store lacks."""
        from rosbags.typesys import get_types_from_msg

        for connection in self._reader.connections:
            if connection.msgtype in self._typestore.types:
                continue
            msgdef = getattr(connection, "msgdef", None)
            text = getattr(msgdef, "data", msgdef)
            if not text:
                continue
            try:
                self._typestore.register(get_types_from_msg(text, connection.msgtype))
            except Exception as exc:  # an unparsable definition only matters if the topic is read
                LOG.warning("bag %s: cannot register type %s: %s", self.path, connection.msgtype, exc)

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:  # closing a half-broken storage must not mask the original error
            pass

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topic name -> ``TopicInfo`` (counts from the bag's metadata)."""
        out: dict[str, TopicInfo] = {}
        for connection in self._reader.connections:
            previous = out.get(connection.topic)
            count = connection.msgcount + (previous.count if previous else 0)
            out[connection.topic] = TopicInfo(connection.topic, connection.msgtype, count)
        return out

    @property
    def custom_data(self) -> dict[str, str]:
        """The bag metadata's ``custom_data`` (rosbag2 metadata v6+; ``ros2 bag record --custom-data``), or {}."""
        if self._custom is not None:  # ROS 1 bags have none; salvaged mcaps: read from metadata.yaml
            return dict(self._custom)
        # rosbags keeps it on the directory reader (``Reader.storage.metadata.custom``); single storage
        # files have no metadata.yaml and so no custom data.
        holder = getattr(self._reader, "storage", self._reader)
        metadata = getattr(holder, "metadata", None)
        return dict(getattr(metadata, "custom", None) or {})

    @property
    def start_time_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_time_ns(self) -> int:
        return int(self._reader.end_time)

    def require_topics(self, *names: str) -> None:
        """Raise ``BagError`` naming every topic of ``names`` the bag lacks (and the ones it has)."""
        have = self.topics
        missing = [n for n in names if n not in have]
        if missing:
            raise BagError(f"bag {self.path} lacks topic(s) {', '.join(missing)}; it has {', '.join(sorted(have)) or 'none'}")

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
        """Decoded messages of ``topics`` (all when None) in bag time order.

        Raises:
            BagError: a requested topic is missing, or the storage is truncated / corrupt / undecodable.
        """
        if topics is not None:
            self.require_topics(*topics)
            connections = [c for c in self._reader.connections if c.topic in set(topics)]
        else:
            connections = list(self._reader.connections)
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, log_time, raw = next(iterator)
            except StopIteration:
                if self.salvaged:  # cut short: say so, with what was read and how to repair the file
                    raise BagError(
                        f"bag {self.path} is truncated: {self._reader.stopped_reason}; the "
                        f"{self._reader.messages_read} message(s) before the cut were read; {self._reader.repair_hint}"
                    ) from None
                return
            except Exception as exc:
                raise BagError(f"bag {self.path} is truncated or corrupt: {type(exc).__name__}: {exc}") from exc
            try:
                msg = self._deserialize(raw, connection.msgtype)
            except Exception as exc:
                raise BagError(
                    f"bag {self.path}: cannot decode a {connection.msgtype} message on {connection.topic} "
                    f"at {log_time} ns: {type(exc).__name__}: {exc}"
                ) from exc
            header = getattr(msg, "header", None)
            stamp = stamp_to_ns(header.stamp) if header is not None and hasattr(header, "stamp") else int(log_time)
            yield BagMessage(connection.topic, connection.msgtype, int(log_time), stamp, msg)

    def first_message(self, topic: str) -> BagMessage:
        """The first message on ``topic``; ``BagError`` when the topic is missing or empty."""
        for message in self.messages([topic]):
            return message
        raise BagError(f"bag {self.path}: topic {topic} has no messages")

    def static_transforms(self, topic: str = "/tf_static") -> "StaticTransforms":
        """All transforms published on ``topic`` (later messages override earlier ones per child frame)."""
        tree = StaticTransforms()
        for message in self.messages([topic]):
            tree.add_message(message.msg)
        return tree


def _metadata_custom_data(path: Path) -> dict[str, str]:
    """``custom_data`` of a rosbag2 metadata.yaml read directly (when the storage could not be opened)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
        custom = doc["rosbag2_bagfile_information"].get("custom_data") or {}
        return {str(k): str(v) for k, v in custom.items()}
    except Exception:  # a damaged metadata file only loses the custom data
        return {}


def is_compressed_image(msg: Any) -> bool:
    """True for a sensor_msgs/CompressedImage (it has ``format`` and no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def resolve_image_topic(topics: Iterable[str], name: str) -> str:
    """The topic to read for the image stream ``name``: ``name`` itself when the bag has it, else its
    image_transport ``compressed`` (or ``compressedDepth``) sub-topic when the bag has that, else ``name``
    (so that a missing-topic error names what was asked for)."""
    have = set(topics)
    if name in have:
        return name
    for suffix in TRANSPORT_SUFFIXES:
        if name + suffix in have:
            LOG.info("reading %s from its compressed transport topic %s", name, name + suffix)
            return name + suffix
    return name


def decoded_encoding(msg: Any, image: np.ndarray) -> str:
    """The Image encoding that describes ``image_to_numpy(msg)``.

    ``msg.encoding`` for an Image; for a CompressedImage: the original encoding when the format string
    names one and its pixel layout matches (``16UC1`` for compressedDepth, ``mono16``, ``mono8``), else
    ``mono8`` / ``mono16`` / ``rgb8`` from the decoded array (decoded colour is always RGB).
    """
    if not is_compressed_image(msg):
        return str(msg.encoding)
    if image.ndim == 3:
        return "rgb8"
    try:
        original = parse_compressed_format(msg.format).encoding
    except ImageDecodeError:
        original = ""
    if original in ("16UC1", "mono16", "8UC1", "mono8") and (image.dtype == np.uint16) == original.startswith(("16", "mono16")):
        return original
    return "mono16" if image.dtype == np.uint16 else "mono8"


def image_to_numpy(msg: Any) -> np.ndarray:
    """Decoded sensor_msgs/Image or sensor_msgs/CompressedImage: (H, W) or (H, W, C).

    Image: dtype and channel order from the encoding (see ``core.image_codec``; a zero-copy view).
    CompressedImage (PNG / JPEG, through ``core.image_codec.decode_compressed_image``): (H, W) uint16 /
    uint8 grey or (H, W, 3) uint8 RGB, a new array; ``decoded_encoding`` names it.

    Raises:
        BagError: the encoding is unsupported, the payload does not fit its header, or a compressed
            payload is corrupt, truncated or of another bit depth than its format says.
    """
    if is_compressed_image(msg):
        try:
            return decode_compressed_image(msg.data, msg.format)
        except ImageDecodeError as exc:
            raise BagError(f"malformed CompressedImage message: {exc}") from exc
    try:
        return decode_image_buffer(
            msg.data, height=msg.height, width=msg.width, step=msg.step, encoding=msg.encoding, is_bigendian=msg.is_bigendian
        )
    except ImageDecodeError as exc:
        raise BagError(f"malformed Image message: {exc}") from exc


def camera_info_to_pinhole(msg: Any) -> PinholeCamera:
    """sensor_msgs/CameraInfo -> ``PinholeCamera`` (uses K; distortion is assumed already removed).

    Accepts ROS 2 (``k``, ``d``) and ROS 1 (``K``, ``D``) field names.

    Raises:
        CalibrationError: K is degenerate (zero focal length, NaN) or the size is zero.
    """
    K = np.asarray(camera_info_k(msg), dtype=np.float64).reshape(3, 3)
    distortion = np.asarray(getattr(msg, "d", getattr(msg, "D", ())), dtype=np.float64)
    if distortion.size and np.any(np.abs(distortion) > 1e-9):
        LOG.warning("camera_info %s has non-zero distortion; it is ignored (images must be rectified)", msg.header.frame_id)
    return PinholeCamera.from_matrix(K, int(msg.width), int(msg.height))


def camera_info_k(msg: Any) -> Any:
    """The 9 values of a CameraInfo's K (``k`` in ROS 2, ``K`` in ROS 1)."""
    return msg.k if hasattr(msg, "k") else msg.K


class StaticTransforms:
    """A tree of static transforms (tf2 semantics: ``T_parent_child`` maps child-frame points to parent)."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        self._parent[child.lstrip("/")] = (parent.lstrip("/"), np.asarray(T_parent_child, dtype=np.float64))

    def add_message(self, msg: Any) -> None:
        """Add every TransformStamped of a tf2_msgs/TFMessage."""
        for ts in msg.transforms:
            r, t = ts.transform.rotation, ts.transform.translation
            q = se3.validate_quaternion(np.array([r.x, r.y, r.z, r.w]))
            self.add(ts.header.frame_id, ts.child_frame_id, se3.make_transform(q, [t.x, t.y, t.z]))

    @property
    def frames(self) -> set[str]:
        return set(self._parent) | {p for p, _ in self._parent.values()}

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        T = np.eye(4)
        seen = set()
        while frame in self._parent:
            if frame in seen:
                raise CalibrationError(f"TF tree has a cycle through {frame}")
            seen.add(frame)
            parent, T_parent_child = self._parent[frame]
            T = T_parent_child @ T
            frame = parent
        return frame, T

    def lookup(self, target: str, source: str) -> np.ndarray:
        """4x4 ``T_target_source``: maps points expressed in ``source`` into ``target``.

        Raises:
            BagError: either frame is unknown or the two are not connected.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        for frame in (target, source):
            if frame not in self.frames:
                raise BagError(f"frame {frame!r} is not in the static TF tree (frames: {', '.join(sorted(self.frames))})")
        root_t, T_root_target = self._to_root(target)
        root_s, T_root_source = self._to_root(source)
        if root_t != root_s:
            raise BagError(f"frames {target!r} and {source!r} are not connected in the static TF tree")
        return se3.invert(T_root_target) @ T_root_source


def pointcloud2_to_array(msg: Any, fields: Sequence[str] = ("x", "y", "z"), *, drop_nan: bool = True) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N, len(fields)) float32 (N = width * height, NaN rows dropped).

    Raises:
        BagError: a requested field is missing or the payload is shorter than its header says.
    """
    by_name = {f.name: f for f in msg.fields}
    missing = [name for name in fields if name not in by_name]
    if missing:
        raise BagError(f"PointCloud2 lacks field(s) {missing}; it has {list(by_name)}")
    count = int(msg.width) * int(msg.height)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    data = np.frombuffer(msg.data, dtype=np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data.view(np.uint8)
    if data.size < row_step * int(msg.height) or point_step * int(msg.width) > row_step:
        raise BagError(f"PointCloud2 payload of {data.size} bytes does not fit {msg.width}x{msg.height} step {point_step}/{row_step}")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name in fields:
        field = by_name[name]
        if field.datatype not in POINTFIELD_DTYPES:
            raise BagError(f"PointCloud2 field {name} has unknown datatype {field.datatype}")
        names.append(name)
        formats.append(order + POINTFIELD_DTYPES[field.datatype])
        offsets.append(int(field.offset))
    record = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    rows = data[: row_step * int(msg.height)].reshape(int(msg.height), row_step)[:, : point_step * int(msg.width)]
    points = np.ascontiguousarray(rows).view(record).reshape(count)
    out = np.stack([points[name].astype(np.float32) for name in names], axis=1) if count else np.zeros((0, len(names)), np.float32)
    if drop_nan and out.size:
        out = out[np.all(np.isfinite(out), axis=1)]
    return out


def list_topics(path: str | Path) -> list[TopicInfo]:
    """Topics of the bag at ``path`` sorted by name (convenience for CLIs)."""
    with BagReader(path) as bag:
        return sorted(bag.topics.values(), key=lambda t: t.name)


def read_all(path: str | Path, topics: Iterable[str]) -> dict[str, list[BagMessage]]:
    """Every message of ``topics`` grouped by topic, each list in time order."""
    topics = list(topics)
    out: dict[str, list[BagMessage]] = {t: [] for t in topics}
    with BagReader(path) as bag:
        for message in bag.messages(topics):
            out[message.topic].append(message)
    return out

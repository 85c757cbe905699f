"""Replay a rosbag2 bag into DDS with ``/clock`` and record what the depth node answers (``monother eval --live``).

:class:`BagPlayer` reads the bag's raw CDR bytes with ``rosbags`` (no deserialisation: rosbags' CDR is
byte-identical to rclpy's, checked on the wheel build) and publishes them through rclpy publishers of the bag's message
types, paced by the bag's timestamps (``rate`` x real time), publishing ``/clock`` with the bag time before
each message, as ``ros2 bag play --clock`` does. Latched topics (``/tf_static``) use transient-local QoS.

:class:`DepthRecorder` subscribes to the node's ``depth/image`` (and ``depth/confidence``) and keeps each
output with its receive time, keyed by the header stamp (= the thermal stamp).

:func:`play_and_record` runs the real node graph (``ros.commands.start_rig``: the ``thermal_depth`` node
from ``config/rig.yaml`` with ``use_sim_time``), the player and the recorder in one process on one
single-threaded executor spun in a background thread (checked on the wheel build), and returns a :class:`LiveRecording`.
"""
from __future__ import annotations

import importlib
import logging
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from monother_ros.errors import BagError, MonotherError

__all__ = ["BagPlayer", "DepthRecorder", "LiveRecording", "play_and_record"]

LOG = logging.getLogger(__name__)

LATCHED_TOPICS = ("/tf_static", "/rig/info")


def message_class(msgtype: str) -> Any:
    """rclpy message class of a ROS type name (``sensor_msgs/msg/Image``); ``BagError`` if not importable."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not available to rclpy here ({type(exc).__name__}: {exc})") from None


@dataclass
class LiveRecording:
    """What a live replay produced.

    Attributes:
        outputs: thermal stamp (ns) -> (depth (H, W) float32, confidence or None, latency ms = receive wall
            time - publish wall time of the thermal message).
        published: thermal messages published; received: depth images received.
        play_wall_s: wall time of the playback; bag_s: bag time played.
        first_output_s: wall time from the first thermal message to the first depth image.
    """

    outputs: dict[int, tuple[np.ndarray, Optional[np.ndarray], float]] = field(default_factory=dict)
    published: int = 0
    received: int = 0
    play_wall_s: float = 0.0
    bag_s: float = 0.0
    first_output_s: Optional[float] = None
    output_wall_span_s: float = 0.0


class BagPlayer:
    """Publishes a bag's messages (raw bytes) with ``/clock``.

    Args:
        node: the rclpy node that owns the publishers.
        bag: bag path.
        topics: topics to play (default: all that rclpy can type here).
        clock: publish ``/clock``.

    Raises:
        BagError: the bag cannot be opened or a requested topic is missing.
    """

    def __init__(self, node: Any, bag: str | Path, topics: Optional[Sequence[str]] = None, *,
                 clock: bool = True) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosbags.rosbag2 import Reader

        from monother_ros.ros import qos

        self.node = node
        self.path = Path(bag)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:
            raise BagError(f"cannot open bag {self.path}: {type(exc).__name__}: {exc}") from exc
        have = {c.topic: c.msgtype for c in self._reader.connections}
        wanted = list(have) if topics is None else list(topics)
        missing = [t for t in wanted if t not in have]
        if missing:
            self._reader.close()
            raise BagError(f"bag {self.path} lacks topic(s) {', '.join(missing)}; it has {', '.join(sorted(have))}")
        data_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self._publishers: dict[str, Any] = {}
        for topic in wanted:
            try:
                cls = message_class(have[topic])
            except BagError as exc:
                if topics is not None:
                    raise
                LOG.warning("not playing %s: %s", topic, exc)
                continue
            profile = qos.TF_STATIC_PUBLISHER if topic in LATCHED_TOPICS else data_qos
            self._publishers[topic] = node.create_publisher(cls, topic, profile)
        self._connections = [c for c in self._reader.connections if c.topic in self._publishers]
        self._clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, "/clock", qos.CLOCK)
            self._Clock = Clock

    @property
    def topics(self) -> list[str]:
        return list(self._publishers)

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:  # closing a half-broken bag must not hide the error that got us here
            pass

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time

        if self._clock_pub is not None:
            self._clock_pub.publish(self._Clock(clock=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9)))

    def play(self, *, rate: float = 1.0, on_publish: Optional[Callable[[str, int, bytes, float], None]] = None,
             should_stop: Optional[Callable[[], bool]] = None) -> tuple[int, float, float]:
        """Publish every message in bag order, paced at ``rate`` x real time (``rate`` <= 0: as fast as possible).

        Args:
            rate: playback speed factor.
            on_publish: called after each publish with (topic, log time ns, raw bytes, wall time).
            should_stop: polled between messages; True ends the playback early.

        Returns:
            ``(messages published, bag seconds played, wall seconds)``.

        Raises:
            BagError: the storage is truncated or corrupt (messages before the damage were published).
        """
        iterator = self._reader.messages(connections=self._connections)
        count = 0
        t_first: Optional[int] = None
        t_last = 0
        wall0 = time.perf_counter()
        while True:
            try:
                connection, log_time, raw = next(iterator)
            except StopIteration:
                break
            except Exception as exc:
                raise BagError(f"bag {self.path} is truncated or corrupt after {count} message(s): "
                               f"{type(exc).__name__}: {exc}") from exc
            if should_stop is not None and should_stop():
                break
            if t_first is None:
                t_first = log_time
            if rate > 0:
                delay = wall0 + (log_time - t_first) * 1e-9 / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self._publish_clock(int(log_time))
            # rclpy publishes serialized bytes as they are (rosbags' CDR matches rclpy's).
            self._publishers[connection.topic].publish(bytes(raw))
            count += 1
            t_last = log_time
            if on_publish is not None:
                on_publish(connection.topic, int(log_time), raw, time.perf_counter())
        bag_s = 0.0 if t_first is None else (t_last - t_first) * 1e-9
        return count, bag_s, time.perf_counter() - wall0


class DepthRecorder:
    """Keeps every ``depth/image`` (+ ``depth/confidence``) the node publishes, keyed by header stamp."""

    def __init__(self, node: Any, namespace: str = "") -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
        # Best effort like the node's outputs, with a deep queue so bursts are not lost on our side.
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.VOLATILE)
        self.depth_topic = f"{prefix}/depth/image"
        self._lock = threading.Lock()
        self.depth: dict[int, tuple[np.ndarray, float]] = {}
        self.confidence: dict[int, np.ndarray] = {}
        node.create_subscription(Image, self.depth_topic, self._on_depth, profile)
        node.create_subscription(Image, f"{prefix}/depth/confidence", self._on_confidence, profile)

    @staticmethod
    def _decode(msg: Any) -> tuple[int, np.ndarray]:
        from monother_ros.ros.convert import image_to_array, stamp_to_ns

        return stamp_to_ns(msg.header.stamp), np.array(image_to_array(msg), dtype=np.float32, copy=True)

    def _on_depth(self, msg: Any) -> None:
        wall = time.perf_counter()
        stamp, array = self._decode(msg)
        with self._lock:
            self.depth[stamp] = (array, wall)

    def _on_confidence(self, msg: Any) -> None:
        stamp, array = self._decode(msg)
        with self._lock:
            self.confidence[stamp] = array

    def count(self) -> int:
        with self._lock:
            return len(self.depth)


def play_and_record(bag: str | Path, model: str | Path, *, backend: str = "onnxruntime", rate: float = 1.0,
                    config: Optional[str | Path] = None, thermal_topic: str = "/thermal/image_raw",
                    topics: Sequence[str] = ("/thermal/image_raw", "/thermal/camera_info", "/tf_static"),
                    num_threads: int = 0, ready_timeout_s: float = 60.0, drain_s: float = 2.0,
                    device: str = "", precision: str = "", thermal_transport: str = "raw",
                    rgb_transport: str = "raw") -> LiveRecording:
    """Run the node graph with ``use_sim_time``, play ``bag`` into it and record its depth outputs.

    Args:
        bag: bag path; model: model folder / .onnx for ``thermal_depth``; backend, device, precision: its
            engine options (empty = the params file's).
        rate: playback speed (1 = real time).
        config: params file (default: the shipped ``config/rig.yaml``).
        thermal_topic: the node's thermal input (absolute name).
        topics: bag topics to play (the node's inputs).
        num_threads: engine CPU threads (0 = the params file's).
        ready_timeout_s: how long to wait for the node to subscribe to the thermal topic.
        drain_s: after playback, wait until no output arrived for this long.
        thermal_transport, rgb_transport: the node's ``thermal.transport`` / ``rgb.transport`` (``compressed``
            for a bag recording ``<base>/compressed`` CompressedImage topics).

    Raises:
        BagError: bad bag / topic; MonotherError: the node failed to start or never subscribed.
    """
    from monother_ros.ros.commands import RigOptions, _use_shipped_dds_profile, start_rig

    _use_shipped_dds_profile()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    context = Context()
    rclpy.init(context=context)
    nodes: list[Any] = []
    executor = None
    spin_thread = None
    stop = threading.Event()
    player = None
    try:
        overrides = {"use_sim_time": "true", "thermal.transport": thermal_transport, "rgb.transport": rgb_transport}
        if num_threads:
            overrides["num_threads"] = str(int(num_threads))
        if precision:
            overrides["precision"] = precision
        options = RigOptions(model=str(model), backend=backend, config=config, device=device,
                             extra_overrides={"thermal_depth": overrides})
        nodes = start_rig(options, context)
        tool = Node("monother_eval_live", context=context)
        nodes.append(tool)
        recorder = DepthRecorder(tool)
        player = BagPlayer(tool, bag, topics)
        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)

        def spin() -> None:
            while not stop.is_set() and context.ok():
                executor.spin_once(timeout_sec=0.05)

        spin_thread = threading.Thread(target=spin, name="eval-live-spin", daemon=True)
        spin_thread.start()
        # The node is lazy: it subscribes to its inputs once our recorder subscribes to depth/image.
        deadline = time.monotonic() + ready_timeout_s
        while tool.count_subscribers(thermal_topic) < 1:
            if time.monotonic() > deadline:
                raise MonotherError(f"the thermal_depth node did not subscribe to {thermal_topic} within "
                                    f"{ready_timeout_s:g} s")
            time.sleep(0.02)
        published_at: dict[int, float] = {}
        thermal_count = [0]

        def on_publish(topic: str, log_time: int, raw: bytes, wall: float) -> None:
            if topic == thermal_topic:
                thermal_count[0] += 1
                published_at[_header_stamp_ns(raw, log_time)] = wall

        _, bag_s, play_wall = player.play(rate=rate, on_publish=on_publish)
        # Let the last frames come out: stop once nothing new arrived for drain_s (or all arrived).
        last_count, last_change = recorder.count(), time.monotonic()
        while time.monotonic() - last_change < drain_s and recorder.count() < thermal_count[0]:
            time.sleep(0.05)
            if recorder.count() != last_count:
                last_count, last_change = recorder.count(), time.monotonic()
        recording = LiveRecording(published=thermal_count[0], play_wall_s=play_wall, bag_s=bag_s)
        with recorder._lock:
            depth = dict(recorder.depth)
            confidence = dict(recorder.confidence)
        for stamp, (array, wall) in depth.items():
            sent = published_at.get(stamp)
            latency = (wall - sent) * 1e3 if sent is not None else float("nan")
            recording.outputs[stamp] = (array, confidence.get(stamp), latency)
        recording.received = len(recording.outputs)
        if published_at and depth:
            first_sent = min(published_at.values())
            walls = [w for _, w in depth.values()]
            recording.first_output_s = min(walls) - first_sent
            recording.output_wall_span_s = max(walls) - min(walls)
        return recording
    finally:
        stop.set()
        if spin_thread is not None:
            spin_thread.join(timeout=5.0)
        if player is not None:
            player.close()
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        for node in reversed(nodes):
            node.destroy_node()
        context.try_shutdown()


def _header_stamp_ns(raw: bytes, fallback: int) -> int:
    """``header.stamp`` of a CDR-serialised message that starts with a std_msgs/Header (Image does).

    CDR: 4-byte encapsulation header, then int32 sec and uint32 nanosec (little endian for CDR_LE).
    """
    if len(raw) < 12:
        return fallback
    order = "<" if raw[1] == 1 else ">"  # encapsulation kind 0x0001 = CDR_LE, 0x0000 = CDR_BE
    sec, nanosec = struct.unpack_from(f"{order}iI", bytes(raw[4:12]))
    return sec * 1_000_000_000 + nanosec

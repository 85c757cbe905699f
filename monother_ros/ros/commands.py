"""``monother rig``: the node graph of ``launch/rig.launch.py`` in one process over the wheel rclpy.

    monother rig [--sim] [--adapt] [--config FILE] [--model DIR] [--backend B] [--device D] [--namespace NS]
                 [--frame-prefix P] [--transport raw|compressed] [--duration S]

The nodes come from ``monother_ros.ros.graph`` (the same list the launch file uses); each gets
``--ros-args --params-file <config>`` (plus ``model``, ``backend`` and ``device`` overrides from the options) as
its ``cli_args``, so rclpy applies the params file's ``/**/<node>`` sections and the namespace exactly as
on a ROS install. All nodes share one single-threaded executor (checked on the wheel build); the depth node infers in
its own worker thread and the simulated rig renders in its own threads.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Optional

from monother_ros.errors import ConfigError

__all__ = ["add_commands", "RigOptions", "run_rig", "start_rig", "OutputRecorder", "record_rig"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``rig``."""
    p = subparsers.add_parser(
        "rig", help="run the ROS node graph (thermal_depth [+ sim_rig]) in one process",
        description="Start the same node graph as `ros2 launch monother_ros rig.launch.py`, in one process, "
                    "with parameters from config/rig.yaml. Stop with Ctrl-C.")
    p.add_argument("--sim", action="store_true", help="also start the simulated rig (sim_rig)")
    p.add_argument("--adapt", action="store_true", help="also start online_adaptation")
    p.add_argument("--config", default=None, help="params file (default: the shipped config/rig.yaml)")
    p.add_argument("--model", default="", help="model folder or .onnx for thermal_depth (default: the params file's)")
    p.add_argument("--backend", default="", choices=["auto", "tensorrt", "onnxruntime", "torch"],
                   help="inference backend (default: the params file's)")
    p.add_argument("--device", default="", type=_device_option,
                   help="device of thermal_depth: auto, cpu, cuda or cuda:N (default: the params file's)")
    p.add_argument("--namespace", default="", help="ROS namespace of every node")
    p.add_argument("--frame-prefix", default="", help="tf_prefix-style frame prefix (e.g. robot1/) of the simulated "
                   "rig's frames and the nodes' default frames, for several robots in one DDS domain")
    p.add_argument("--transport", default="", choices=["raw", "compressed"],
                   help="image transport of the thermal and RGB streams for every node (sim_rig publishes it, "
                        "thermal_depth/online_adaptation subscribe it: <topic>/compressed = CompressedImage); "
                        "default: the params file's")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.set_defaults(handler=_rig)


def _device_option(text: str) -> str:
    """argparse type: a device name checked by ``runtime.device`` (ConfigError -> usage error)."""
    from monother_ros.runtime.device import check_device

    if not text:
        return ""
    try:
        return check_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class RigOptions:
    """What ``monother rig`` was asked for (also used by ``monother demo``)."""

    def __init__(self, *, sim: bool = False, adapt: bool = False, config: Optional[str | Path] = None,
                 model: str = "", backend: str = "", namespace: str = "", device: str = "",
                 frame_prefix: str = "",
                 extra_overrides: Optional[dict[str, dict[str, str]]] = None) -> None:
        self.sim, self.adapt = sim, adapt
        self.config = Path(config) if config else None
        self.model, self.backend, self.namespace = str(model or ""), backend or "", namespace or ""
        self.frame_prefix = frame_prefix or ""
        self.device = device or ""
        self.extra_overrides = extra_overrides or {}


def _params_file(options: RigOptions) -> Path:
    from monother_ros.paths import config_path
    from monother_ros.ros.graph import PARAMS_FILE

    path = options.config or config_path(PARAMS_FILE)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    return path.resolve()


def _use_shipped_dds_profile() -> None:
    """As the launch file: point Fast DDS at the shipped SHM profile unless the user chose one."""
    from monother_ros.paths import config_path
    from monother_ros.ros.graph import FASTDDS_PROFILE

    profile = config_path(FASTDDS_PROFILE)
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ and profile.is_file():
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)


def start_rig(options: RigOptions, context: Any) -> list[Any]:
    """Create the graph's nodes in ``context`` (an initialised rclpy Context); returns them in start order.

    Raises:
        ConfigError: a missing params file, an unavailable node (``online_adaptation``), bad parameters.
        MonotherError: a node failed to start (e.g. no model); nodes already made are destroyed.
    """
    from monother_ros.ros.graph import graph_nodes, node_class, params_file_args, require_available

    params_file = _params_file(options)
    specs = graph_nodes(use_sim=options.sim, adapt=options.adapt)
    for spec in specs:
        require_available(spec)  # before starting anything: "online_adaptation is not available yet"
    import yaml
    from rclpy.parameter import Parameter

    values = {"model": options.model, "backend": options.backend, "device": options.device,
              "frame_prefix": options.frame_prefix}
    nodes: list[Any] = []
    try:
        for spec in specs:
            overrides: dict[str, Any] = {param: values[arg] for param, arg in spec.parameter_arguments
                                         if values.get(arg)}
            # Extra overrides are given as command-line text: typed as a params file would type them.
            overrides.update({k: yaml.safe_load(v) if isinstance(v, str) else v
                              for k, v in options.extra_overrides.get(spec.name, {}).items()})
            cls = node_class(spec)
            # parameter_overrides win over every params-file section (rclpy merges them last), unlike
            # `-p` arguments, which are `/**` entries ordered with the file's sections.
            nodes.append(cls(context=context, namespace=options.namespace or None,
                             cli_args=params_file_args(params_file),
                             parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]))
    except BaseException:
        for node in reversed(nodes):
            node.destroy_node()
        raise
    _connect_handover(nodes)
    return nodes


def _connect_handover(nodes: list[Any]) -> None:
    """In one process, online_adaptation hands its checkpoint folders straight to the depth node it names
    (its ``depth_node`` parameter): to that node's ``request_model``, where the model topic ends too."""
    by_name = {node.get_name(): node for node in nodes}
    adaptation = by_name.get("online_adaptation")
    if adaptation is None:
        return
    depth = by_name.get(adaptation.params["depth_node"])
    if depth is not None:
        adaptation.connect_depth_node(depth.request_model)


def run_rig(options: RigOptions, *, duration_s: float = 0.0, on_started=None, extra_nodes=None,
            on_stopping=None) -> int:
    """Run the graph until Ctrl-C (or ``duration_s`` > 0 seconds); returns the exit code.

    Args:
        options: what to start.
        duration_s: stop after this long (0 = until Ctrl-C).
        on_started: called with the graph's nodes once they exist (before spinning).
        extra_nodes: ``context -> list of nodes`` spun in the same executor (e.g. a recorder).
        on_stopping: called with the graph's nodes (those with ``health()``) before they are destroyed.
    """
    _use_shipped_dds_profile()
    import faulthandler
    import signal

    # `kill -USR1 <pid>` prints every thread's stack to stderr: how to see what a stuck rig is doing.
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from monother_ros.ros.shutdown import StopSignals

    # Our own SIGINT/SIGTERM handling: a flag the spin loop checks every 0.1 s. rclpy's handler does not
    # reliably reach a non-default context: a 6-minute soak once kept spinning 30 s after SIGINT. Repeated
    # signals (terminal + a supervisor) are ignored, so nothing interrupts the clean-up.
    signals = StopSignals(interrupt_startup=False).install()
    stop = signals.stop
    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[Any] = []
    try:
        nodes = start_rig(options, context)
        if extra_nodes is not None:
            nodes += list(extra_nodes(context))
        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)
        print(f"monother rig: running {', '.join(n.get_fully_qualified_name() for n in nodes)}"
              + (f" for {duration_s:g} s" if duration_s > 0 else " (Ctrl-C to stop)"), flush=True)
        if on_started is not None:
            on_started(nodes)
        deadline = time.monotonic() + duration_s if duration_s > 0 else None
        try:
            while context.ok() and not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        executor.shutdown(timeout_sec=2.0)
        if on_stopping is not None:
            on_stopping([n for n in nodes if hasattr(n, "health")])
    finally:
        signals.closing()
        for node in reversed(nodes):
            node.destroy_node()
        context.try_shutdown()
        signals.restore()
    return 0


def transport_overrides(transport: str) -> dict[str, dict[str, str]]:
    """Per-node parameter overrides putting every image stream of the graph on ``transport`` ('' = none)."""
    if not transport:
        return {}
    streams = {"thermal.transport": transport, "rgb.transport": transport}
    return {"sim_rig": {"transport": transport}, "thermal_depth": dict(streams), "online_adaptation": dict(streams)}


def _rig(args: argparse.Namespace) -> int:
    options = RigOptions(sim=args.sim, adapt=args.adapt, config=args.config, model=args.model,
                         backend=args.backend, namespace=args.namespace, device=args.device,
                         frame_prefix=args.frame_prefix, extra_overrides=transport_overrides(args.transport))
    return run_rig(options, duration_s=args.duration)


# ---------------------------------------------------------------------------------------- recording


class OutputRecorder:
    """Records the depth node's outputs to a rosbag2 (mcap, via rosbags) while the graph runs.

    Raw CDR bytes from ``raw=True`` subscriptions go straight into the bag (no decoding); ``depth/points``
    is kept every ``points_every``-th message. A few (thermal, depth, confidence) triplets with equal
    stamps are kept in memory for pictures, and the stamp -> receive latency of every depth image is
    measured (the simulated rig stamps with the wall clock).

    Args:
        context: rclpy context. bag_path: the bag folder to create (must not exist).
        namespace: the graph's namespace. points_every: record one cloud in this many.
        sample_period_s: keep one picture triplet per this many seconds (at most ``max_samples``).
    """

    TOPICS = (("depth/image", "sensor_msgs/msg/Image"), ("depth/confidence", "sensor_msgs/msg/Image"),
              ("depth/camera_info", "sensor_msgs/msg/CameraInfo"), ("depth/points", "sensor_msgs/msg/PointCloud2"))

    def __init__(self, context: Any, bag_path: Path, *, namespace: str = "", points_every: int = 5,
                 sample_period_s: float = 2.0, max_samples: int = 4) -> None:
        import threading

        from rclpy.node import Node
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from monother_ros.ros import qos

        self.node = Node("monother_recorder", context=context, namespace=namespace or None)
        self.points_every = max(1, int(points_every))
        self.sample_period_s = sample_period_s
        self.max_samples = max_samples
        self.counts = {topic: 0 for topic, _ in self.TOPICS}
        self.recorded = {topic: 0 for topic, _ in self.TOPICS}
        self.latencies_s: list[float] = []
        self.samples: list[dict[str, bytes]] = []
        self._recent: dict[str, dict[int, bytes]] = {"thermal": {}, "confidence": {}}
        self._last_sample = 0.0
        self._lock = threading.Lock()
        self.started = time.monotonic()
        store = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {topic: self._writer.add_connection(self.node.resolve_topic_name(topic), msgtype,
                                                                typestore=store)
                             for topic, msgtype in self.TOPICS}
        types = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
                 "sensor_msgs/msg/PointCloud2": PointCloud2}
        self._subs = [self.node.create_subscription(types[msgtype], topic, self._callback(topic), qos.SENSOR, raw=True)
                      for topic, msgtype in self.TOPICS]
        self._subs.append(self.node.create_subscription(Image, "thermal/image_raw", self._on_thermal, qos.SENSOR,
                                                        raw=True))

    @staticmethod
    def stamp_ns(raw: bytes) -> int:
        """Header stamp of a CDR-serialised message starting with a std_msgs/Header (after the 4-byte
        encapsulation): int32 sec, uint32 nanosec."""
        import struct

        sec, nanosec = struct.unpack_from("<iI", raw, 4)
        return sec * 1_000_000_000 + nanosec

    def _keep(self, kind: str, raw: bytes) -> None:
        recent = self._recent[kind]
        recent[self.stamp_ns(raw)] = raw
        while len(recent) > 30:
            recent.pop(next(iter(recent)))

    def _on_thermal(self, raw: bytes) -> None:
        with self._lock:
            self._keep("thermal", raw)

    def _callback(self, topic: str):
        def on_message(raw: bytes) -> None:
            now_ns = time.time_ns()
            with self._lock:
                self.counts[topic] += 1
                record = topic != "depth/points" or (self.counts[topic] - 1) % self.points_every == 0
                if record:
                    self._writer.write(self._connections[topic], now_ns, raw)
                    self.recorded[topic] += 1
                if topic == "depth/confidence":
                    self._keep("confidence", raw)
                    self._attach_confidence(self.stamp_ns(raw), raw)
                elif topic == "depth/image":
                    stamp = self.stamp_ns(raw)
                    self.latencies_s.append((now_ns - stamp) / 1e9)
                    self._maybe_sample(stamp, raw)
        return on_message

    def _maybe_sample(self, stamp: int, depth_raw: bytes) -> None:
        now = time.monotonic()
        if len(self.samples) >= self.max_samples or now - self._last_sample < self.sample_period_s:
            return
        thermal = self._recent["thermal"].get(stamp)
        if thermal is None:
            return
        # The confidence of this stamp is usually published right after the depth: _attach_confidence
        # fills it in when it arrives (the short ring of recent messages would have dropped it by finish()).
        self.samples.append({"stamp": stamp, "thermal": thermal, "depth": depth_raw,
                             "confidence": self._recent["confidence"].get(stamp)})
        self._last_sample = now

    def _attach_confidence(self, stamp: int, confidence_raw: bytes) -> None:
        for sample in self.samples:
            if sample["stamp"] == stamp and sample.get("confidence") is None:
                sample["confidence"] = confidence_raw

    def finish(self) -> dict[str, Any]:
        """Close the bag; returns counts, rates and latency statistics (seconds)."""
        with self._lock:
            self._writer.close()
            elapsed = time.monotonic() - self.started
            lat = sorted(self.latencies_s)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, max(0, int(round(p / 100 * len(lat))) - 1))] if lat else float("nan")

        return {
            "seconds": elapsed,
            "received": dict(self.counts),
            "recorded": dict(self.recorded),
            "rates_hz": {topic: n / elapsed for topic, n in self.counts.items()} if elapsed > 0 else {},
            "latency_stamp_to_receive_s": {"mean": sum(lat) / len(lat) if lat else float("nan"), "p50": pct(50),
                                           "p99": pct(99), "max": lat[-1] if lat else float("nan")},
        }

    def decoded_samples(self) -> list[dict[str, Any]]:
        """The picture triplets as arrays: thermal (H, W) uint16/uint8, depth and confidence (H, W) float32."""
        import numpy as np
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from monother_ros.ros.convert import image_to_array

        out = []
        for sample in self.samples:
            if sample.get("confidence") is None:
                continue
            arrays = {k: np.array(image_to_array(deserialize_message(sample[k], Image)))
                      for k in ("thermal", "depth", "confidence")}
            out.append({"stamp_ns": sample["stamp"], **arrays})
        return out


def record_rig(options: RigOptions, bag_path: Path, *, seconds: float, points_every: int = 5) -> dict[str, Any]:
    """Run the graph for ``seconds`` while recording the depth outputs into ``bag_path`` (mcap).

    Returns:
        {"recorder": OutputRecorder.finish() summary, "samples": decoded picture triplets,
        "health": {node name: its /diagnostics values at the end}}.
    """
    holder: dict[str, Any] = {}

    def extra(context: Any) -> list[Any]:
        holder["recorder"] = OutputRecorder(context, bag_path, namespace=options.namespace, points_every=points_every)
        return [holder["recorder"].node]

    def started(nodes: list[Any]) -> None:
        holder["nodes"] = [n for n in nodes if hasattr(n, "health")]

    health: dict[str, dict[str, str]] = {}

    def collect(nodes: list[Any]) -> None:
        for node in nodes:
            health[node.get_name()] = dict(node.health().values)

    run_rig(options, duration_s=seconds, on_started=started, extra_nodes=extra, on_stopping=collect)
    recorder: OutputRecorder = holder["recorder"]
    summary = recorder.finish()
    return {"recorder": summary, "samples": recorder.decoded_samples(), "health": health}

"""``sim_rig`` node: the simulated thermal + RGB + LiDAR rig, live, with the bag writer's topics.

Publishes (QoS from ``monother_ros.ros.qos``):

| topic                  | type                    | QoS                         | frame                  |
|------------------------|-------------------------|-----------------------------|------------------------|
| thermal/image_raw      | sensor_msgs/Image mono16| sensor (best effort, 5)     | thermal_optical_frame  |
| thermal/image_raw/compressed | CompressedImage 16-bit PNG (transport) | sensor | thermal_optical_frame  |
| thermal/camera_info    | sensor_msgs/CameraInfo  | sensor                      | thermal_optical_frame  |
| rgb/image_raw          | sensor_msgs/Image rgb8  | sensor                      | rgb_optical_frame      |
| rgb/image_raw/compressed | CompressedImage JPEG (transport) | sensor           | rgb_optical_frame      |
| rgb/camera_info        | sensor_msgs/CameraInfo  | sensor                      | rgb_optical_frame      |
| lidar/points           | sensor_msgs/PointCloud2 | sensor                      | lidar_link             |
| gt/depth               | sensor_msgs/Image 32FC1 | sensor                      | thermal_optical_frame  |
| /tf_static             | tf2_msgs/TFMessage      | reliable, transient local   | base_link -> sensors   |
| /rig/info              | std_msgs/String (JSON)  | reliable, transient local   |                        |
| /clock                 | rosgraph_msgs/Clock     | reliable, 1 (publish_clock) |                        |
| /diagnostics           | DiagnosticArray         | reliable, 10 (1 Hz)         |                        |

Stamps are wall-clock based (live consumers without ``use_sim_time`` see current times), whereas the bag
writer (``monother_ros.sim.bag``) uses ``SIM_EPOCH_NS`` + simulation time; topics, types, frames,
encodings and the schedule are the same.

Timing: sensor events come from ``SimRig.schedule`` (thermal 30 Hz, RGB ~20 Hz with jitter, LiDAR 10 Hz).
Event k of cycle c has the stamp ``start + (c * duration_s + t_k)`` where ``start`` is the wall clock at
start-up, and is published at wall time ``start + (c * duration_s + t_k) / rate_scale``. After
``duration_s`` the schedule repeats (scene and trajectory restart) while stamps keep increasing.
With ``rate_scale != 1`` the stamps run faster or slower than the wall clock: set ``publish_clock`` and
run consumers with ``use_sim_time`` (``/clock`` carries each published stamp).

Threads: a render thread renders events ahead into a bounded queue (``queue_depth``); a publish thread
sleeps until each event is due and publishes it. The executor thread only serves timers and services.
If rendering is slower than real time, events already due are skipped before rendering and counted as
drops (``/diagnostics``): the stream thins out but never lags; a frame whose rendering ran past its
due time goes out at once with its own stamp (lateness <= one render time, reported). Sensors nobody
subscribes to are not rendered at all.

Parameters: see ``SIM_PARAMETERS`` (and config/rig.yaml ``sim_rig``).
"""
from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from monother_ros.errors import ConfigError
from monother_ros.ros import qos
from monother_ros.ros.entry import run_node
from monother_ros.ros.convert import (
    array_to_image,
    camera_to_info,
    make_compressed_image,
    make_header,
    ns_to_stamp,
    point_cloud_from_xyz,
)
from monother_ros.ros.diagnostics import (
    DiagnosticsPublisher,
    HealthReport,
    LatencyStats,
    Level,
    ProblemTracker,
    RateMeter,
)
from monother_ros.ros.frames import frame_prefix_error, with_prefix
from monother_ros.ros.params import ParamSpec, ParamTable, in_range, one_of, positive
from monother_ros.ros.tf import StaticTransformBroadcaster, transform_to_msg

__all__ = ["SIM_PARAMETERS", "SimRigNode", "main"]

SIM_PARAMETERS = ParamTable(
    [
        ParamSpec("seed", int, 0, "scene, trajectory and noise seed"),
        ParamSpec("scenario", str, "day", "lighting: day, night or fog", one_of("day", "night", "fog")),
        ParamSpec("family", str, "urban", "scene family: urban or campus", one_of("urban", "campus")),
        ParamSpec("rate_scale", float, 1.0, "speed of simulated time versus the wall clock (1 = real time)",
                  in_range(0.01, 100.0)),
        ParamSpec("publish_clock", bool, False, "publish /clock with the simulated stamps (for use_sim_time)"),
        ParamSpec("render_scale", float, 1.0,
                  "image size factor (1 = thermal 640x512, RGB 1280x720); smaller renders faster",
                  in_range(0.05, 1.0)),
        ParamSpec("duration_s", float, 300.0, "length of one schedule cycle in seconds; it then repeats", positive),
        ParamSpec("queue_depth", int, 4, "rendered events kept ready ahead of their publish time", in_range(1, 64)),
        ParamSpec("publish_rgb", bool, True, "render and publish the RGB camera"),
        ParamSpec("publish_lidar", bool, True, "render and publish the LiDAR cloud"),
        ParamSpec("publish_gt_depth", bool, True, "publish the thermal ground-truth depth on gt/depth"),
        ParamSpec("frame_prefix", str, "", "tf_prefix put in front of every frame id published (e.g. robot1/ -> "
                  "robot1/base_link), for several robots in one DDS domain", frame_prefix_error),
        ParamSpec("transport", str, "raw", "image transport of thermal/image_raw and rgb/image_raw: raw, compressed "
                  "(only <topic>/compressed: thermal 16-bit PNG, RGB JPEG, as image_transport) or both",
                  one_of("raw", "compressed", "both")),
    ]
)

THERMAL_IMAGE_TOPIC = "thermal/image_raw"
THERMAL_INFO_TOPIC = "thermal/camera_info"
RGB_IMAGE_TOPIC = "rgb/image_raw"
THERMAL_COMPRESSED_TOPIC = THERMAL_IMAGE_TOPIC + "/compressed"
RGB_COMPRESSED_TOPIC = RGB_IMAGE_TOPIC + "/compressed"
RGB_INFO_TOPIC = "rgb/camera_info"
LIDAR_TOPIC = "lidar/points"
GT_DEPTH_TOPIC = "gt/depth"
RIG_INFO_TOPIC = "rig/info"
_KINDS = ("thermal", "rgb", "lidar")


@dataclass
class _Rendered:
    kind: str
    stamp_ns: int
    due: float  # monotonic seconds
    messages: list[tuple[Any, Any]]  # (publisher, message)


class SimRigNode(Node):
    """The live simulated rig (see the module docstring for topics, timing and threads).

    Args:
        node_name: ROS node name.
        **kwargs: passed to ``rclpy.node.Node`` (``context``, ``namespace``, ``parameter_overrides``, ...).

    Raises:
        ConfigError: invalid parameters.
    """

    def __init__(self, node_name: str = "sim_rig", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = SIM_PARAMETERS.declare(self)
        from monother_ros.sim.rig import SimRig  # numpy-heavy; only when a sim node is made

        p = self.params
        try:
            self.rig = SimRig(p["seed"], p["scenario"], p["family"])
        except ValueError as exc:
            raise ConfigError(f"sim_rig: {exc}") from exc
        prefix = p["frame_prefix"]
        self.base_frame = with_prefix(prefix, self.rig.BASE_FRAME)
        self.thermal_frame = with_prefix(prefix, self.rig.THERMAL_FRAME)
        self.rgb_frame = with_prefix(prefix, self.rig.RGB_FRAME)
        self.lidar_frame = with_prefix(prefix, self.rig.LIDAR_FRAME)
        scale = p["render_scale"]
        self.thermal_camera = _scaled(self.rig.thermal_camera, scale)
        self.rgb_camera = _scaled(self.rig.rgb_camera, scale)
        self._events = self.rig.schedule(p["duration_s"])
        if not self._events:
            raise ConfigError(f"sim_rig: duration_s {p['duration_s']} holds no sensor event")

        raw, compressed = p["transport"] in ("raw", "both"), p["transport"] in ("compressed", "both")
        self.pub_thermal = self.create_publisher(Image, THERMAL_IMAGE_TOPIC, qos.SENSOR) if raw else None
        self.pub_thermal_z = (self.create_publisher(CompressedImage, THERMAL_COMPRESSED_TOPIC, qos.SENSOR)
                              if compressed else None)
        self.pub_rgb_z = (self.create_publisher(CompressedImage, RGB_COMPRESSED_TOPIC, qos.SENSOR)
                          if compressed and p["publish_rgb"] else None)
        self.pub_thermal_info = self.create_publisher(CameraInfo, THERMAL_INFO_TOPIC, qos.SENSOR)
        self.pub_rgb = self.create_publisher(Image, RGB_IMAGE_TOPIC, qos.SENSOR) if p["publish_rgb"] and raw else None
        self.pub_rgb_info = self.create_publisher(CameraInfo, RGB_INFO_TOPIC, qos.SENSOR) if p["publish_rgb"] else None
        self.pub_lidar = self.create_publisher(PointCloud2, LIDAR_TOPIC, qos.SENSOR) if p["publish_lidar"] else None
        self.pub_gt = self.create_publisher(Image, GT_DEPTH_TOPIC, qos.SENSOR) if p["publish_gt_depth"] else None
        self.pub_clock = self.create_publisher(Clock, "/clock", qos.CLOCK) if p["publish_clock"] else None

        self.start_wall_ns = time.time_ns()
        self._start_mono = time.monotonic()
        self._static = StaticTransformBroadcaster(self)
        self._static.send([
            transform_to_msg(self.base_frame, self.thermal_frame, self.start_wall_ns, self.rig.T_base_thermal),
            transform_to_msg(self.base_frame, self.rgb_frame, self.start_wall_ns, self.rig.T_base_rgb),
            transform_to_msg(self.base_frame, self.lidar_frame, self.start_wall_ns, self.rig.T_base_lidar),
        ])

        # The rig description, as the bag writer records it (latched: late joiners get it).
        self.pub_info = self.create_publisher(String, RIG_INFO_TOPIC, qos.TF_STATIC_PUBLISHER)
        self.pub_info.publish(String(data=json.dumps(self.rig_info(), sort_keys=True)))

        self.published = {k: 0 for k in _KINDS}
        self.dropped = {k: 0 for k in _KINDS}   # skipped because rendering could not keep up
        self.idle = {k: 0 for k in _KINDS}      # skipped because nobody subscribed
        self.rates = {k: RateMeter() for k in _KINDS}
        self.problems = ProblemTracker(self.get_logger())
        self.lateness = LatencyStats()  # publish time minus due time, seconds
        self._last_clock_ns = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[Optional[_Rendered]] = queue.Queue(maxsize=p["queue_depth"])
        self._stop = threading.Event()
        self._render_thread = threading.Thread(target=self._render_loop, name="sim_rig-render", daemon=True)
        self._publish_thread = threading.Thread(target=self._publish_loop, name="sim_rig-publish", daemon=True)
        self._render_thread.start()
        self._publish_thread.start()
        self.diagnostics = DiagnosticsPublisher(self, [self.health])
        self.get_logger().info(
            f"simulated rig seed={p['seed']} {p['scenario']}/{p['family']}: thermal "
            f"{self.thermal_camera.width}x{self.thermal_camera.height}, RGB {self.rgb_camera.width}x"
            f"{self.rgb_camera.height}, rate_scale {p['rate_scale']}"
        )

    def rig_info(self) -> dict[str, Any]:
        """The JSON of ``/rig/info``: the bag writer's fields plus the live node's settings."""
        rig, p = self.rig, self.params
        return {
            "seed": p["seed"], "scenario": p["scenario"], "family": p["family"], "seconds": p["duration_s"],
            "epoch_ns": self.start_wall_ns, "thermal_frame": self.thermal_frame, "rgb_frame": self.rgb_frame,
            "lidar_frame": self.lidar_frame, "base_frame": self.base_frame, "generator": "monother_ros.ros.sim_node",
            "rate_scale": p["rate_scale"], "render_scale": p["render_scale"],
        }

    # ------------------------------------------------------------------ timing

    def _sim_offset_s(self, index: int) -> float:
        """Simulated seconds since start of the index-th event over all cycles."""
        n = len(self._events)
        cycle, k = divmod(index, n)
        return cycle * self.params["duration_s"] + self._events[k].stamp_ns * 1e-9

    def _wanted(self, kind: str) -> bool:
        publishers = {
            "thermal": [self.pub_thermal, self.pub_thermal_z, self.pub_thermal_info, self.pub_gt],
            "rgb": [self.pub_rgb, self.pub_rgb_z, self.pub_rgb_info],
            "lidar": [self.pub_lidar],
        }[kind]
        return any(pub is not None and pub.get_subscription_count() > 0 for pub in publishers)

    def _enabled(self, kind: str) -> bool:
        return kind == "thermal" or (kind == "rgb" and self.pub_rgb_info is not None) or (
            kind == "lidar" and self.pub_lidar is not None)

    # ------------------------------------------------------------------ threads

    def _render_loop(self) -> None:
        try:
            self._render_events()
        except Exception:  # noqa: BLE001
            if self.context.ok() and not self._stop.is_set():
                raise
            # Ctrl-C shut the context down under us (rclpy calls fail with RCLError): just stop.

    def _render_events(self) -> None:
        index = 0
        n = len(self._events)
        while not self._stop.is_set() and self.context.ok():
            event = self._events[index % n]
            offset = self._sim_offset_s(index)
            index += 1
            kind = event.kind
            if not self._enabled(kind):
                continue
            due = self._start_mono + offset / self.params["rate_scale"]
            if due < time.monotonic():
                with self._lock:
                    self.dropped[kind] += 1  # already late before rendering: skip, never lag
                continue
            if not self._wanted(kind):
                with self._lock:
                    self.idle[kind] += 1
                self._sleep_until(due)  # keep the schedule's pace while idle
                continue
            stamp_ns = self.start_wall_ns + int(round(offset * 1e9))
            try:
                messages = self._render(kind, event.stamp_ns * 1e-9, stamp_ns)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not kill the thread
                with self._lock:
                    self.dropped[kind] += 1
                self.problems.report("render_failed", f"{kind} at t={offset:.3f} s: {type(exc).__name__}: {exc}", Level.ERROR)
                continue
            self.problems.clear("render_failed")
            item = _Rendered(kind, stamp_ns, due, messages)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _render(self, kind: str, t: float, stamp_ns: int) -> list[tuple[Any, Any]]:
        rig = self.rig
        if kind == "thermal":
            frame = rig.render_thermal(t, self.thermal_camera)
            out = [(self.pub_thermal_info, camera_to_info(self.thermal_camera, stamp_ns=stamp_ns,
                                                          frame_id=self.thermal_frame))]
            if self.pub_thermal is not None:
                out.append((self.pub_thermal, array_to_image(frame.counts, encoding="mono16", stamp_ns=stamp_ns,
                                                             frame_id=self.thermal_frame)))
            if self.pub_thermal_z is not None:
                out.append((self.pub_thermal_z, _compressed(frame.counts, "mono16", "png", stamp_ns,
                                                            self.thermal_frame)))
            if self.pub_gt is not None:
                out.append((self.pub_gt, array_to_image(frame.depth, encoding="32FC1", stamp_ns=stamp_ns, frame_id=self.thermal_frame)))
            return out
        if kind == "rgb":
            frame = rig.render_rgb(t, self.rgb_camera)
            out = [(self.pub_rgb_info, camera_to_info(self.rgb_camera, stamp_ns=stamp_ns, frame_id=self.rgb_frame))]
            if self.pub_rgb is not None:
                out.append((self.pub_rgb, array_to_image(frame.rgb, encoding="rgb8", stamp_ns=stamp_ns,
                                                         frame_id=self.rgb_frame)))
            if self.pub_rgb_z is not None:
                out.append((self.pub_rgb_z, _compressed(frame.rgb, "rgb8", "jpeg", stamp_ns, self.rgb_frame)))
            return out
        points = rig.lidar_scan(t)
        cloud = point_cloud_from_xyz(points[None, :, :], stamp_ns=stamp_ns, frame_id=self.lidar_frame, is_dense=True)
        return [(self.pub_lidar, cloud)]

    def _sleep_until(self, due: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _publish_loop(self) -> None:
        try:
            self._publish_events()
        except Exception:  # noqa: BLE001
            if self.context.ok() and not self._stop.is_set():
                raise

    def _publish_events(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._sleep_until(item.due)
            if self._stop.is_set():
                break
            # A frame that finished rendering after its due time still goes out with its own stamp
            # (like a sensor's latency): the render thread jumps to the present, so this never grows.
            self.lateness.add(max(0.0, time.monotonic() - item.due))
            if self.pub_clock is not None:
                with self._lock:
                    advance = item.stamp_ns > self._last_clock_ns
                    self._last_clock_ns = max(self._last_clock_ns, item.stamp_ns)
                if advance:
                    self.pub_clock.publish(Clock(clock=ns_to_stamp(item.stamp_ns)))
            for publisher, message in item.messages:
                publisher.publish(message)
            with self._lock:
                self.published[item.kind] += 1
            self.rates[item.kind].tick()

    # ------------------------------------------------------------------ diagnostics / shutdown

    def health(self) -> HealthReport:
        """Current rates and counters as a report (also published on /diagnostics every second)."""
        report = HealthReport(f"{self.get_name()}: simulated rig", hardware_id="sim")
        with self._lock:
            published, dropped, idle = dict(self.published), dict(self.dropped), dict(self.idle)
        for kind in _KINDS:
            if not self._enabled(kind):
                continue
            report.add_rate(f"{kind} rate (Hz)", self.rates[kind])
            report.add_value(f"{kind} published", published[kind])
            report.add_value(f"{kind} dropped (render too slow)", dropped[kind])
            report.add_value(f"{kind} idle (no subscriber)", idle[kind])
        total = sum(published.values()) + sum(dropped.values())
        report.add_latency("publish lateness", self.lateness)
        report.add_problems(self.problems)
        if total and sum(dropped.values()) > 0.1 * total:
            report.add_check(Level.WARN, f"rendering cannot keep up: {sum(dropped.values())} of {total} events dropped "
                                         f"(lower render_scale or rate_scale)")
        return report

    def destroy_node(self) -> None:
        """Stop the render and publish threads, then destroy the node."""
        stop = getattr(self, "_stop", None)  # absent when the constructor failed early
        if stop is not None:
            stop.set()
            for thread in (self._render_thread, self._publish_thread):
                if thread.is_alive():
                    thread.join(timeout=5.0)
        super().destroy_node()


def _compressed(image, encoding: str, codec: str, stamp_ns: int, frame_id: str) -> CompressedImage:
    """A CompressedImage as image_transport's compressed publisher sends it (PNG level 1: the fastest that
    still compresses; JPEG quality 90)."""
    from monother_ros.core.image_codec import encode_compressed_image

    payload, fmt = encode_compressed_image(image, encoding, codec, jpeg_quality=90)
    return make_compressed_image(payload, fmt, stamp_ns, frame_id)


def _scaled(camera, scale: float):
    if scale == 1.0:
        return camera
    width, height = max(8, int(round(camera.width * scale))), max(8, int(round(camera.height * scale)))
    return camera.resized(width, height, align_corners=False)


def main(args: Optional[list[str]] = None) -> int:
    """Console entry ``sim_rig``: run the node until Ctrl-C (exit 2 after one line on a configuration error)."""
    return run_node(SimRigNode, "sim_rig", args)


if __name__ == "__main__":
    raise SystemExit(main())

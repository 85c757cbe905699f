"""``thermal_depth`` node: metric depth, confidence and an organised point cloud from a thermal camera.

Topics (relative names, so a namespace or remapping moves them; QoS from ``monother_ros.ros.qos``):

| topic                | dir | type                    | QoS                         | frame                       |
|----------------------|-----|-------------------------|-----------------------------|-----------------------------|
| thermal/image_raw    | in  | sensor_msgs/Image       | sensor (best effort, 5)     | thermal optical frame       |
| thermal/camera_info  | in  | sensor_msgs/CameraInfo  | sensor (cached, not synced) | thermal optical frame       |
| rgb/image_raw        | in  | sensor_msgs/Image       | sensor (teacher.enabled or cloud.rgb) | RGB optical frame |
| rgb/camera_info      | in  | sensor_msgs/CameraInfo  | sensor (teacher.enabled or cloud.rgb) | RGB optical frame |
| /tf, /tf_static      | in  | tf2_msgs/TFMessage      | tf2's (teacher.enabled or cloud.rgb)  |                   |
| depth/image          | out | Image 32FC1, m, NaN bad | sensor                      | input header (stamp, frame) |
| depth/camera_info    | out | sensor_msgs/CameraInfo, P = [K | 0], R = I | sensor    | input header                |
| depth/confidence     | out | Image 32FC1 in [0, 1]   | sensor                      | input header                |
| depth/points         | out | PointCloud2 x,y,z,intensity (= confidence)[,rgb], organised | sensor | input header |
| teacher/confidence   | out | Image 32FC1 in [0, 1]   | sensor (teacher.enabled)    | input header                |
| /diagnostics         | out | DiagnosticArray (1 Hz)  | reliable, 10                |                             |

Data flow (DESIGN.md §3): the image callback only puts the message into a latest-only slot
(:class:`monother_ros.ros.worker.LatestSlot`); ONE worker thread decodes it (zero-copy view), runs the
engine (``runtime.make_backend``: percentile normalisation, resize to the engine input, network,
resize back, NaN for invalid) and publishes. The single-threaded executor never blocks; a frame replaced
in the slot before the worker took it is dropped and counted.

Confidence: ``depth/confidence`` is the student's own confidence output (1 where the depth is valid and
0 elsewhere when the model has none), replaced by the fused confidence ``c`` below whenever the teacher
ran (with or without ``fusion.enabled``, which only decides whether the depth is the fused one).

Laziness: while no output topic has a subscriber the node holds no input subscription and computes
nothing. Subscriber changes come from publisher *matched* events (``PublisherEventCallbacks(matched=)``,
rclpy Jazzy/Kilted); where rclpy has no matched event (Humble) a 0.5 s timer checks
``get_subscription_count()`` instead. Per frame, the confidence image, camera_info and point cloud are
built only for topics with subscribers.

Teacher (``teacher.enabled``, needs a dual model: student + RGB teacher + confidence network, run by
``runtime.pair_engine.PairEngine`` on the torch backend): RGB frames are paired with thermal frames by the message_filters ApproximateTime policy
(``ros.pairing``, ``teacher.queue_size``, ``teacher.slop_s``); a thermal frame whose set has not been
emitted yet uses the nearest RGB frame already received within the slop. Thermal-only operation never
waits: a frame with no RGB partner is processed at once by the student alone. For a pair, the worker looks
up ``T_rgb_thermal`` at the thermal stamp (``teacher.tf_timeout_s``, waiting on the worker thread only),
runs both branches and the confidence network on the 8-channel metadata, and warps the teacher depth and
confidence into the thermal frame (``core.warp``); the warped confidence is published on
``teacher/confidence``. With ``fusion.enabled`` the depth is the confidence-weighted fusion of teacher
and student depth (``core.fusion.fuse``, formula there); the published confidence is the fused one.

Camera model: the network sees the raw (unrectified) thermal image, so ``depth/image`` is in the raw
image's geometry, described by K (with D); P describes the rectified image. ``depth/points`` uses K, and
``depth/camera_info`` is published with P = [K | 0] and R = I (``convert.raw_geometry_info``), so
depth_image_proc, which reads P, computes the same cloud. Cloud options (``cloud.*``, ``core.cloud``):
decimation, a range limit and an ``rgb`` field coloured from the paired RGB frame (paired and located
like the teacher's: ``teacher.slop_s``, ``teacher.queue_size``, ``teacher.tf_timeout_s``). When the engine
runs whole frames on its GPU (the torch engine on CUDA) and no ``rgb`` field is asked for, the engine
builds the cloud there and the node copies its packed points into the message (``engine_clouds`` counter).

Hot swap: a model folder named on ``model_topic`` (or handed over in-process by ``online_adaptation``
through :meth:`ThermalDepthNode.request_model`) goes to the node's
:class:`~monother_ros.runtime.engine_holder.EngineHolder`, which loads it for this node's backend,
device, precision and input size in its loader thread and swaps it in between two frames (TensorRT:
refit, or a rebuild at most every ``swap.min_rebuild_interval_s``). A failed swap keeps the running
engine: WARN and ``model_swap_failed`` in ``/diagnostics``. With the teacher on, the new student joins
the running teacher.

Time: a backward jump of the node clock (``ros2 bag play --loop --clock`` with ``use_sim_time``) resets
the pairing, the RGB history, TF's dynamic cache and the rate/latency meters (``create_jump_callback``).

Bad input (wrong encoding, short data, zero or huge size, bad step, bad camera_info, stamps going back,
missing TF / camera_info / RGB) is reported by :class:`~monother_ros.ros.diagnostics.ProblemTracker`:
one throttled log line per problem, the reason in ``/diagnostics``, the frame dropped or processed
without the missing part; the problem clears when good input returns.

Real drivers (``ros.camera_input``): ``thermal.transport``/``rgb.transport`` ``compressed`` subscribe
``<base>/compressed`` (CompressedImage, PNG/JPEG); ``*.camera_info_url`` is a calibration file used while
no camera_info arrives; ``*.frame_id`` names the frame of input images that arrive without one (the
``frame_id`` parameter instead renames the outputs' frame); ``thermal.crop`` drops rows/columns first
(camera_info cropped alike); grey rgb8/bgr8 thermal frames are accepted, colour-mapped ones refused.
Lens distortion in camera_info is not modelled: warned once and shown in ``/diagnostics`` (WARN).

Blind sensor (``core.frame_health``, ``frame_check.*``): a thermal frame without a scene (closed
shutter, lens cap, saturated or dead sensor, frozen driver) gets NO depth message at all, rather than an
all-NaN one: consumers' staleness checks then see the sensor is out, whereas NaN reads as "nothing
there" (free space) to some of them. ``blind_frame`` is an ERROR in ``/diagnostics`` while it lasts and
clears on the next good frame.

Runtime parameters: the thresholds (``min_depth_m``, ``max_depth_m``, ``min_confidence``), ``fusion.enabled``,
``cloud.decimation`` and ``cloud.max_range_m`` are ``dynamic``: ``ros2 param set`` changes them from the
next frame (the cloud builder follows the ``cloud.*`` values per frame), validated like at start (an
invalid value is refused with the reason, nothing changes); the rest is read-only (``cloud.rgb`` too: it
decides at start whether RGB is subscribed and paired).

Transport losses: :class:`~monother_ros.ros.arrival.ArrivalMonitor` compares, at the image callback, the
arrival rate with the rate the stamps step at; far fewer arrivals (a driver without the shipped Fast DDS
profile) is a WARN in ``/diagnostics`` naming ``FASTDDS_DEFAULT_PROFILES_FILE``. Frames the node drops
itself (latest-only slot) are counted separately and do not count as losses.

Frames: ``frame_prefix`` (e.g. ``robot1/``) is put in front of the output frame and of the frames looked
up in TF, unless they carry it already (several robots in one DDS domain).

Parameters: :data:`DEPTH_PARAMETERS` (config/rig.yaml ``thermal_depth`` section, README table).
"""
from __future__ import annotations

import array
import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from monother_ros.core.cloud import CloudOptions, CloudProjector, RgbView
from monother_ros.core.fusion import fuse
from monother_ros.errors import CalibrationError, ConfigError
from monother_ros.ros import qos
from monother_ros.ros.camera_input import (
    FRAME_CHECK_PARAMETERS,
    RGB_INPUT_PARAMETERS,
    THERMAL_INPUT_PARAMETERS,
    CameraStream,
    frame_health_config,
)
from monother_ros.ros.arrival import ArrivalMonitor
from monother_ros.ros.entry import run_node
from monother_ros.ros.convert import (
    ImageDecodeError,
    array_to_image,
    camera_from_info,
    distortion_note,
    raw_geometry_info,
    stamp_to_ns,
)
from monother_ros.ros.diagnostics import (
    HealthReport,
    LatencyStats,
    Level,
    ProblemTracker,
    RateMeter,
    make_array,
    to_status,
)
from monother_ros.ros.frames import frame_prefix_error, with_prefix
from monother_ros.ros.pairing import ApproximateTimeSynchronizer, nearest_within
from monother_ros.ros.params import ParamSpec, ParamTable, in_range, non_negative, one_of, positive
from monother_ros.ros.worker import LatestSlot, Worker
from monother_ros.runtime.device import DEVICE_HELP, device_validator

__all__ = ["DEPTH_PARAMETERS", "INPUT_TOPICS", "OUTPUT_TOPICS", "ThermalDepthNode", "CloudBuilder", "make_cloud",
           "main"]

DEPTH_PARAMETERS = ParamTable(
    [
        ParamSpec("model", str, "", "model folder or .onnx file; empty = the shipped default (engines/default)"),
        ParamSpec("backend", str, "auto", "inference backend: auto (TensorRT >= 8.6 if it builds, else torch on a "
                  "CUDA GPU, else ONNX Runtime on the CPU; the choice and reasons are in /diagnostics), "
                  "tensorrt, onnxruntime or torch", one_of("auto", "tensorrt", "onnxruntime", "torch")),
        ParamSpec("device", str, "auto", f"where the engine and the teacher run: {DEVICE_HELP}", device_validator),
        ParamSpec("precision", str, "fp16", "precision on CUDA (TensorRT, torch, teacher); CPU backends run fp32",
                  one_of("fp16", "fp32")),
        ParamSpec("input_height", int, 0, "network input height in pixels, a multiple of 14; 0 = the model's",
                  non_negative),
        ParamSpec("input_width", int, 0, "network input width in pixels, a multiple of 14; 0 = the model's",
                  non_negative),
        ParamSpec("num_threads", int, 0, "CPU threads for the engine; 0 = the backend's default", non_negative),
        ParamSpec("cache_dir", str, "",
                  "where exported ONNX files and TensorRT engines are cached; empty = engines/cache"),
        ParamSpec("min_depth_m", float, 0.0, "depth at or below this is invalid (NaN), metres; 0 = the model's",
                  non_negative, dynamic=True),
        ParamSpec("max_depth_m", float, 0.0, "depth at or above this is invalid (NaN), metres; 0 = the model's",
                  non_negative, dynamic=True),
        ParamSpec("min_confidence", float, 0.0, "pixels with confidence below this are invalid (NaN); 0 keeps all",
                  in_range(0.0, 1.0), dynamic=True),
        ParamSpec("frame_id", str, "", "frame of the outputs; empty = the input image's frame (to name the frame "
                  "of input images that arrive without one, use thermal.frame_id)"),
        ParamSpec("frame_prefix", str, "", "tf_prefix put in front of the output frame and the frames looked up in "
                  "TF unless they carry it already (e.g. robot1/), for several robots in one DDS domain",
                  frame_prefix_error),
        ParamSpec("max_image_dimension", int, 8192, "thermal images wider or taller than this are rejected, pixels",
                  in_range(2, 65536)),
        ParamSpec("camera_info_timeout_s", float, 2.0,
                  "report camera_info missing after this long without one, seconds (depth is still published)",
                  positive),
        ParamSpec("lazy", bool, True, "subscribe to the inputs only while an output has a subscriber"),
        ParamSpec("diagnostics_period_s", float, 1.0, "period of /diagnostics, seconds", in_range(0.1, 60.0)),
        ParamSpec("min_output_rate_hz", float, 0.0,
                  "WARN in /diagnostics when the output rate is below this while input arrives; 0 = off",
                  non_negative),
        ParamSpec("model_topic", str, "adaptation/model_path",
                  "latched std_msgs/String topic naming a new model folder to hot-swap (from online_adaptation "
                  "in another process); empty = off"),
        ParamSpec("swap.min_rebuild_interval_s", float, 600.0,
                  "TensorRT: a hot swap that cannot refit the running engine rebuilds it at most this often, "
                  "seconds (refits are not limited)", non_negative),
        ParamSpec("swap.min_interval_s", float, 0.0,
                  "any hot swap at most this often, seconds; the newest waiting model is loaded (0 = no limit). "
                  "On a CPU each swap exports an ONNX file (tens of CPU seconds)", non_negative),
        ParamSpec("teacher.enabled", bool, False,
                  "pair RGB frames and run the RGB teacher + confidence network (needs a dual model, torch)"),
        ParamSpec("teacher.slop_s", float, 0.05, "largest stamp difference of a thermal/RGB pair, seconds",
                  in_range(0.0, 1.0)),
        ParamSpec("teacher.queue_size", int, 10, "messages per stream held by the ApproximateTime pairing",
                  in_range(1, 1000)),
        ParamSpec("teacher.tf_timeout_s", float, 0.05,
                  "wait for the RGB-thermal extrinsic at the thermal stamp, seconds (worker thread only)",
                  in_range(0.0, 10.0)),
        ParamSpec("teacher.device", str, "", f"device of the teacher: empty = the device parameter's, or {DEVICE_HELP}",
                  lambda v: device_validator(v) if v else None),
        ParamSpec("fusion.enabled", bool, False,
                  "publish the confidence-weighted fusion of teacher and student depth when the teacher ran "
                  "(depth/confidence is the fused confidence either way)", dynamic=True),
        *THERMAL_INPUT_PARAMETERS,
        *RGB_INPUT_PARAMETERS,
        *FRAME_CHECK_PARAMETERS,
        ParamSpec("cloud.decimation", int, 1,
                  "depth/points keeps every n-th pixel row and column (organised, ceil(H/n) x ceil(W/n)); 1 = all",
                  in_range(1, 64), dynamic=True),
        ParamSpec("cloud.max_range_m", float, 0.0,
                  "depth/points: points farther than this from the camera centre (Euclidean) are NaN, metres; "
                  "0 = no limit", non_negative, dynamic=True),
        ParamSpec("cloud.rgb", bool, False,
                  "add an rgb field to depth/points: each point's colour in the paired RGB frame (through the TF "
                  "extrinsic; black when unseen or unpaired); pairs RGB as teacher.slop_s / queue_size / tf_timeout_s"),
    ]
)

THERMAL_IMAGE_TOPIC = "thermal/image_raw"
THERMAL_INFO_TOPIC = "thermal/camera_info"
RGB_IMAGE_TOPIC = "rgb/image_raw"
RGB_INFO_TOPIC = "rgb/camera_info"
DEPTH_IMAGE_TOPIC = "depth/image"
DEPTH_INFO_TOPIC = "depth/camera_info"
CONFIDENCE_TOPIC = "depth/confidence"
POINTS_TOPIC = "depth/points"
TEACHER_CONFIDENCE_TOPIC = "teacher/confidence"

# (topic, type name, QoS profile name in ros.qos, frame, condition) for the README tables and tests.
INPUT_TOPICS: tuple[tuple[str, str, str, str, str], ...] = (
    (THERMAL_IMAGE_TOPIC, "sensor_msgs/Image (mono16, mono8, 16UC1, 8UC1; rgb8/bgr8 if grey)", "SENSOR",
     "thermal optical", "thermal.transport raw"),
    (THERMAL_IMAGE_TOPIC + "/compressed", "sensor_msgs/CompressedImage (16/8-bit PNG, 8-bit JPEG)", "SENSOR",
     "thermal optical", "thermal.transport compressed"),
    (THERMAL_INFO_TOPIC, "sensor_msgs/CameraInfo", "SENSOR", "thermal optical", "cached"),
    (RGB_IMAGE_TOPIC, "sensor_msgs/Image (rgb8, bgr8)", "SENSOR", "RGB optical", "teacher.enabled or cloud.rgb"),
    (RGB_IMAGE_TOPIC + "/compressed", "sensor_msgs/CompressedImage (JPEG, PNG)", "SENSOR", "RGB optical",
     "teacher.enabled or cloud.rgb, rgb.transport compressed"),
    (RGB_INFO_TOPIC, "sensor_msgs/CameraInfo", "SENSOR", "RGB optical", "teacher.enabled or cloud.rgb, cached"),
    ("/tf", "tf2_msgs/TFMessage", "TF", "", "teacher.enabled or cloud.rgb"),
    ("/tf_static", "tf2_msgs/TFMessage", "TF_STATIC", "", "teacher.enabled or cloud.rgb"),
    ("adaptation/model_path", "std_msgs/String (model folder)", "TF_STATIC_PUBLISHER", "",
     "model_topic; hot swap"),
)
OUTPUT_TOPICS: tuple[tuple[str, str, str, str, str], ...] = (
    (DEPTH_IMAGE_TOPIC, "sensor_msgs/Image (32FC1, m, NaN invalid)", "SENSOR", "input image's", ""),
    (DEPTH_INFO_TOPIC, "sensor_msgs/CameraInfo (P = [K | 0], R = I: the raw image's geometry)", "SENSOR",
     "input image's", "after camera_info"),
    (CONFIDENCE_TOPIC, "sensor_msgs/Image (32FC1, 0..1)", "SENSOR", "input image's", ""),
    (POINTS_TOPIC, "sensor_msgs/PointCloud2 (x, y, z, intensity = confidence, rgb with cloud.rgb; organised)",
     "SENSOR", "input image's", "after camera_info"),
    (TEACHER_CONFIDENCE_TOPIC, "sensor_msgs/Image (32FC1, 0..1)", "SENSOR", "input image's", "teacher.enabled"),
    ("/diagnostics", "diagnostic_msgs/DiagnosticArray", "DIAGNOSTICS", "", "1 Hz"),
)

_RGB_ENCODINGS = ("rgb8", "bgr8")
_BACKWARD_JUMP_NS = 1_000_000_000  # a stamp older than the previous one by more than this resets pairing
_RGB_HISTORY = 16
_RGB_STOPPED_NS = 1_000_000_000  # no RGB frame this long before a thermal frame: the RGB stream stopped


@dataclass
class _Frame:
    """What the image callback hands to the worker."""

    msg: Image
    received: float  # time.monotonic() at the callback
    decoded: Any = None  # compressed input: the thermal array (or its ImageDecodeError), decoded ahead


class ThermalDepthNode(Node):
    """The ``thermal_depth`` node (topics, threads and behaviour: see the module docstring).

    Args:
        node_name: ROS node name.
        **kwargs: passed to ``rclpy.node.Node`` (``context``, ``namespace``, ``parameter_overrides``,
            ``cli_args``, ...).

    Raises:
        ConfigError: invalid parameters, no model, a model without teacher with ``teacher.enabled``.
        CheckpointError, EngineFileError, BackendUnavailableError: the engine cannot be built.
    """

    def __init__(self, node_name: str = "thermal_depth", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = DEPTH_PARAMETERS.declare(self, on_change=self._on_params_change)
        self._lock = threading.Lock()
        self.problems = ProblemTracker(self.get_logger())
        self._make_inputs(p)
        from monother_ros.runtime.engine_holder import EngineHolder

        if p["fusion.enabled"] and not p["teacher.enabled"]:
            self.get_logger().warning("fusion.enabled has no effect without teacher.enabled")
        # The running engine (a PairEngine with the teacher on); every hot swap goes through it.
        self.models = EngineHolder(self._engine_settings(p), self._resolve_model(p["model"]), on_swap=self._on_swap)
        if p["teacher.enabled"]:
            self.engine.selection = _teacher_selection(p, str(self.engine.device))
        selection = getattr(self.engine, "selection", None)
        if selection is not None:
            self.get_logger().info(f"backend {selection.summary()}")
        info = self.engine.info
        warm_ms = self._warm_up()
        self.get_logger().info(
            f"engine {info.backend} {info.precision} {info.model_name} ({info.model_hash[:12]}), input "
            f"{info.input_hw[0]}x{info.input_hw[1]}, model {self.model_path}"
            + (", teacher on" if self.teacher else "") + (", fusion on" if p["fusion.enabled"] and self.teacher else "")
            + f"; warm-up {warm_ms:.0f} ms")

        # Publishers first: their matched events drive the lazy input subscriptions.
        self._matched_events = _matched_events_supported()
        def make(msg_type, topic):
            events = None
            if self._matched_events:
                from rclpy.event_handler import PublisherEventCallbacks

                events = PublisherEventCallbacks(matched=self._on_matched)  # one per publisher
            return self.create_publisher(msg_type, topic, qos.SENSOR, event_callbacks=events)
        self.pub_depth = make(Image, DEPTH_IMAGE_TOPIC)
        self.pub_info = make(CameraInfo, DEPTH_INFO_TOPIC)
        self.pub_confidence = make(Image, CONFIDENCE_TOPIC)
        self.pub_points = make(PointCloud2, POINTS_TOPIC)
        self.pub_teacher_confidence = make(Image, TEACHER_CONFIDENCE_TOPIC) if self.teacher else None
        from diagnostic_msgs.msg import DiagnosticArray

        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)

        # State shared by the executor callbacks and the worker (under self._lock where both write).
        self._thermal_info: Optional[CameraInfo] = None
        self._rgb_info: Optional[CameraInfo] = None
        self._camera_key: Optional[tuple] = None
        self._info_used: Optional[CameraInfo] = None  # the camera_info in use (topic or file, cropped)
        self._camera = None
        self._bad_info_reason = ""
        self._projector: Optional[CloudProjector] = None
        self._cloud: Optional[CloudBuilder] = None
        self._engine_cloud_state: tuple[Any, Any] = (None, None)  # (engine, (camera, options)) it builds clouds for
        self._last_stamp_ns: Optional[int] = None
        self._first_image_time: Optional[float] = None
        self._rgb_history: list[tuple[int, Image]] = []
        self._pairs: dict[int, Image] = {}
        self.counters = {"received": 0, "published": 0, "rejected": 0, "teacher_runs": 0, "student_only": 0,
                         "unpaired": 0, "resets": 0, "model_swaps": 0, "engine_clouds": 0}
        self.rate_in = RateMeter()
        self.arrival = ArrivalMonitor()  # transport losses, measured at the subscription callback
        self.rate_out = RateMeter()
        self.rate_rgb = RateMeter()
        self.latency_receive = LatencyStats()   # callback -> published, wall seconds
        self.latency_stamp = LatencyStats()     # header stamp -> published, node clock seconds
        self.engine_ms = LatencyStats()         # engine time per frame (stored in seconds)

        self.sync: Optional[ApproximateTimeSynchronizer] = None
        self.tf_buffer = None
        self._tf_listener = None
        if self.teacher is not None or p["cloud.rgb"]:  # RGB pairs + extrinsic: teacher and/or coloured cloud
            from monother_ros.ros.tf import TransformBuffer, TransformListener

            self.sync = ApproximateTimeSynchronizer(
                2, queue_size=p["teacher.queue_size"], max_interval_ns=int(round(p["teacher.slop_s"] * 1e9)),
                backward_jump_ns=_BACKWARD_JUMP_NS, callback=self._on_pair)
            self.tf_buffer = TransformBuffer()
            self._tf_listener = TransformListener(self.tf_buffer, self)

        self._model_sub = None
        if p["model_topic"]:
            from std_msgs.msg import String

            # Latched (reliable, transient local, depth 1) like the adaptation node's publisher.
            self._model_sub = self.create_subscription(String, p["model_topic"], self._on_model_path,
                                                       qos.TF_STATIC_PUBLISHER)

        self._subs: list[Any] = []
        self.slot: LatestSlot[_Frame] = LatestSlot()
        self._decode_ahead = None
        if self.thermal_input.transport == "compressed":  # PNG decoding overlaps inference (camera_input)
            from monother_ros.ros.camera_input import DecodeAhead

            self._decode_ahead = DecodeAhead(self.slot, self._predecode, name=f"{node_name}-decode")
        self.worker: Worker[_Frame] = Worker(self._decode_ahead.output if self._decode_ahead else self.slot,
                                             self._process, name=f"{node_name}-worker",
                                             on_error=self._on_worker_error).start()
        threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1), on_clock_change=True)
        self._jump_handle = self.get_clock().create_jump_callback(threshold, post_callback=self._on_time_jump)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        if not self._matched_events:
            self.create_timer(0.5, self._update_subscriptions)
        self._update_subscriptions()

    # ------------------------------------------------------------------ set-up

    def _make_inputs(self, p: dict[str, Any]) -> None:
        """Input streams (transport, calibration file, frame id, crop: ``ros.camera_input``) and the
        blind-frame check (``core.frame_health``)."""
        from monother_ros.core.frame_health import FrameHealthChecker

        self.thermal_input = CameraStream("thermal", p, THERMAL_IMAGE_TOPIC, max_dimension=p["max_image_dimension"])
        self.rgb_input = CameraStream("rgb", p, RGB_IMAGE_TOPIC, max_dimension=p["max_image_dimension"])
        self.frame_health = FrameHealthChecker(frame_health_config(p))
        self._distortion: Optional[str] = None
        for stream in (self.thermal_input, self.rgb_input) if p["teacher.enabled"] or p["cloud.rgb"] else (
                self.thermal_input,):
            if stream.calibration_error:  # the node still runs, as without camera_info
                self.problems.report(f"camera_info_url_{stream.camera}", stream.calibration_error, Level.ERROR)

    @staticmethod
    def _resolve_model(value: str) -> Path:
        from monother_ros.paths import default_model_dir

        path = Path(value).expanduser() if value else default_model_dir()
        if not path.exists():
            if not value:
                raise ConfigError(f"no model given and the shipped default {path} does not exist yet; "
                                  f"set the parameter model:=<model folder or .onnx>")
            raise ConfigError(f"model {path} does not exist")
        return path

    @staticmethod
    def _engine_settings(p: dict[str, Any]):
        """How the node's engine holder makes engines, from the parameters."""
        from monother_ros.runtime.engine_holder import EngineSettings

        hw = None
        if p["input_height"] or p["input_width"]:
            if not (p["input_height"] and p["input_width"]):
                raise ConfigError("input_height and input_width must be given together (or both 0)")
            hw = (p["input_height"], p["input_width"])
        device = p["device"]
        if p["teacher.enabled"]:
            from monother_ros.runtime.device import resolve_device

            device = resolve_device(p["teacher.device"] or p["device"])
        return EngineSettings(
            backend=p["backend"], device=device, precision=p["precision"], input_hw=hw,
            cache_dir=p["cache_dir"] or None, num_threads=p["num_threads"] or None,
            min_depth_m=p["min_depth_m"] or None, max_depth_m=p["max_depth_m"] or None,
            min_confidence=p["min_confidence"], teacher=p["teacher.enabled"],
            min_rebuild_interval_s=p["swap.min_rebuild_interval_s"], min_swap_interval_s=p["swap.min_interval_s"])

    @property
    def engine(self):
        """The running engine (a ``PairEngine`` with the teacher on)."""
        return self.models.engine

    @property
    def teacher(self):
        """The running ``PairEngine`` when ``teacher.enabled``, else None."""
        return self.models.engine if self.params["teacher.enabled"] else None

    @property
    def model_path(self) -> Path:
        """The model the running engine was made from."""
        return self.models.model_path

    def _on_params_change(self, changes: dict[str, Any]) -> None:
        """Apply a validated runtime change (``ros2 param set``) from the next frame.

        Raises:
            ConfigError: the new values do not fit together (e.g. min_depth_m >= max_depth_m); nothing
                was applied.
        """
        from monother_ros.runtime.engine import thresholds_for

        params = {**self.params, **changes}
        if changes.keys() & {"min_depth_m", "max_depth_m", "min_confidence"}:
            engine = self.engine
            engine.set_thresholds(thresholds_for(engine.info, params["min_depth_m"] or None,
                                                 params["max_depth_m"] or None, params["min_confidence"]))
        if "fusion.enabled" in changes and self.teacher is None:
            self.get_logger().warning("fusion.enabled has no effect without teacher.enabled")
        self.params = params
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _warm_up(self) -> float:
        """Run one synthetic frame (and pair) so the first real frame does not pay for lazy initialisation
        (backend sessions, kernels, preprocessing tables); returns the milliseconds it took."""
        from monother_ros.runtime.engine_holder import warm_up

        t0 = time.perf_counter()
        warm_up(self.engine)
        return (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ hot swap

    def _on_model_path(self, msg) -> None:
        self.request_model(msg.data)

    def request_model(self, path: str | Path) -> None:
        """Hot-swap to the model folder at ``path``: loaded off the inference thread, swapped in between two
        frames (returns at once). The route of the ``model_topic`` and of an in-process ``online_adaptation``."""
        self.models.request(path)

    def _on_swap(self, outcome) -> None:
        """The engine holder settled a swap request (its loader thread)."""
        if not outcome.ok:
            self.problems.report("model_swap_failed", f"cannot use model {outcome.path}: {outcome.reason}; still "
                                 f"running {self.model_path}", Level.WARN)
            return
        with self._lock:
            self.counters["model_swaps"] += 1
        self.problems.clear("model_swap_failed")
        self.get_logger().info(f"hot-swapped the model ({outcome.how}, {outcome.seconds:.1f} s off the inference "
                               f"thread): {outcome.path} ({outcome.model_hash[:12]})")

    # ------------------------------------------------------------------ laziness

    def _outputs(self) -> list[Any]:
        pubs = [self.pub_depth, self.pub_info, self.pub_confidence, self.pub_points]
        return pubs + ([self.pub_teacher_confidence] if self.pub_teacher_confidence is not None else [])

    def _on_matched(self, _info: Any) -> None:
        self._update_subscriptions()

    def wanted(self) -> bool:
        """True when some output has a subscriber (or laziness is off)."""
        return not self.params["lazy"] or any(pub.get_subscription_count() > 0 for pub in self._outputs())

    def _update_subscriptions(self) -> None:
        wanted = self.wanted()
        if wanted and not self._subs:
            self._subs = [
                self.thermal_input.subscribe(self, self._on_image, qos.SENSOR),
                self.create_subscription(CameraInfo, THERMAL_INFO_TOPIC, self._on_info, qos.SENSOR),
            ]
            if self.sync is not None:
                self._subs += [
                    self.rgb_input.subscribe(self, self._on_rgb, qos.SENSOR),
                    self.create_subscription(CameraInfo, RGB_INFO_TOPIC, self._on_rgb_info, qos.SENSOR),
                ]
            self.get_logger().info("an output has a subscriber: subscribing to the inputs")
        elif not wanted and self._subs:
            for sub in self._subs:
                self.destroy_subscription(sub)
            self._subs = []
            self.slot.clear()
            if self._decode_ahead is not None:
                self._decode_ahead.clear()
            self.get_logger().info("no output has a subscriber: unsubscribed from the inputs (lazy)")

    @property
    def subscribed(self) -> bool:
        """Whether the node currently subscribes to its inputs."""
        return bool(self._subs)

    # ------------------------------------------------------------------ executor callbacks (never block)

    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        self.rate_in.tick(now)
        self.thermal_input.fill_header(msg)
        self.arrival.add(stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds / 1e9)
        self.slot.put(_Frame(msg, now))

    def _on_info(self, msg: CameraInfo) -> None:
        self._thermal_info = msg

    def _on_rgb_info(self, msg: CameraInfo) -> None:
        self._rgb_info = msg

    def _on_rgb(self, msg: Image) -> None:
        self.rate_rgb.tick()
        self.rgb_input.fill_header(msg)
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            history = self._rgb_history
            if history and stamp < history[-1][0] - _BACKWARD_JUMP_NS:
                history.clear()
            history.append((stamp, msg))
            del history[:-_RGB_HISTORY]
        self.sync.add(1, stamp, msg)

    def _on_pair(self, items) -> None:
        thermal, rgb = items
        with self._lock:
            self._pairs[thermal.stamp_ns] = rgb.payload
            while len(self._pairs) > _RGB_HISTORY:
                self._pairs.pop(next(iter(self._pairs)))

    def _on_time_jump(self, jump) -> None:
        self.reset("the node clock jumped back")

    def reset(self, why: str) -> None:
        """Forget pairing state, the RGB history, TF's dynamic data and the rate/latency meters."""
        with self._lock:
            self._rgb_history.clear()
            self._pairs.clear()
            self._last_stamp_ns = None
            self.counters["resets"] += 1
            self.frame_health.reset()
        if self.sync is not None:
            self.sync.reset()
        if self.tf_buffer is not None:
            self.tf_buffer.clear()
        for meter in (self.rate_in, self.rate_out, self.rate_rgb):
            meter.reset()
        self.arrival.reset()
        for stats in (self.latency_receive, self.latency_stamp, self.engine_ms):
            stats.reset()
        self.get_logger().info(f"reset ({why}): pairing, RGB history, TF cache and meters cleared")

    # ------------------------------------------------------------------ worker thread

    def _on_worker_error(self, exc: BaseException) -> None:
        self.problems.report("processing_failed", f"{type(exc).__name__}: {exc}", Level.ERROR)

    def _reject(self, name: str, reason: str, level: Level = Level.WARN) -> None:
        with self._lock:
            self.counters["rejected"] += 1
        self.problems.report(name, reason, level)

    def _predecode(self, frame: _Frame) -> None:
        try:
            frame.decoded = self.thermal_input.thermal(frame.msg)
        except ImageDecodeError as exc:
            frame.decoded = exc

    def _process(self, frame: _Frame) -> None:
        if self._decode_ahead is not None:
            self._decode_ahead.taken()
        msg = frame.msg
        with self._lock:
            self.counters["received"] += 1
            if self._first_image_time is None:
                self._first_image_time = frame.received
        thermal = self._decode_thermal(msg, frame.decoded)
        if thermal is None or not self._has_scene(thermal):
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self._check_stamp(stamp_ns)
        camera = self._camera_for(thermal.shape, frame.received)
        pair = self._find_pair(stamp_ns) if self._wants_rgb() else None
        pair_inputs = self._teacher_inputs(pair, stamp_ns, camera, msg.header.frame_id) if pair is not None else None
        with self.models.frame() as engine:  # a hot swap lands before or after this frame, never inside
            result = self._infer(engine, thermal, camera, pair_inputs)
        if result is None:
            return
        depth, confidence, teacher_confidence, engine_ms, points = result
        rgb_view = RgbView(*pair_inputs) if pair_inputs is not None and self.params["cloud.rgb"] else None
        self._publish(msg, frame.received, stamp_ns, camera, depth, confidence, teacher_confidence, rgb_view,
                      points)
        self.engine_ms.add(engine_ms / 1e3)
        self.problems.clear("processing_failed")

    def _decode_thermal(self, msg: Image, decoded: Any = None) -> Optional[np.ndarray]:
        """(H, W) thermal intensities (raw or compressed, grey checked, cropped), or None (reported);
        ``decoded``: the result of decoding ahead, if any."""
        try:
            image = self.thermal_input.thermal(msg) if decoded is None else decoded
            if isinstance(image, ImageDecodeError):
                raise image
        except ImageDecodeError as exc:
            self._reject(f"thermal_{exc.reason}", f"thermal image rejected: {exc}; frame dropped")
            return None
        if min(image.shape) < 2:
            self._reject("thermal_too_small", f"thermal image {image.shape[1]}x{image.shape[0]} is too small (needs "
                         "2x2 or more); frame dropped")
            return None
        for name in [n for n in self.problems.active() if n.startswith("thermal_") and n != "thermal_stamp_backwards"]:
            self.problems.clear(name)
        return image

    def _has_scene(self, thermal: np.ndarray) -> bool:
        """False for a blind, saturated or frozen frame (``core.frame_health``): no depth is published for it
        (silence lets consumers' staleness checks fire; an all-NaN image would read as free space)."""
        verdict = self.frame_health.check(thermal)
        if verdict is not None:
            self._reject("blind_frame", f"thermal frame without usable content ({verdict.reason}): {verdict.message}; "
                         "no depth published", Level.ERROR)
            return False
        self.problems.clear("blind_frame")
        return True

    def _check_stamp(self, stamp_ns: int) -> None:
        with self._lock:
            last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if last is None or stamp_ns > last:
            self.problems.clear("thermal_stamp_backwards")
            return
        back_s = (last - stamp_ns) / 1e9
        self.problems.report("thermal_stamp_backwards", f"thermal stamp went back {back_s:.3f} s (from "
                             f"{last / 1e9:.3f} to {stamp_ns / 1e9:.3f})" + (": resetting pairing and TF" if
                             last - stamp_ns > _BACKWARD_JUMP_NS else ""))
        if last - stamp_ns > _BACKWARD_JUMP_NS:
            self.reset("thermal stamps jumped back")
            with self._lock:
                self._last_stamp_ns = stamp_ns

    def _camera_for(self, image_hw: tuple[int, int], received: float):
        """The thermal camera for an image of ``image_hw`` (H, W, after the crop) from the cached camera_info
        (else ``thermal.camera_info_url``'s), or None (reported)."""
        info = self.thermal_input.camera_info(self._thermal_info, image_hw)
        self._info_used = info
        if info is None:
            waited = received - (self._first_image_time or received)
            if waited >= self.params["camera_info_timeout_s"]:
                self.problems.report("camera_info_missing", f"no thermal camera_info received for {waited:.1f} s: "
                                     "publishing depth and confidence without depth/camera_info and depth/points "
                                     "(drivers without camera_info: set thermal.camera_info_url)")
            return None
        self.problems.clear("camera_info_missing")
        key = (tuple(info.k), tuple(info.d), info.distortion_model, info.width, info.height, info.binning_x,
               info.binning_y, info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height, image_hw)
        if key != self._camera_key:
            self._camera_key = key
            self._note_distortion(info)
            try:
                self._camera = camera_from_info(info, image_size=(image_hw[1], image_hw[0]))
                self._projector = CloudProjector(self._camera, self._cloud_options())
                self._cloud = CloudBuilder(self._projector)
            except CalibrationError as exc:
                self._camera, self._projector, self._cloud = None, None, None
                self._bad_info_reason = str(exc)
        if self._camera is None:
            self.problems.report("camera_info_invalid", f"{self._bad_info_reason}: publishing without "
                                 "depth/camera_info and depth/points")
            return None
        self.problems.clear("camera_info_invalid")
        return self._camera

    def _note_distortion(self, info: CameraInfo) -> None:
        """Warn once per calibration that lens distortion is not modelled (shown in /diagnostics)."""
        note = distortion_note(info)
        self._distortion = None if note is None else f"{note}; depth/points assumes a rectified image"
        if self._distortion is not None:
            self.get_logger().warning(f"thermal camera_info: {self._distortion}")

    def _find_pair(self, stamp_ns: int) -> Optional[Image]:
        """The RGB partner of a thermal frame: its ApproximateTime set if emitted, else the nearest RGB
        frame already received within the slop (never waits)."""
        self.sync.add(0, stamp_ns, None)
        slop_ns = int(round(self.params["teacher.slop_s"] * 1e9))
        with self._lock:
            rgb = self._pairs.pop(stamp_ns, None)
            if rgb is None and self._rgb_history:
                stamps = [s for s, _ in self._rgb_history]
                k = nearest_within(stamps, stamp_ns, slop_ns)
                rgb = self._rgb_history[k][1] if k is not None else None
            last_rgb = self._rgb_history[-1][0] if self._rgb_history else None
        if rgb is None:
            with self._lock:
                self.counters["unpaired"] += 1
            if last_rgb is None:
                self.problems.report("rgb_missing", "no RGB frame received: thermal frames run on the student only")
            elif stamp_ns - last_rgb > _RGB_STOPPED_NS:
                self.problems.report("rgb_stopped", f"the RGB stream stopped {(stamp_ns - last_rgb) / 1e9:.1f} s "
                                     "before this thermal frame: student only")
            return None
        self.problems.clear("rgb_missing")
        self.problems.clear("rgb_stopped")
        return rgb

    def _teacher_inputs(self, pair: Image, stamp_ns: int, camera, thermal_frame: str):
        """(rgb array in RGB order, rgb camera, T_rgb_thermal) or None (reported)."""
        from monother_ros.ros.tf import TransformError

        if camera is None:
            return None
        try:
            rgb, encoding = self.rgb_input.decode(pair)
        except ImageDecodeError as exc:
            self.problems.report(f"rgb_{exc.reason}", f"RGB image rejected: {exc}; student only")
            return None
        if encoding not in _RGB_ENCODINGS:
            self.problems.report("rgb_bad_encoding", f"RGB encoding {encoding!r} is not rgb8/bgr8: student only")
            return None
        if encoding == "bgr8":
            rgb = rgb[..., ::-1]
        info = self.rgb_input.camera_info(self._rgb_info, rgb.shape[:2])
        if info is None:
            self.problems.report("rgb_camera_info_missing", "no rgb/camera_info yet (set rgb.camera_info_url for "
                                 "drivers without one): student only")
            return None
        try:
            rgb_camera = camera_from_info(info, image_size=(rgb.shape[1], rgb.shape[0]))
        except CalibrationError as exc:
            self.problems.report("rgb_camera_info_invalid", f"{exc}: student only")
            return None
        try:
            prefix = self.params["frame_prefix"]
            T = self.tf_buffer.lookup_transform(with_prefix(prefix, pair.header.frame_id),
                                                with_prefix(prefix, thermal_frame), stamp_ns,
                                                self.params["teacher.tf_timeout_s"])
        except TransformError as exc:
            rejected = self.tf_buffer.last_rejection
            self.problems.report("tf_unavailable", f"no RGB-thermal extrinsic at the thermal stamp: {exc}; "
                                 "student only" + (f" (last TF rejected: {rejected})" if rejected else ""))
            return None
        for name in ("tf_unavailable", "rgb_bad_encoding", "rgb_camera_info_missing", "rgb_camera_info_invalid"):
            self.problems.clear(name)
        return rgb, rgb_camera, T

    def _wants_rgb(self) -> bool:
        """Whether this frame needs its RGB partner: for the teacher, or for a coloured cloud someone reads."""
        if self.sync is None:
            return False
        return self.teacher is not None or (self.params["cloud.rgb"] and self.pub_points.get_subscription_count() > 0)

    def _cloud_options(self) -> CloudOptions:
        p = self.params
        return CloudOptions(p["cloud.decimation"], p["cloud.max_range_m"], p["cloud.rgb"])

    def _cloud_for(self, camera) -> "CloudBuilder":
        """The cloud builder for this camera and the current cloud.* parameters (rebuilt when they change)."""
        options = self._cloud_options()
        if self._cloud is None or self._cloud.projector.camera != camera or self._cloud.projector.options != options:
            self._projector = CloudProjector(camera, options)
            self._cloud = CloudBuilder(self._projector)
        return self._cloud

    def _infer(self, engine, thermal: np.ndarray, camera, teacher_in):
        res = None
        if teacher_in is not None and self.teacher is not None:
            rgb, rgb_camera, T = teacher_in
            try:
                res = engine.infer_pair(thermal, np.ascontiguousarray(rgb), camera, rgb_camera, T)
            except Exception as exc:  # noqa: BLE001 - fall back to the student for this frame
                self.problems.report("teacher_failed", f"{type(exc).__name__}: {exc}; student only", Level.ERROR)
                res = None
        if res is not None:
            self.problems.clear("teacher_failed")
            with self._lock:
                self.counters["teacher_runs"] += 1
            fused_depth, confidence = fuse(res.student_depth, res.student_confidence, res.teacher_depth,
                                           res.teacher_confidence)
            # The fused confidence is published whenever the teacher ran; the depth only with fusion.enabled.
            depth = fused_depth if self.params["fusion.enabled"] else res.student_depth
            return depth, confidence, res.teacher_confidence, res.timings["total_ms"], None
        engine_cloud = self._engine_cloud(engine, camera)
        result = engine.infer(thermal)
        with self._lock:
            self.counters["student_only"] += 1
        confidence = result.confidence
        if confidence is None:
            confidence = np.isfinite(result.depth).astype(np.float32)
        points = result.points if engine_cloud else None
        return result.depth, confidence, None, result.timings["total_ms"], points

    def _engine_cloud(self, engine, camera) -> bool:
        """Let an engine that runs whole frames on its GPU (the torch engine on CUDA) build depth/points
        there too: one device-to-host copy instead of the back-projection on the CPU. True when it will
        for this frame (someone reads the cloud, the camera is known, no rgb field)."""
        wanted = (camera is not None and getattr(engine, "device_frames", False) and not self.params["cloud.rgb"]
                  and self.pub_points.get_subscription_count() > 0)
        key = (camera, self._cloud_options()) if wanted else None
        current_engine, current_key = self._engine_cloud_state
        if current_engine is not engine or current_key != key:
            if key is None:
                if current_engine is engine:
                    engine.set_cloud_camera(None)
            else:
                engine.set_cloud_camera(*key)  # the engine re-captures its frame graph once
            self._engine_cloud_state = (engine, key)
        return wanted

    def _publish(self, msg: Image, received: float, stamp_ns: int, camera, depth: np.ndarray,
                 confidence: np.ndarray, teacher_confidence: Optional[np.ndarray],
                 rgb_view: Optional[RgbView] = None, points: Optional[np.ndarray] = None) -> None:
        header = msg.header
        frame = with_prefix(self.params["frame_prefix"], self.params["frame_id"] or header.frame_id)
        if frame != header.frame_id:
            header = copy.copy(header)
            header.frame_id = frame
        self.pub_depth.publish(array_to_image(depth, encoding="32FC1", header=header))
        if self.pub_confidence.get_subscription_count():
            self.pub_confidence.publish(array_to_image(confidence, encoding="32FC1", header=header))
        if teacher_confidence is not None and self.pub_teacher_confidence.get_subscription_count():
            self.pub_teacher_confidence.publish(array_to_image(teacher_confidence, encoding="32FC1", header=header))
        if camera is not None:
            if self.pub_info.get_subscription_count():
                self.pub_info.publish(raw_geometry_info(self._info_used, header))
            if self.pub_points.get_subscription_count():
                cloud = self._cloud_for(camera)
                packed = points is not None and cloud.fits(points)
                self.pub_points.publish(cloud.build_packed(points, header) if packed
                                        else cloud.build(depth, confidence, header, rgb_view))
                if packed:
                    with self._lock:
                        self.counters["engine_clouds"] += 1
        with self._lock:
            self.counters["published"] += 1
        self.rate_out.tick()
        self.latency_receive.add(time.monotonic() - received)
        self.latency_stamp.add((self.get_clock().now().nanoseconds - stamp_ns) / 1e9)

    # ------------------------------------------------------------------ diagnostics / shutdown

    def health(self) -> HealthReport:
        """Rates, latencies, counters, engine and input status (published on /diagnostics)."""
        info = self.engine.info
        report = HealthReport(f"{self.get_name()}: thermal depth", hardware_id=f"{info.backend}:{info.model_name}")
        in_hz = report.add_rate("input rate (Hz)", self.rate_in)
        out_hz = report.add_rate("output rate (Hz)", self.rate_out)
        if self.teacher is not None:
            report.add_rate("rgb rate (Hz)", self.rate_rgb)
        report.add_latency("latency receive->publish", self.latency_receive)
        report.add_latency("latency stamp->publish", self.latency_stamp)
        report.add_latency("engine time", self.engine_ms)
        with self._lock:
            counters = dict(self.counters)
        for key, value in counters.items():
            report.add_value(f"frames {key}", value)
        report.add_value("frames dropped (worker busy)", self.slot.dropped + (
            self._decode_ahead.output.dropped if self._decode_ahead is not None else 0))
        report.add_value("backend", info.backend)
        report.add_value("model", info.model_name)
        report.add_value("model path", str(self.model_path))
        report.add_value("model hash", info.model_hash[:16])
        report.add_value("precision", info.precision)
        self._report_backend_selection(report)
        report.add_value("input size", f"{info.input_hw[0]}x{info.input_hw[1]}")
        last = self.models.last_outcome
        report.add_value("last swap", "none" if last is None else (f"{last.how} {last.path} ({last.seconds:.1f} s)"
                                                                    if last.ok else f"failed: {last.path}"))
        report.add_value("subscribed (lazy)", self.subscribed)
        report.add_value("laziness by", "matched events" if self._matched_events else "subscription count poll")
        report.add_value("camera_info", "ok" if self._camera is not None else
                         ("invalid" if self._info_used is not None else "missing"))
        report.add_value("camera_info source", "topic" if self._thermal_info is not None else
                         ("thermal.camera_info_url" if self.thermal_input.url_info is not None else "none"))
        report.add_value("thermal transport", self.thermal_input.transport + f" ({self.thermal_input.topic})")
        if self._distortion is not None:
            report.add_value("lens distortion", self._distortion)
            report.add_check(Level.WARN, f"lens distortion not modelled: {self._distortion}")
        if self.teacher is not None:
            report.add_value("teacher", "on" + (" + fusion" if self.params["fusion.enabled"] else ""))
            if self.sync is not None:
                report.add_value("pairs emitted", self.sync.counters.emitted)
        if self.tf_buffer is not None:
            report.add_value("tf", "ok" if not self.problems.is_active("tf_unavailable") else "unavailable")
            report.add_value("tf rejected", dict(self.tf_buffer.rejected) if self.tf_buffer.rejected else "none")
        if self.teacher is None and self.sync is not None:  # RGB paired for the coloured cloud only
            report.add_value("pairs emitted", self.sync.counters.emitted)
        transport = self.arrival.problem()
        if transport is not None:
            self.problems.report("input_transport_losses", transport)
        else:
            self.problems.clear("input_transport_losses")
        minimum = self.params["min_output_rate_hz"]
        if minimum and in_hz > 0 and out_hz < minimum:
            report.add_check(Level.WARN, f"output rate {out_hz:.1f} Hz < {minimum:g} Hz")
        report.add_problems(self.problems)
        return report

    def _report_backend_selection(self, report: HealthReport) -> None:
        """How the backend was chosen (``engine.selection``): requested/chosen backend and device, why
        each earlier candidate was not used; a WARN when a present backend failed or the CPU runs while a
        CUDA GPU is visible."""
        selection = getattr(self.engine, "selection", None)
        if selection is None:
            return
        for key, value in selection.diagnostics().items():
            report.add_value(key, value)
        for warning in selection.warnings:
            report.add_check(Level.WARN, f"backend: {warning}")

    def _publish_diagnostics(self) -> None:
        self.pub_diagnostics.publish(make_array([to_status(self.health())], self.get_clock().now().nanoseconds))

    def destroy_node(self) -> None:
        """Stop the worker, release the engine, then destroy the node."""
        worker = getattr(self, "worker", None)
        if getattr(self, "_decode_ahead", None) is not None:
            self._decode_ahead.stop()
        if worker is not None:
            worker.stop()
        models = getattr(self, "models", None)
        if models is not None:
            models.close()  # joins the loader thread: a swap in progress finishes (an export is killed)
        super().destroy_node()


def _teacher_selection(p: dict[str, Any], device: str):
    """The backend record of the teacher path (torch on ``device``), WARN-worthy on the CPU with a GPU."""
    from monother_ros.runtime.device import cuda_device_count
    from monother_ros.runtime.selection import BackendSelection

    gpu = cuda_device_count() > 0
    notes = (f"the teacher path runs on the CPU although a CUDA GPU is visible (device "
             f"{p['teacher.device'] or p['device']})",) if device == "cpu" and gpu else ()
    return BackendSelection(p["backend"], p["teacher.device"] or p["device"], "torch", device,
                            (("tensorrt", "teacher.enabled runs the torch backend"),) if p["backend"] == "auto" else (),
                            gpu, notes)


class CloudBuilder:
    """Organised ``PointCloud2`` messages (x, y, z, intensity = confidence[, rgb]; float32; NaN invalid)
    for one camera and one set of cloud options, written straight into a reused message buffer.

    ``core.cloud.CloudProjector.pack`` back-projects (hoisted per-row/column factors, vectorised) into a
    numpy view of the message's ``array.array``, so building a cloud costs no extra copy and no
    allocation. The message returned by :meth:`build` is therefore only valid until the next call:
    publish it first (rclpy serialises on ``publish``), as the depth node does.
    """

    def __init__(self, projector: CloudProjector) -> None:
        self.projector = projector
        h, w = projector.height, projector.width
        self.msg = PointCloud2()
        self.msg.height, self.msg.width = h, w
        step = projector.point_step
        self.msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                           for f in projector.fields]
        self.msg.is_bigendian = False  # core.cloud writes little-endian float32
        self.msg.point_step = step
        self.msg.row_step = step * w
        self.msg.is_dense = False
        buffer = array.array("B")
        buffer.frombytes(bytes(step * h * w))
        if "_data" in getattr(type(self.msg), "__slots__", ()):
            self.msg._data = buffer  # skip the generated setter's copy (see ros/convert.py)
        else:  # pragma: no cover - other message generators
            self.msg.data = buffer
        self._view = np.frombuffer(self.msg.data, dtype=np.uint8)

    def build(self, depth: np.ndarray, confidence: Optional[np.ndarray], header,
              rgb: Optional[RgbView] = None) -> PointCloud2:
        """The cloud of ``depth`` (H, W) metres with ``confidence`` (H, W) as intensity, stamped ``header``
        (``rgb``: the paired RGB frame for the rgb field, when the options have one)."""
        self.projector.pack(depth, confidence, out=self._view, rgb=rgb)
        self.msg.header = header
        return self.msg

    def fits(self, points: np.ndarray) -> bool:
        """Whether ``points`` (packed bytes from an engine) have this cloud's size."""
        return points.dtype == np.uint8 and points.size == self._view.size

    def build_packed(self, points: np.ndarray, header) -> PointCloud2:
        """The cloud from points an engine already packed in this layout (x, y, z, intensity; float32)."""
        np.copyto(self._view, points.reshape(-1), casting="no")
        self.msg.header = header
        return self.msg


def make_cloud(projector: CloudProjector, depth: np.ndarray, confidence: Optional[np.ndarray], header) -> PointCloud2:
    """A new organised ``PointCloud2`` (a fresh :class:`CloudBuilder`; use one builder per camera in loops)."""
    return CloudBuilder(projector).build(depth, confidence, header)


def _matched_events_supported() -> bool:
    """Whether this rclpy has publisher matched events (Jazzy and later; not Humble)."""
    try:
        from rclpy.event_handler import PublisherEventCallbacks
    except ImportError:
        return False
    import inspect

    return "matched" in inspect.signature(PublisherEventCallbacks.__init__).parameters


def main(args: Optional[list[str]] = None) -> int:
    """Console entry ``thermal_depth``: run the node until Ctrl-C (exit 2 after one line on a config/model error)."""
    return run_node(ThermalDepthNode, "thermal_depth", args)


if __name__ == "__main__":
    raise SystemExit(main())

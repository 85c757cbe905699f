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

Teacher (``teacher.enabled``, needs a dual model: student + RGB teacher + confidence network, run by the
torch backend): RGB frames are paired with thermal frames by the message_filters ApproximateTime policy
(``ros.pairing``, ``teacher.queue_size``, ``teacher.slop_s``); a thermal frame whose set has not been
emitted yet uses the nearest RGB frame already received within the slop. Thermal-only operation never
waits: a frame with no RGB partner is processed at once by the student alone. For a pair, the worker looks
up ``T_rgb_thermal`` at the thermal stamp (``teacher.tf_timeout_s``, waiting on the worker thread only),
runs both branches and the confidence network on the 8-channel metadata, and warps the teacher depth and
confidence into the thermal frame (``core.warp``); the warped confidence is published on
``teacher/confidence``. With ``fusion.enabled`` the depth is the confidence-weighted fusion

    w_t = c_t * [teacher depth valid],  w_s = c_s
    d   = (w_t * d_t + w_s * d_s) / (w_t + w_s)        (d_s where w_t + w_s = 0)
    c   = (w_t * c_t + w_s * c_s) / (w_t + w_s)        (the published confidence)

with c_t the warped teacher confidence, d_t the warped teacher depth, c_s and d_s the student's.

Camera model: the network sees the raw (unrectified) thermal image, so ``depth/image`` is in the raw
image's geometry, described by K (with D); P describes the rectified image. ``depth/points`` uses K, and
``depth/camera_info`` is published with P = [K | 0] and R = I (``convert.raw_geometry_info``), so
depth_image_proc, which reads P, computes the same cloud. Cloud options (``cloud.*``, ``core.cloud``):
decimation, a range limit and an ``rgb`` field coloured from the paired RGB frame (paired and located
like the teacher's: ``teacher.slop_s``, ``teacher.queue_size``, ``teacher.tf_timeout_s``).

Time: a backward jump of the node clock (``ros2 bag play --loop --clock`` with ``use_sim_time``) resets
the pairing, the RGB history, TF's dynamic cache and the rate/latency meters (``create_jump_callback``).

Bad input (wrong encoding, short data, zero or huge size, bad step, bad camera_info, stamps going back,
missing TF / camera_info / RGB) is reported by :class:`~monother_ros.ros.diagnostics.ProblemTracker`:
one throttled log line per problem, the reason in ``/diagnostics``, the frame dropped or processed
without the missing part; the problem clears when good input returns.

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
from monother_ros.errors import CalibrationError, ConfigError
from monother_ros.ros import qos
from monother_ros.ros.arrival import ArrivalMonitor
from monother_ros.ros.entry import run_node
from monother_ros.ros.convert import (
    ENCODINGS,
    ImageDecodeError,
    array_to_image,
    camera_from_info,
    image_to_array,
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

__all__ = ["DEPTH_PARAMETERS", "INPUT_TOPICS", "OUTPUT_TOPICS", "ThermalDepthNode", "TeacherRunner", "CloudBuilder",
           "fuse", "make_cloud", "main"]

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
        ParamSpec("frame_id", str, "", "frame of the outputs; empty = the input image's frame"),
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
    (THERMAL_IMAGE_TOPIC, "sensor_msgs/Image (mono16, mono8, 16UC1, 8UC1)", "SENSOR", "thermal optical", ""),
    (THERMAL_INFO_TOPIC, "sensor_msgs/CameraInfo", "SENSOR", "thermal optical", "cached"),
    (RGB_IMAGE_TOPIC, "sensor_msgs/Image (rgb8, bgr8)", "SENSOR", "RGB optical", "teacher.enabled or cloud.rgb"),
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

_THERMAL_ENCODINGS = ("mono16", "16UC1", "mono8", "8UC1")
_RGB_ENCODINGS = ("rgb8", "bgr8")
_BACKWARD_JUMP_NS = 1_000_000_000  # a stamp older than the previous one by more than this resets pairing
_RGB_HISTORY = 16
_RGB_STOPPED_NS = 1_000_000_000  # no RGB frame this long before a thermal frame: the RGB stream stopped


@dataclass
class _Frame:
    """What the image callback hands to the worker."""

    msg: Image
    received: float  # time.monotonic() at the callback


@dataclass
class PairResult:
    """Outputs of one teacher run, at the thermal camera's resolution (all (H, W) float32).

    Attributes:
        student_depth: metres, NaN invalid (engine thresholds applied).
        student_confidence: [0, 1] (1 where valid when the student has no confidence head).
        teacher_depth: the teacher's depth warped into the thermal frame, metres, NaN where unseen.
        teacher_confidence: the teacher's confidence warped into the thermal frame, 0 where unseen.
        timings: milliseconds: ``student_ms``, ``teacher_ms``, ``warp_ms``, ``total_ms``.
    """

    student_depth: np.ndarray
    student_confidence: np.ndarray
    teacher_depth: np.ndarray
    teacher_confidence: np.ndarray
    timings: dict[str, float]


def fuse(student_depth: np.ndarray, student_confidence: np.ndarray, teacher_depth: np.ndarray,
         teacher_confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted fusion of teacher and student depth (formula in the module docstring).

    Args:
        student_depth, teacher_depth: (H, W) metres, NaN invalid.
        student_confidence, teacher_confidence: (H, W) in [0, 1].

    Returns:
        (depth (H, W) float32 metres with NaN where neither is valid, confidence (H, W) float32 in [0, 1]).
    """
    d_s = np.asarray(student_depth, np.float32)
    d_t = np.asarray(teacher_depth, np.float32)
    teacher_ok = np.isfinite(d_t)
    student_ok = np.isfinite(d_s)
    w_t = np.where(teacher_ok, np.clip(teacher_confidence, 0.0, 1.0), 0.0).astype(np.float32)
    w_s = np.where(student_ok, np.clip(student_confidence, 0.0, 1.0), 0.0).astype(np.float32)
    total = w_t + w_s
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = (w_t * np.where(teacher_ok, d_t, 0.0) + w_s * np.where(student_ok, d_s, 0.0)) / total
        confidence = (w_t * w_t + w_s * w_s) / total
    no_weight = total <= 0
    depth = np.where(no_weight, d_s, depth).astype(np.float32)
    confidence = np.where(no_weight, 0.0, confidence).astype(np.float32)
    return depth, confidence


class TeacherRunner:
    """The dual model (thermal student + RGB teacher + confidence U-Net) on the torch backend.

    Args:
        model_dir: a saved dual model folder (``save_model(..., kind="monother_dual")``), or a student
            folder with its dual in ``<model_dir>/dual`` (the shipped ``engines/default``).
        input_hw: network input (h, w), multiples of 14; default the model's.
        device: torch device (``cpu`` or ``cuda:N``, as ``runtime.device.resolve_device`` gives).
        precision: ``fp16`` (autocast on CUDA) or ``fp32``.
        num_threads: torch CPU threads (None = default).
        min_depth_m, max_depth_m, min_confidence: masking thresholds of the student (0/None = model's).

    Raises:
        ConfigError: the folder holds no RGB teacher or no confidence network.
        CheckpointError: the folder cannot be read.
    """

    def __init__(self, model_dir: Path, *, input_hw: Optional[tuple[int, int]] = None, device: str = "cpu",
                 precision: str = "fp32", num_threads: Optional[int] = None, min_depth_m: Optional[float] = None,
                 max_depth_m: Optional[float] = None, min_confidence: float = 0.0) -> None:
        import torch

        from monother_ros.model import import_monother  # noqa: F401 - registers the dual model builder
        from monother_ros.model.checkpoints import load_model, read_model_dir
        from monother_ros.runtime.torch_engine import TorchEngine

        if Path(model_dir).suffix == ".onnx":
            raise ConfigError(f"teacher.enabled needs a dual model folder (student + RGB teacher + confidence "
                              f"network), not an ONNX file: {model_dir}")
        _, _, meta = read_model_dir(model_dir)
        kind = str(meta.get("kind"))
        if kind == "monother_dual":
            model, config = load_model(model_dir, map_location=device)
        elif (Path(model_dir) / "dual" / "config.json").is_file():
            # A student folder carrying its dual (as engines/default does): this student, that teacher.
            from monother_ros.adapt.learner import load_dual

            model, config = load_dual(model_dir, device=device)
        else:
            raise ConfigError(f"teacher.enabled needs a dual model (student + RGB teacher + confidence network), "
                              f"but {model_dir} holds a '{kind}' model without a teacher (and no {model_dir}/dual)")
        if getattr(model, "confidence_net", None) is None:
            raise ConfigError(f"teacher.enabled: the dual model in {model_dir} has no confidence network")
        self.model = model.eval()
        self.config = config
        self.device = torch.device(device)
        # fp16 applies on CUDA only (autocast around the pair); the CPU runs fp32.
        self.half = precision == "fp16" and self.device.type == "cuda"
        self.engine = TorchEngine(model.student, config, model_hash=str(meta.get("model_sha256", "")),
                                  input_hw=input_hw, device=device, precision=precision, num_threads=num_threads,
                                  min_depth_m=min_depth_m, max_depth_m=max_depth_m, min_confidence=min_confidence)
        self._rgb_pre = None
        self._lock = threading.Lock()

    def run(self, thermal: np.ndarray, rgb: np.ndarray, thermal_camera, rgb_camera,
            T_rgb_thermal: np.ndarray) -> PairResult:
        """One paired frame.

        Args:
            thermal: (H, W) uint8/uint16. rgb: (Hr, Wr, 3) uint8 in R, G, B order.
            thermal_camera, rgb_camera: ``PinholeCamera`` of the two images.
            T_rgb_thermal: (4, 4) thermal optical frame -> RGB optical frame.
        """
        import torch

        from monother_ros.core import preprocess as pp
        from monother_ros.core.warp import backward_warp_np, warp_depth_np
        from monother_ros.distill.metadata import MetadataBuilder

        t0 = time.perf_counter()
        info = self.engine.info
        h, w = info.input_hw
        with self._lock:
            x_t = torch.from_numpy(self.engine.preprocess(thermal)).to(self.device)
            if self._rgb_pre is None or self._rgb_pre.in_hw != rgb.shape[:2]:
                self._rgb_pre = pp.RgbPreprocessor(rgb.shape[:2], (h, w), mean=self.model.teacher.config.mean,
                                                   std=self.model.teacher.config.std)
            x_r = torch.from_numpy(self._rgb_pre(rgb).copy()).to(self.device)
            # The metadata's RGB channels are the image in [0, 1] at the prediction grid.
            rgb_unit = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))[None].astype(np.float32) / 255.0)
            k_t = thermal_camera.resized(w, h, align_corners=True)
            k_r = rgb_camera.resized(w, h, align_corners=True)
            builder = MetadataBuilder(rgb_unit.to(self.device), k_t.K, k_r.K, T_rgb_thermal,
                                      min_depth=info.min_depth_m, max_depth=info.max_depth_m)
            t1 = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
                out = self.model(x_t, x_r, need_confidence=True, metadata_fn=builder)
            t2 = time.perf_counter()
        d_s = out.student.depth[0, 0].float().cpu().numpy()
        c_s = out.student.confidence[0, 0].float().cpu().numpy() if out.student.confidence is not None else None
        d_r = out.teacher.depth[0, 0].float().cpu().numpy()
        c_r = out.teacher_confidence[0, 0].float().cpu().numpy()
        T_thermal_rgb = np.linalg.inv(np.asarray(T_rgb_thermal, np.float64))
        teacher_depth, _ = warp_depth_np(d_r, d_s, k_r.K, k_t.K, T_thermal_rgb)
        teacher_conf, seen = backward_warp_np(c_r, d_s, k_r.K, k_t.K, T_thermal_rgb)
        teacher_conf = np.where(seen, np.clip(teacher_conf, 0.0, 1.0), 0.0).astype(np.float32)
        out_hw = tuple(thermal.shape)
        th = self.engine.thresholds
        s_depth, s_conf = pp.postprocess_depth(d_s, out_hw, min_depth=th.min_depth_m, max_depth=th.max_depth_m,
                                               confidence=c_s, min_confidence=th.min_confidence)
        if s_conf is None:
            s_conf = np.isfinite(s_depth).astype(np.float32)
        t_depth = pp.mask_depth(pp.resize_depth(np.nan_to_num(teacher_depth, nan=0.0), out_hw),
                                min_depth=th.min_depth_m, max_depth=th.max_depth_m)
        t_conf = pp.resize_depth(teacher_conf, out_hw)
        np.clip(t_conf, 0.0, 1.0, out=t_conf)
        t3 = time.perf_counter()
        timings = {"student_ms": (t1 - t0) * 1e3, "teacher_ms": (t2 - t1) * 1e3, "warp_ms": (t3 - t2) * 1e3,
                   "total_ms": (t3 - t0) * 1e3}
        return PairResult(s_depth, s_conf, t_depth, t_conf, timings)


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
        self.model_path = self._resolve_model(p["model"])
        self.teacher: Optional[TeacherRunner] = None
        self.engine = self._build_engine(p)
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
        self._camera = None
        self._bad_info_reason = ""
        self._projector: Optional[CloudProjector] = None
        self._cloud: Optional[CloudBuilder] = None
        self._last_stamp_ns: Optional[int] = None
        self._first_image_time: Optional[float] = None
        self._rgb_history: list[tuple[int, Image]] = []
        self._pairs: dict[int, Image] = {}
        self.counters = {"received": 0, "published": 0, "rejected": 0, "teacher_runs": 0, "student_only": 0,
                         "unpaired": 0, "resets": 0, "model_swaps": 0}
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

        self._swap_lock = threading.Lock()
        self._swap_thread: Optional[threading.Thread] = None
        self._pending_swap: Optional[Path] = None
        self._retired: list[Any] = []  # engines replaced by a hot swap, closed by the worker between frames
        self._model_sub = None
        if p["model_topic"]:
            from std_msgs.msg import String

            # Latched (reliable, transient local, depth 1) like the adaptation node's publisher.
            self._model_sub = self.create_subscription(String, p["model_topic"], self._on_model_path,
                                                       qos.TF_STATIC_PUBLISHER)

        self._subs: list[Any] = []
        self.slot: LatestSlot[_Frame] = LatestSlot()
        self.worker: Worker[_Frame] = Worker(self.slot, self._process, name=f"{node_name}-worker",
                                             on_error=self._on_worker_error).start()
        threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1), on_clock_change=True)
        self._jump_handle = self.get_clock().create_jump_callback(threshold, post_callback=self._on_time_jump)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        if not self._matched_events:
            self.create_timer(0.5, self._update_subscriptions)
        self._update_subscriptions()

    # ------------------------------------------------------------------ set-up

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

    def _build_engine(self, p: dict[str, Any], model_path: Optional[Path] = None):
        from monother_ros.runtime.engine import make_backend

        hw = None
        if p["input_height"] or p["input_width"]:
            if not (p["input_height"] and p["input_width"]):
                raise ConfigError("input_height and input_width must be given together (or both 0)")
            hw = (p["input_height"], p["input_width"])
        kw = dict(min_depth_m=p["min_depth_m"] or None, max_depth_m=p["max_depth_m"] or None,
                  min_confidence=p["min_confidence"])
        threads = p["num_threads"] or None
        if p["teacher.enabled"]:
            if p["backend"] not in ("auto", "torch"):
                raise ConfigError(f"teacher.enabled runs on the torch backend; backend is {p['backend']!r} "
                                  f"(use auto or torch)")
            from monother_ros.runtime.device import resolve_device

            teacher_device = resolve_device(p["teacher.device"] or p["device"])
            self.teacher = TeacherRunner(self.model_path, input_hw=hw, device=teacher_device,
                                         precision=p["precision"], num_threads=threads, **kw)
            self.teacher.engine.selection = _teacher_selection(p, teacher_device)
            return self.teacher.engine
        if p["fusion.enabled"]:
            self.get_logger().warning("fusion.enabled has no effect without teacher.enabled")
        engine = make_backend(model_path or self.model_path, p["backend"], input_hw=hw, precision=p["precision"],
                              device=p["device"], num_threads=threads, cache_dir=p["cache_dir"] or None, **kw)
        selection = getattr(engine, "selection", None)
        if selection is not None and model_path is None:
            self.get_logger().info(f"backend {selection.summary()}")
        return engine

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
        """Run one synthetic frame so the first real frame does not pay for lazy initialisation
        (backend sessions, kernels, preprocessing tables); returns the milliseconds it took."""
        h, w = self.engine.info.input_hw
        ramp = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 7 % 65535).astype(np.uint16)
        t0 = time.perf_counter()
        self.engine.infer(ramp)
        if self.teacher is not None:
            from monother_ros.core.camera import PinholeCamera

            camera = PinholeCamera.from_hfov(w, h, 60.0)
            rgb = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2)
            self.teacher.run(ramp, rgb, camera, camera, np.eye(4))
        return (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ hot swap

    def _on_model_path(self, msg) -> None:
        path = Path(msg.data).expanduser()
        if path == self.model_path:
            return
        with self._swap_lock:
            if self._swap_thread is not None and self._swap_thread.is_alive():
                self._pending_swap = path  # the running swap picks the newest path up when done
                return
            self._pending_swap = None
            self._swap_thread = threading.Thread(target=self._swap_loop, args=(path,), name="model-swap", daemon=True)
            self._swap_thread.start()

    def _swap_loop(self, path: Path) -> None:
        while path is not None:
            self.swap_model(path)
            with self._swap_lock:
                path, self._pending_swap = self._pending_swap, None

    def swap_model(self, path: Path) -> bool:
        """Build an engine for the model at ``path`` (off the inference thread) and use it from the next frame.

        A model that cannot be loaded (missing, corrupt, another input size) is refused: the current
        engine keeps running and ``model_swap_failed`` is reported. Returns True when swapped.
        """
        if self.teacher is not None:
            self.problems.report("model_swap_unsupported", f"hot swap to {path} ignored: not supported with "
                                 "teacher.enabled (restart the node with the new model)")
            return False
        try:
            new = self._build_engine({**self.params, "teacher.enabled": False, "fusion.enabled": False}, path)
            h, w = new.info.input_hw
            new.infer((np.arange(h * w, dtype=np.uint32).reshape(h, w) * 7 % 65535).astype(np.uint16))
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running engine
            self.problems.report("model_swap_failed", f"cannot use model {path}: {type(exc).__name__}: {exc}; "
                                 f"still running {self.model_path}", Level.ERROR)
            return False
        old, self.engine, self.model_path = self.engine, new, path
        with self._lock:
            self._retired.append(old)
            self.counters["model_swaps"] += 1
        self.problems.clear("model_swap_failed")
        self.get_logger().info(f"hot-swapped the model: {path} ({new.info.model_hash[:12]})")
        return True

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for engine in retired:
            engine.close()

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
                self.create_subscription(Image, THERMAL_IMAGE_TOPIC, self._on_image, qos.SENSOR),
                self.create_subscription(CameraInfo, THERMAL_INFO_TOPIC, self._on_info, qos.SENSOR),
            ]
            if self.sync is not None:
                self._subs += [
                    self.create_subscription(Image, RGB_IMAGE_TOPIC, self._on_rgb, qos.SENSOR),
                    self.create_subscription(CameraInfo, RGB_INFO_TOPIC, self._on_rgb_info, qos.SENSOR),
                ]
            self.get_logger().info("an output has a subscriber: subscribing to the inputs")
        elif not wanted and self._subs:
            for sub in self._subs:
                self.destroy_subscription(sub)
            self._subs = []
            self.slot.clear()
            self.get_logger().info("no output has a subscriber: unsubscribed from the inputs (lazy)")

    @property
    def subscribed(self) -> bool:
        """Whether the node currently subscribes to its inputs."""
        return bool(self._subs)

    # ------------------------------------------------------------------ executor callbacks (never block)

    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        self.rate_in.tick(now)
        self.arrival.add(stamp_to_ns(msg.header.stamp), self.get_clock().now().nanoseconds / 1e9)
        self.slot.put(_Frame(msg, now))

    def _on_info(self, msg: CameraInfo) -> None:
        self._thermal_info = msg

    def _on_rgb_info(self, msg: CameraInfo) -> None:
        self._rgb_info = msg

    def _on_rgb(self, msg: Image) -> None:
        self.rate_rgb.tick()
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

    def _process(self, frame: _Frame) -> None:
        if self._retired:
            self._close_retired()  # between frames: nothing uses the old engine any more
        msg = frame.msg
        with self._lock:
            self.counters["received"] += 1
            if self._first_image_time is None:
                self._first_image_time = frame.received
        thermal = self._decode_thermal(msg)
        if thermal is None:
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self._check_stamp(stamp_ns)
        camera = self._camera_for(msg, frame.received)
        pair = self._find_pair(stamp_ns) if self._wants_rgb() else None
        pair_inputs = self._teacher_inputs(pair, stamp_ns, camera, msg.header.frame_id) if pair is not None else None
        result = self._infer(thermal, camera, pair_inputs)
        if result is None:
            return
        depth, confidence, teacher_confidence, engine_ms = result
        rgb_view = RgbView(*pair_inputs) if pair_inputs is not None and self.params["cloud.rgb"] else None
        self._publish(msg, frame.received, stamp_ns, camera, depth, confidence, teacher_confidence, rgb_view)
        self.engine_ms.add(engine_ms / 1e3)
        self.problems.clear("processing_failed")

    def _decode_thermal(self, msg: Image) -> Optional[np.ndarray]:
        if msg.encoding not in ENCODINGS:
            self._reject("thermal_unknown_encoding", f"thermal image encoding {msg.encoding!r} is unknown (expected "
                         f"one of {', '.join(_THERMAL_ENCODINGS)}); frame dropped")
            return None
        if msg.encoding not in _THERMAL_ENCODINGS:
            self._reject("thermal_bad_encoding", f"thermal image encoding {msg.encoding!r} is not one of "
                         f"{', '.join(_THERMAL_ENCODINGS)}; frame dropped")
            return None
        try:
            image = image_to_array(msg, max_dimension=self.params["max_image_dimension"])
        except ImageDecodeError as exc:
            self._reject(f"thermal_{exc.reason}", f"thermal image rejected: {exc}")
            return None
        if min(image.shape) < 2:
            self._reject("thermal_too_small", f"thermal image {msg.width}x{msg.height} is too small (needs 2x2 or "
                         "more); frame dropped")
            return None
        for name in [n for n in self.problems.active() if n.startswith("thermal_") and n != "thermal_stamp_backwards"]:
            self.problems.clear(name)
        return image

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

    def _camera_for(self, msg: Image, received: float):
        """The thermal camera for this image from the cached camera_info, or None (reported)."""
        info = self._thermal_info
        if info is None:
            waited = received - (self._first_image_time or received)
            if waited >= self.params["camera_info_timeout_s"]:
                self.problems.report("camera_info_missing", f"no thermal camera_info received for {waited:.1f} s: "
                                     "publishing depth and confidence without depth/camera_info and depth/points")
            return None
        self.problems.clear("camera_info_missing")
        key = (tuple(info.k), info.width, info.height, info.binning_x, info.binning_y, info.roi.x_offset,
               info.roi.y_offset, info.roi.width, info.roi.height, msg.width, msg.height)
        if key != self._camera_key:
            self._camera_key = key
            try:
                self._camera = camera_from_info(info, image_size=(msg.width, msg.height))
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
        if pair.encoding not in _RGB_ENCODINGS:
            self.problems.report("rgb_bad_encoding", f"RGB encoding {pair.encoding!r} is not rgb8/bgr8: student only")
            return None
        try:
            rgb = image_to_array(pair, max_dimension=self.params["max_image_dimension"])
        except ImageDecodeError as exc:
            self.problems.report(f"rgb_{exc.reason}", f"RGB image rejected: {exc}; student only")
            return None
        if pair.encoding == "bgr8":
            rgb = rgb[..., ::-1]
        info = self._rgb_info
        if info is None:
            self.problems.report("rgb_camera_info_missing", "no rgb/camera_info yet: student only")
            return None
        try:
            rgb_camera = camera_from_info(info, image_size=(pair.width, pair.height))
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

    def _infer(self, thermal: np.ndarray, camera, teacher_in):
        res = None
        if teacher_in is not None and self.teacher is not None:
            rgb, rgb_camera, T = teacher_in
            try:
                res = self.teacher.run(thermal, np.ascontiguousarray(rgb), camera, rgb_camera, T)
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
            return depth, confidence, res.teacher_confidence, res.timings["total_ms"]
        result = self.engine.infer(thermal)
        with self._lock:
            self.counters["student_only"] += 1
        confidence = result.confidence
        if confidence is None:
            confidence = np.isfinite(result.depth).astype(np.float32)
        return result.depth, confidence, None, result.timings["total_ms"]

    def _publish(self, msg: Image, received: float, stamp_ns: int, camera, depth: np.ndarray,
                 confidence: np.ndarray, teacher_confidence: Optional[np.ndarray],
                 rgb_view: Optional[RgbView] = None) -> None:
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
                self.pub_info.publish(raw_geometry_info(self._thermal_info, header))
            if self.pub_points.get_subscription_count():
                self.pub_points.publish(self._cloud_for(camera).build(depth, confidence, header, rgb_view))
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
        report.add_value("frames dropped (worker busy)", self.slot.dropped)
        report.add_value("backend", info.backend)
        report.add_value("model", info.model_name)
        report.add_value("model path", str(self.model_path))
        report.add_value("model hash", info.model_hash[:16])
        report.add_value("precision", info.precision)
        self._report_backend_selection(report)
        report.add_value("input size", f"{info.input_hw[0]}x{info.input_hw[1]}")
        report.add_value("subscribed (lazy)", self.subscribed)
        report.add_value("laziness by", "matched events" if self._matched_events else "subscription count poll")
        report.add_value("camera_info", "ok" if self._camera is not None else
                         ("invalid" if self._thermal_info is not None else "missing"))
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
        if worker is not None:
            worker.stop()
            self._close_retired()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
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

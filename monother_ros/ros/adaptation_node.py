"""``online_adaptation`` node: label-free online adaptation of the thermal student (MonoTher-Depth stage 2).

Topics (relative names; QoS from ``monother_ros.ros.qos``):

| topic                   | dir | type                        | QoS                          | note                              |
|-------------------------|-----|-----------------------------|------------------------------|-----------------------------------|
| thermal/image_raw       | in  | sensor_msgs/Image           | sensor                       | paired with RGB (ApproximateTime) |
| thermal/camera_info     | in  | sensor_msgs/CameraInfo      | sensor (cached)              |                                   |
| rgb/image_raw           | in  | sensor_msgs/Image           | sensor                       |                                   |
| rgb/camera_info         | in  | sensor_msgs/CameraInfo      | sensor (cached)              |                                   |
| /tf, /tf_static         | in  | tf2_msgs/TFMessage          | tf2's                        | extrinsic; odometry when set      |
| adaptation/status       | out | std_msgs/String (JSON)      | reliable, latched, depth 1   | every ``status_period_s``         |
| adaptation/model_path   | out | std_msgs/String             | reliable, latched, depth 1   | each accepted checkpoint folder   |
| /diagnostics            | out | diagnostic_msgs/DiagnosticArray | reliable, 10             |                                   |

Services: ``adaptation/pause``, ``adaptation/resume``, ``adaptation/reset`` (back to the shipped
weights), ``adaptation/save`` (checkpoint now): ``std_srvs/Trigger``; ``adaptation/enable``
(``std_srvs/SetBool``: true = resume, false = pause). Reset and save run on a helper thread (they wait
for the current training step); the reply says they started, the status topic shows the result.

Data flow: thermal and RGB images are paired by the message_filters ApproximateTime policy
(``ros.pairing``, ``sync.queue_size``, ``sync.slop_s``); a pair goes into a latest-only slot and ONE
worker thread decodes it, looks up ``T_rgb_thermal`` at the thermal stamp (``ros.tf``), resizes both
images to the network input and offers the pair to :class:`~monother_ros.adapt.learner.OnlineLearner`
(keyframe rule: motion, RGB contrast, teacher confidence). The learner trains in its own background
thread under a compute budget (``train.max_steps_per_second``, ``train.duty_cycle``,
``train.num_threads``), scores candidates on its held-out slice and writes accepted weights as a
checkpoint folder (a model folder, nothing else: no ONNX export, no engine build on the learner). The
folder is handed over by name, and every route ends in the depth node's engine holder
(``runtime.engine_holder.EngineHolder.request``), which loads it for the depth node's own backend,
device and input size off its inference thread and swaps it in between two frames:

* in-process (``monother rig --adapt``: both nodes in one process): the rig connects this node to the
  depth node it names (``depth_node``) with :meth:`OnlineAdaptationNode.connect_depth_node`; the folder
  goes straight to the depth node's ``request_model``;
* across processes: the folder is published on ``adaptation/model_path`` (latched), which the depth
  node's ``model_topic`` subscription passes to the same ``request_model``.

``handover`` picks: ``auto`` (in-process when connected, else the topic), ``in_process``, ``topic`` or
``none``. A checkpoint that could not be written (no folder) is not handed over (reported).

Inputs from real drivers (``thermal.*``, ``rgb.*``: compressed transport, calibration file, frame id,
crop; ``ros.camera_input``) as in the depth node; a thermal frame without a scene (``frame_check.*``:
closed shutter, saturated, frozen) refuses its pair (``blind_frame``, ERROR in ``/diagnostics``).

Parameters: :data:`ADAPTATION_PARAMETERS` (config/rig.yaml ``online_adaptation`` section).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from monother_ros.errors import CalibrationError, ConfigError
from monother_ros.ros import qos
from monother_ros.ros.camera_input import (
    FRAME_CHECK_PARAMETERS,
    RGB_INPUT_PARAMETERS,
    THERMAL_INPUT_PARAMETERS,
    CameraStream,
    frame_health_config,
)
from monother_ros.ros.convert import ImageDecodeError, camera_from_info, stamp_to_ns
from monother_ros.ros.diagnostics import HealthReport, Level, ProblemTracker, RateMeter, make_array, to_status
from monother_ros.ros.entry import run_node
from monother_ros.ros.frames import frame_prefix_error, with_prefix
from monother_ros.ros.pairing import ApproximateTimeSynchronizer
from monother_ros.ros.params import ParamSpec, ParamTable, in_range, non_negative, one_of, positive
from monother_ros.ros.worker import LatestSlot, Worker

__all__ = ["ADAPTATION_PARAMETERS", "INPUT_TOPICS", "OUTPUT_TOPICS", "OnlineAdaptationNode", "main"]

ADAPTATION_PARAMETERS = ParamTable(
    [
        ParamSpec("model", str, "", "dual model folder (student + RGB teacher + confidence network), or a student "
                  "folder with teacher_model; empty = the shipped default (engines/default)"),
        ParamSpec("teacher_model", str, "", "dual model folder giving teacher + confidence network when model is a "
                  "student folder"),
        ParamSpec("device", str, "cpu", "torch device of the learner: cpu, cuda or cuda:N"),
        ParamSpec("input_height", int, 0, "network input height, a multiple of 14; 0 = the model's", non_negative),
        ParamSpec("input_width", int, 0, "network input width, a multiple of 14; 0 = the model's", non_negative),
        ParamSpec("depth_node", str, "thermal_depth", "name of the depth node the rig connects for the in-process "
                  "hand-over (monother rig --adapt)"),
        ParamSpec("handover", str, "auto", "how improved weights reach the depth node: auto, in_process, topic, none",
                  one_of("auto", "in_process", "topic", "none")),
        ParamSpec("start_paused", bool, False, "start paused (resume with the adaptation/resume service)"),
        ParamSpec("status_period_s", float, 1.0, "period of adaptation/status and /diagnostics, seconds",
                  in_range(0.1, 60.0)),
        ParamSpec("sync.slop_s", float, 0.05, "largest stamp difference of a thermal/RGB pair, seconds",
                  in_range(0.0, 1.0)),
        ParamSpec("sync.queue_size", int, 10, "messages per stream held by the ApproximateTime pairing",
                  in_range(1, 1000)),
        ParamSpec("tf_timeout_s", float, 0.1, "wait for the extrinsic at the thermal stamp (worker thread), seconds",
                  in_range(0.0, 10.0)),
        ParamSpec("odom_frame", str, "", "odometry frame for the motion rule (odom -> thermal frame via TF); "
                  "empty = use the thermal image change"),
        ParamSpec("buffer.size", int, 64, "replay buffer capacity, pairs", in_range(1, 100000)),
        ParamSpec("buffer.eviction", str, "fifo", "which pair a full buffer drops: fifo or reservoir",
                  one_of("fifo", "reservoir")),
        ParamSpec("buffer.sampling", str, "uniform", "training batch sampling: uniform or recent",
                  one_of("uniform", "recent")),
        ParamSpec("buffer.holdout_every", int, 5, "every n-th keyframe is held out to score candidates",
                  in_range(2, 1000)),
        ParamSpec("buffer.holdout_size", int, 16, "held-out slice capacity, pairs", in_range(1, 10000)),
        ParamSpec("buffer.min_pairs", int, 4, "train only with at least this many pairs in the buffer",
                  in_range(1, 100000)),
        ParamSpec("buffer.min_holdout", int, 2, "score (and accept) only with this many held-out pairs",
                  in_range(1, 10000)),
        ParamSpec("keyframe.min_confidence", float, 0.002, "mean teacher confidence over the consistency mask "
                  "(NLL scale: c = 0.002 / expected error in m)", in_range(0.0, 1.0)),
        ParamSpec("keyframe.min_mask_fraction", float, 0.02, "fraction of the RGB grid in the consistency mask",
                  in_range(0.0, 1.0)),
        ParamSpec("keyframe.min_rgb_contrast", float, 0.1, "std of the grey RGB image in [0, 1] (night / fog "
                  "refusal); 0 = off", in_range(0.0, 1.0)),
        ParamSpec("keyframe.min_image_change", float, 0.02, "mean thermal change since the last keyframe, [0, 1] "
                  "units (without odometry)", non_negative),
        ParamSpec("keyframe.min_translation_m", float, 0.5, "motion since the last keyframe, metres (odometry)",
                  non_negative),
        ParamSpec("keyframe.min_rotation_deg", float, 5.0, "rotation since the last keyframe, degrees (odometry)",
                  non_negative),
        ParamSpec("keyframe.max_rate_hz", float, 2.0, "pairs considered per second (each costs a teacher "
                  "forward); 0 = every pair", non_negative),
        ParamSpec("keyframe.confidence_gate", bool, True, "refuse pairs with low teacher confidence"),
        ParamSpec("train.distillation", str, "full", "full (confidence-weighted) or no_confidence",
                  one_of("full", "no_confidence")),
        ParamSpec("train.batch_size", int, 2, "pairs per training step", in_range(1, 64)),
        ParamSpec("train.lr", float, 5e-5, "AdamW learning rate (heads; encoder + DPT at lr * encoder_lr_factor)",
                  positive),
        ParamSpec("train.encoder_lr_factor", float, 0.1, "learning-rate factor of the encoder and DPT head",
                  in_range(0.0, 1.0)),
        ParamSpec("train.grad_clip", float, 0.1, "max gradient norm; 0 = off", non_negative),
        ParamSpec("train.anchor_weight", float, 0.0, "L2-SP weight pulling the student towards the shipped weights "
                  "(limits forgetting of the original place); 0 = off", non_negative),
        ParamSpec("train.steps_per_round", int, 10, "steps between two candidate evaluations", in_range(1, 100000)),
        ParamSpec("train.max_steps_per_second", float, 2.0, "compute budget: most training steps per second; 0 = "
                  "unlimited", non_negative),
        ParamSpec("train.duty_cycle", float, 0.5, "compute budget: largest fraction of time spent training",
                  in_range(0.01, 1.0)),
        ParamSpec("train.num_threads", int, 1, "torch intra-op threads (process-wide); 0 = leave", non_negative),
        ParamSpec("guard.reject_threshold", float, 0.02, "reject a candidate scoring worse than the running model "
                  "by more than this (relative)", non_negative),
        ParamSpec("guard.max_rejections", int, 3, "rejections in a row that roll back to the last good weights",
                  in_range(1, 1000)),
        ParamSpec("checkpoint.dir", str, "", "adapted checkpoints folder; empty = ~/.ros/monother_adaptation"),
        ParamSpec("checkpoint.keep", int, 3, "checkpoints kept (newest)", in_range(1, 1000)),
        ParamSpec("checkpoint.resume", bool, True, "start from the newest valid checkpoint"),
        ParamSpec("frame_prefix", str, "", "tf_prefix put in front of the image frame ids and odom_frame in TF "
                  "lookups unless they carry it already (e.g. robot1/)", frame_prefix_error),
        *THERMAL_INPUT_PARAMETERS,
        *RGB_INPUT_PARAMETERS,
        *FRAME_CHECK_PARAMETERS,
    ]
)

THERMAL_IMAGE_TOPIC = "thermal/image_raw"
THERMAL_INFO_TOPIC = "thermal/camera_info"
RGB_IMAGE_TOPIC = "rgb/image_raw"
RGB_INFO_TOPIC = "rgb/camera_info"
STATUS_TOPIC = "adaptation/status"
MODEL_PATH_TOPIC = "adaptation/model_path"
SERVICE_PREFIX = "adaptation/"

# Latched, reliable: a late subscriber (a depth node started later) gets the last value.
LATCHED = qos.TF_STATIC_PUBLISHER

INPUT_TOPICS: tuple[tuple[str, str, str, str, str], ...] = (
    (THERMAL_IMAGE_TOPIC, "sensor_msgs/Image (mono16, mono8, 16UC1, 8UC1; rgb8/bgr8 if grey)", "SENSOR",
     "thermal optical", "paired; thermal.transport raw"),
    (THERMAL_IMAGE_TOPIC + "/compressed", "sensor_msgs/CompressedImage (16/8-bit PNG, 8-bit JPEG)", "SENSOR",
     "thermal optical", "paired; thermal.transport compressed"),
    (THERMAL_INFO_TOPIC, "sensor_msgs/CameraInfo", "SENSOR", "thermal optical", "cached"),
    (RGB_IMAGE_TOPIC, "sensor_msgs/Image (rgb8, bgr8)", "SENSOR", "RGB optical", "paired; rgb.transport raw"),
    (RGB_IMAGE_TOPIC + "/compressed", "sensor_msgs/CompressedImage (JPEG, PNG)", "SENSOR", "RGB optical",
     "paired; rgb.transport compressed"),
    (RGB_INFO_TOPIC, "sensor_msgs/CameraInfo", "SENSOR", "RGB optical", "cached"),
    ("/tf", "tf2_msgs/TFMessage", "TF", "", "odometry (odom_frame)"),
    ("/tf_static", "tf2_msgs/TFMessage", "TF_STATIC", "", "extrinsic"),
)
OUTPUT_TOPICS: tuple[tuple[str, str, str, str, str], ...] = (
    (STATUS_TOPIC, "std_msgs/String (JSON)", "TF_STATIC_PUBLISHER", "", "latched, status_period_s"),
    (MODEL_PATH_TOPIC, "std_msgs/String (checkpoint folder)", "TF_STATIC_PUBLISHER", "", "latched, per accepted model"),
    ("/diagnostics", "diagnostic_msgs/DiagnosticArray", "DIAGNOSTICS", "", "status_period_s"),
)

_RGB_ENCODINGS = ("rgb8", "bgr8")


def learner_config_from_params(p: dict[str, Any], checkpoint_dir: str):
    """``LearnerConfig`` from the node's validated parameters."""
    from monother_ros.adapt import LearnerConfig
    from monother_ros.adapt.buffer import KeyframeConfig

    keyframe = KeyframeConfig(
        min_confidence=p["keyframe.min_confidence"], min_mask_fraction=p["keyframe.min_mask_fraction"],
        min_image_change=p["keyframe.min_image_change"], min_translation_m=p["keyframe.min_translation_m"],
        min_rotation_deg=p["keyframe.min_rotation_deg"], min_rgb_contrast=p["keyframe.min_rgb_contrast"],
        max_rate_hz=p["keyframe.max_rate_hz"])
    return LearnerConfig(
        buffer_size=p["buffer.size"], eviction=p["buffer.eviction"], sampling=p["buffer.sampling"],
        holdout_every=p["buffer.holdout_every"], holdout_size=p["buffer.holdout_size"],
        min_buffer=p["buffer.min_pairs"], min_holdout=p["buffer.min_holdout"], keyframe=keyframe,
        confidence_gate=p["keyframe.confidence_gate"], distillation=p["train.distillation"],
        batch_size=p["train.batch_size"], lr=p["train.lr"], encoder_lr_factor=p["train.encoder_lr_factor"],
        grad_clip=p["train.grad_clip"], anchor_weight=p["train.anchor_weight"], steps_per_round=p["train.steps_per_round"],
        max_steps_per_second=p["train.max_steps_per_second"], duty_cycle=p["train.duty_cycle"],
        num_threads=p["train.num_threads"], reject_threshold=p["guard.reject_threshold"],
        max_rejections=p["guard.max_rejections"], checkpoint_dir=checkpoint_dir, keep_checkpoints=p["checkpoint.keep"],
        resume=p["checkpoint.resume"])


class OnlineAdaptationNode(Node):
    """The ``online_adaptation`` node (topics, services, threads: see the module docstring).

    Args:
        node_name: ROS node name.
        **kwargs: passed to ``rclpy.node.Node`` (``context``, ``namespace``, ``cli_args``, ...).

    Raises:
        ConfigError: invalid parameters, or a model without RGB teacher / confidence network.
        CheckpointError: the model folders cannot be read.
    """

    def __init__(self, node_name: str = "online_adaptation", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from monother_ros.adapt import OnlineLearner, load_dual
        from monother_ros.paths import default_model_dir
        from monother_ros.ros.tf import TransformBuffer, TransformListener

        self.params = p = ADAPTATION_PARAMETERS.declare(self)
        self.problems = ProblemTracker(self.get_logger())
        self._lock = threading.Lock()
        model = Path(p["model"]).expanduser() if p["model"] else default_model_dir()
        if not model.exists():
            raise ConfigError(f"adaptation model {model} does not exist; set model:=<dual model folder>")
        dual, config = load_dual(model, p["teacher_model"] or None, device=p["device"])
        if p["input_height"] or p["input_width"]:
            if not (p["input_height"] and p["input_width"]) or p["input_height"] % 14 or p["input_width"] % 14:
                raise ConfigError("input_height and input_width must be given together, as multiples of 14")
            self.input_hw = (p["input_height"], p["input_width"])
        else:
            self.input_hw = tuple(config.input_size)
        checkpoint_dir = p["checkpoint.dir"] or str(Path.home() / ".ros" / "monother_adaptation")
        self.model_path = model
        self.learner = OnlineLearner(dual, learner_config_from_params(p, checkpoint_dir), on_update=self._on_update,
                                     device=p["device"])
        self.swaps = {"in_process": 0, "topic": 0, "not_handed_over": 0}
        self._request_model: Optional[Callable[[Path], None]] = None  # set by connect_depth_node
        self.last_swap: str = "none"
        self.counters = {"pairs": 0, "rejected": 0, "no_tf": 0, "no_camera_info": 0}
        self.decisions: dict[str, int] = {}
        self.rate_pairs = RateMeter()

        self.pub_status = self.create_publisher(String, STATUS_TOPIC, LATCHED)
        self.pub_model_path = self.create_publisher(String, MODEL_PATH_TOPIC, LATCHED)
        from diagnostic_msgs.msg import DiagnosticArray

        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        from std_srvs.srv import SetBool, Trigger

        self.create_service(Trigger, SERVICE_PREFIX + "pause", self._srv_pause)
        self.create_service(Trigger, SERVICE_PREFIX + "resume", self._srv_resume)
        self.create_service(Trigger, SERVICE_PREFIX + "reset", self._srv_reset)
        self.create_service(Trigger, SERVICE_PREFIX + "save", self._srv_save)
        self.create_service(SetBool, SERVICE_PREFIX + "enable", self._srv_enable)

        self._thermal_info: Optional[CameraInfo] = None
        self._rgb_info: Optional[CameraInfo] = None
        self.tf_buffer = TransformBuffer()
        self._tf_listener = TransformListener(self.tf_buffer, self)
        self.sync = ApproximateTimeSynchronizer(
            2, queue_size=p["sync.queue_size"], max_interval_ns=int(round(p["sync.slop_s"] * 1e9)),
            callback=self._on_pair)
        self._make_inputs(p)
        self.thermal_input.subscribe(self, self._on_thermal, qos.SENSOR)
        self.rgb_input.subscribe(self, self._on_rgb, qos.SENSOR)
        self.create_subscription(CameraInfo, THERMAL_INFO_TOPIC, self._on_thermal_info, qos.SENSOR)
        self.create_subscription(CameraInfo, RGB_INFO_TOPIC, self._on_rgb_info, qos.SENSOR)
        self.slot: LatestSlot[tuple[Image, Image]] = LatestSlot()
        self.worker: Worker[tuple[Image, Image]] = Worker(self.slot, self._process, name=f"{node_name}-pairs",
                                                          on_error=self._on_worker_error).start()
        self.create_timer(p["status_period_s"], self._publish_status)
        if p["start_paused"]:
            self.learner.pause()
        self.learner.start()
        self._announce_timer = self.create_timer(0.5, self._announce_resumed)
        self.get_logger().info(
            f"adapting {config.name} from {model} at {self.input_hw[0]}x{self.input_hw[1]}, distillation "
            f"{p['train.distillation']}, checkpoints in {checkpoint_dir}"
            + (f" (resumed from {self.learner.resumed_from.name})" if self.learner.resumed_from else "")
            + (", paused" if p["start_paused"] else ""))

    def _make_inputs(self, p: dict[str, Any]) -> None:
        """Input streams (``ros.camera_input``) and the blind-frame check, as the depth node has them."""
        from monother_ros.core.frame_health import FrameHealthChecker

        self.thermal_input = CameraStream("thermal", p, THERMAL_IMAGE_TOPIC)
        self.rgb_input = CameraStream("rgb", p, RGB_IMAGE_TOPIC)
        self.frame_health = FrameHealthChecker(frame_health_config(p))
        for stream in (self.thermal_input, self.rgb_input):
            if stream.calibration_error:  # the node still runs, as without camera_info
                self.problems.report(f"camera_info_url_{stream.camera}", stream.calibration_error, Level.ERROR)

    # ------------------------------------------------------------------ executor callbacks (never block)

    def _on_thermal(self, msg: Image) -> None:
        self.thermal_input.fill_header(msg)
        self.sync.add(0, stamp_to_ns(msg.header.stamp), msg)

    def _on_rgb(self, msg: Image) -> None:
        self.rgb_input.fill_header(msg)
        self.sync.add(1, stamp_to_ns(msg.header.stamp), msg)

    def _on_thermal_info(self, msg: CameraInfo) -> None:
        self._thermal_info = msg

    def _on_rgb_info(self, msg: CameraInfo) -> None:
        self._rgb_info = msg

    def _on_pair(self, items) -> None:
        self.rate_pairs.tick()
        self.slot.put((items[0].payload, items[1].payload))

    def _announce_resumed(self) -> None:
        # Once, after the executor runs (the rig has connected an in-process depth node by then): resumed weights.
        self._announce_timer.cancel()
        if self.learner.resumed_from is not None:
            threading.Thread(target=self.learner.announce, name="adaptation-announce", daemon=True).start()

    # ------------------------------------------------------------------ services

    def _srv_pause(self, _request, response):
        self.learner.pause()
        response.success, response.message = True, "adaptation paused"
        return response

    def _srv_resume(self, _request, response):
        self.learner.resume()
        response.success, response.message = True, "adaptation resumed"
        return response

    def _srv_enable(self, request, response):
        (self.learner.resume if request.data else self.learner.pause)()
        response.success, response.message = True, "adaptation " + ("resumed" if request.data else "paused")
        return response

    def _in_background(self, name: str, fn) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - report, keep the node up
                self.problems.report(f"{name}_failed", f"{name} failed: {type(exc).__name__}: {exc}", Level.ERROR)
            else:
                self.problems.clear(f"{name}_failed")

        thread = threading.Thread(target=run, name=f"adaptation-{name}", daemon=True)
        # Joined by destroy_node: a daemon thread still inside torch at interpreter exit aborts the
        # process ("terminate called without an active exception").
        self._background = [t for t in getattr(self, "_background", []) if t.is_alive()] + [thread]
        thread.start()

    def _srv_reset(self, _request, response):
        self._in_background("reset", self.learner.reset)
        response.success, response.message = True, "reset to the shipped weights started"
        return response

    def _srv_save(self, _request, response):
        if self.learner.store is None:
            response.success, response.message = False, "no checkpoint folder configured"
            return response
        self._in_background("save", self.learner.save)
        response.success, response.message = True, f"saving a checkpoint into {self.learner.store.root}"
        return response

    # ------------------------------------------------------------------ worker thread

    def _on_worker_error(self, exc: BaseException) -> None:
        self.problems.report("processing_failed", f"{type(exc).__name__}: {exc}", Level.ERROR)

    def _decode(self, msg: Image, what: str) -> Optional[np.ndarray]:
        """Thermal (H, W) intensities (grey checked, cropped) or RGB (H, W, 3) in R, G, B order; None if bad."""
        try:
            if what == "thermal":
                image = self.thermal_input.thermal(msg)
            else:
                image, encoding = self.rgb_input.decode(msg)
                if encoding not in _RGB_ENCODINGS:
                    raise ImageDecodeError("bad_encoding", f"encoding {encoding!r} is not one of "
                                                           f"{', '.join(_RGB_ENCODINGS)}")
                image = image[..., ::-1] if encoding == "bgr8" else image
        except ImageDecodeError as exc:
            name = f"{what}_bad_encoding" if exc.reason in ("bad_encoding", "unknown_encoding") else f"{what}_bad_image"
            self.problems.report(name, f"{what} image rejected ({exc.reason}): {exc}; pair dropped")
            return None
        self.problems.clear(f"{what}_bad_encoding")
        self.problems.clear(f"{what}_bad_image")
        return image

    def _sample(self, thermal_msg: Image, rgb_msg: Image):
        """The learner's PairSample for one pair, or None (reason reported)."""
        from monother_ros.adapt import PairSample
        from monother_ros.core import preprocess
        from monother_ros.ros.tf import TransformError

        thermal = self._decode(thermal_msg, "thermal")
        rgb = self._decode(rgb_msg, "rgb")
        if thermal is None or rgb is None:
            self.counters["rejected"] += 1
            return None
        verdict = self.frame_health.check(thermal)
        if verdict is not None:  # a blind / frozen thermal frame must not teach the student anything
            self.counters["rejected"] += 1
            self.problems.report("blind_frame", f"thermal frame without usable content ({verdict.reason}): "
                                 f"{verdict.message}; pair refused", Level.ERROR)
            return None
        self.problems.clear("blind_frame")
        t_info = self.thermal_input.camera_info(self._thermal_info, thermal.shape)
        r_info = self.rgb_input.camera_info(self._rgb_info, rgb.shape[:2])
        if t_info is None or r_info is None:
            self.counters["no_camera_info"] += 1
            self.problems.report("camera_info_missing", "no thermal or RGB camera_info yet (drivers without one: "
                                 "set thermal.camera_info_url / rgb.camera_info_url): pairs skipped")
            return None
        try:
            cam_t = camera_from_info(t_info, image_size=(thermal.shape[1], thermal.shape[0]))
            cam_r = camera_from_info(r_info, image_size=(rgb.shape[1], rgb.shape[0]))
        except CalibrationError as exc:
            self.problems.report("camera_info_invalid", f"{exc}: pairs skipped")
            return None
        self.problems.clear("camera_info_missing")
        self.problems.clear("camera_info_invalid")
        stamp = stamp_to_ns(thermal_msg.header.stamp)
        timeout = self.params["tf_timeout_s"]
        try:
            prefix = self.params["frame_prefix"]
            thermal_frame = with_prefix(prefix, thermal_msg.header.frame_id)
            T = self.tf_buffer.lookup_transform(with_prefix(prefix, rgb_msg.header.frame_id), thermal_frame, stamp,
                                                timeout)
            pose = None
            if self.params["odom_frame"]:
                pose = self.tf_buffer.lookup_transform(with_prefix(prefix, self.params["odom_frame"]), thermal_frame,
                                                       stamp, timeout)
        except TransformError as exc:
            self.counters["no_tf"] += 1
            self.problems.report("tf_unavailable", f"no transform at the thermal stamp: {exc}; pair skipped")
            return None
        self.problems.clear("tf_unavailable")
        h, w = self.input_hw
        thermal_unit = preprocess.resize_bilinear_np(preprocess.thermal_to_unit(np.ascontiguousarray(thermal)), (h, w))
        rgb_unit = preprocess.resize_bilinear_np(np.ascontiguousarray(rgb[..., :3]).astype(np.float32) / 255.0, (h, w))
        return PairSample(
            thermal=thermal_unit.astype(np.float32), rgb=np.ascontiguousarray(rgb_unit.transpose(2, 0, 1)),
            K_thermal=cam_t.resized(w, h, align_corners=True).K, K_rgb=cam_r.resized(w, h, align_corners=True).K,
            T_rgb_thermal=np.asarray(T, np.float64), stamp_ns=stamp, pose=pose)

    def _process(self, pair: tuple[Image, Image]) -> None:
        sample = self._sample(*pair)
        if sample is None:
            return
        with self._lock:
            self.counters["pairs"] += 1
        decision = self.learner.offer(sample)
        with self._lock:
            self.decisions[decision] = self.decisions.get(decision, 0) + 1
        self.problems.clear("processing_failed")

    # ------------------------------------------------------------------ hand-over (learner thread)

    def connect_depth_node(self, request_model: Callable[[Path], None]) -> None:
        """In-process hand-over: accepted checkpoint folders go to ``request_model`` (the depth node's
        ``request_model``, i.e. its engine holder), instead of the topic (``handover`` auto/in_process)."""
        self._request_model = request_model

    def _on_update(self, update) -> None:
        """Hand a checkpoint folder over (learner thread; returns at once: the depth node loads it)."""
        mode = self.params["handover"]
        if mode == "none":
            return
        if update.model_dir is None:
            with self._lock:
                self.swaps["not_handed_over"] += 1
            self.problems.report("no_checkpoint", f"{update.reason} weights of round {update.round} were not "
                                 "written to a checkpoint folder: not handed over (see the log)", Level.ERROR)
            return
        self.problems.clear("no_checkpoint")
        if mode in ("auto", "in_process") and self._request_model is not None:
            self._request_model(Path(update.model_dir))
            route = "in_process"
        elif mode == "in_process":
            self.problems.report("depth_node_not_connected", f"handover in_process, but no depth node "
                                 f"{self.params['depth_node']!r} is connected in this process: weights not handed "
                                 "over")
            return
        else:
            self.pub_model_path.publish(String(data=str(update.model_dir)))
            route = "topic"
        with self._lock:
            self.swaps[route] += 1
        self.last_swap = f"{route} {update.reason} round {update.round}: {update.model_dir.name}"

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The learner's status plus pairing, hand-over and input counters."""
        out = self.learner.status()
        with self._lock:
            out["pairs"] = dict(self.counters)
            out["decisions"] = dict(self.decisions)
        out["pairs_dropped"] = self.slot.dropped
        out["pair_rate_hz"] = round(self.rate_pairs.rate_hz(), 3)
        out["swaps"] = dict(self.swaps)
        out["last_swap"] = self.last_swap
        return out

    def health(self) -> HealthReport:
        status = self.status()
        report = HealthReport(f"{self.get_name()}: online adaptation", hardware_id=str(self.model_path))
        report.add_rate("pair rate (Hz)", self.rate_pairs)
        for key in ("state", "buffer", "held_out", "rounds", "steps", "accepted", "rejected", "rollbacks", "resets",
                    "checkpoints", "running_score", "last_loss", "duty_cycle_used", "last_checkpoint", "last_swap"):
            report.add_value(key, status.get(key))
        for key, value in status["keyframes"].items():
            report.add_value(f"keyframes {key}", value)
        report.add_value("swaps", status["swaps"])
        if status["update_errors"]:
            report.add_check(Level.WARN, f"{status['update_errors']} hand-over/training errors")
        if status.get("checkpoint_error"):  # until a write succeeds again (the learner retries)
            report.add_check(Level.ERROR, f"checkpoint write failing: {status['checkpoint_error']}")
        else:  # a failed save request is resolved by the learner's retry
            self.problems.clear("save_failed")
        report.add_problems(self.problems)
        return report

    def _publish_status(self) -> None:
        import json

        self.pub_status.publish(String(data=json.dumps(self.status(), sort_keys=True, default=str)))
        self.pub_diagnostics.publish(make_array([to_status(self.health())], self.get_clock().now().nanoseconds))

    def destroy_node(self) -> None:
        """Stop the pair worker and the learner, then destroy the node."""
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop()
        learner = getattr(self, "learner", None)
        if learner is not None:
            learner.close()
        for thread in getattr(self, "_background", []):
            thread.join(timeout=30.0)
        super().destroy_node()


def main(args: Optional[list[str]] = None) -> int:
    """Console entry ``online_adaptation``: run the node until Ctrl-C (exit 2 after one line on a config error)."""
    return run_node(OnlineAdaptationNode, "online_adaptation", args)


if __name__ == "__main__":
    raise SystemExit(main())

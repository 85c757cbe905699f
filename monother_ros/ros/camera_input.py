"""One camera input stream of a node, as real drivers deliver it: transport, calibration file, frame id, crop.

Shared by ``thermal_depth`` and ``online_adaptation`` (parameters :data:`THERMAL_INPUT_PARAMETERS`,
:data:`RGB_INPUT_PARAMETERS`, :data:`FRAME_CHECK_PARAMETERS`):

* ``<camera>.transport``: ``raw`` subscribes ``sensor_msgs/Image`` on the base topic (``thermal/image_raw``);
  ``compressed`` subscribes ``sensor_msgs/CompressedImage`` on ``<base>/compressed``, image_transport's
  naming (PNG/JPEG decoded by ``core.image_codec.decode_compressed_image``; 16-bit thermal needs PNG).
* ``<camera>.camera_info_url``: a camera_calibration YAML file (``file://`` URL or path) used while no
  camera_info message has arrived (drivers that publish none, e.g. Optris). A missing or malformed file is
  reported (throttled, ``/diagnostics``) and the node runs on without it, as without camera_info.
* ``<camera>.frame_id``: fills an EMPTY input ``header.frame_id`` (Optris publishes none); a non-empty
  frame id from the driver is kept. (The depth node's own ``frame_id`` parameter is different: it sets
  the frame of its outputs.)
* ``thermal.crop``: ``[top, bottom, left, right]`` pixels dropped from every thermal frame before
  anything else (e.g. ``[0, 2, 0, 0]`` for the telemetry rows of a FLIR Boson 640x514 raw frame); a
  camera_info of the uncropped size is cropped the same way (principal point shifted, size reduced), one
  already of the cropped size is used as is.
* thermal formats: mono16/16UC1/mono8/8UC1, and rgb8/bgr8 only when grey (``core.thermal_format``).

Errors raise :class:`~monother_ros.core.image_codec.ImageDecodeError` with a ``reason`` key; the nodes turn
them into named, throttled problems (``thermal_<reason>``, ``rgb_<reason>``).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from monother_ros.core.calibration_file import CameraCalibration, read_calibration
from monother_ros.core.frame_health import FrameHealthConfig
from monother_ros.core.image_codec import ImageDecodeError, decode_compressed_image
from monother_ros.core.thermal_format import Crop, crop_frame, crop_intrinsics, thermal_intensities
from monother_ros.errors import CalibrationError
from monother_ros.ros.convert import image_to_array
from monother_ros.ros.params import ParamSpec, in_range, non_negative, one_of

__all__ = ["THERMAL_INPUT_PARAMETERS", "RGB_INPUT_PARAMETERS", "FRAME_CHECK_PARAMETERS", "TRANSPORTS", "CameraStream",
           "frame_health_config", "info_from_calibration", "image_topic"]

TRANSPORTS = ("raw", "compressed")
COMPRESSED_SUFFIX = "/compressed"  # image_transport: <base topic>/compressed
ImageMessage = Union[Image, CompressedImage]


def _stream_parameters(camera: str, what: str) -> list[ParamSpec]:
    return [
        ParamSpec(f"{camera}.transport", str, "raw", f"{what} image transport: raw (sensor_msgs/Image on "
                  f"{camera}/image_raw) or compressed (sensor_msgs/CompressedImage on {camera}/image_raw/compressed, "
                  "PNG/JPEG)", one_of(*TRANSPORTS)),
        ParamSpec(f"{camera}.camera_info_url", str, "", f"{what} calibration YAML (camera_calibration format; "
                  f"file:// URL or path) used while no {camera}/camera_info arrives; empty = none"),
        ParamSpec(f"{camera}.frame_id", str, "", f"frame id given to {what} images that arrive with an EMPTY "
                  "header.frame_id (a driver's own frame id is kept); empty = none"),
    ]


def _crop_valid(value: Any) -> Optional[str]:
    try:
        Crop.from_list(value)
    except ValueError as exc:
        return str(exc)
    return None


THERMAL_INPUT_PARAMETERS: list[ParamSpec] = _stream_parameters("thermal", "thermal") + [
    ParamSpec("thermal.crop", "list[int]", [0, 0, 0, 0], "pixels dropped from each thermal frame before anything "
              "else, [top, bottom, left, right] (FLIR Boson 640x514 raw: [0, 2, 0, 0]); camera_info of the "
              "uncropped size is cropped alike", _crop_valid),
]
RGB_INPUT_PARAMETERS: list[ParamSpec] = _stream_parameters("rgb", "RGB")
_DEFAULT_CHECK = FrameHealthConfig()
FRAME_CHECK_PARAMETERS: list[ParamSpec] = [
    ParamSpec("frame_check.min_spread_16bit", int, _DEFAULT_CHECK.min_spread_16bit,
              "a 16-bit thermal frame whose 1-99 % spread is below this many counts has no scene (closed "
              "shutter, lens cap): no depth for it; 0 = off", non_negative),
    ParamSpec("frame_check.min_spread_8bit", int, _DEFAULT_CHECK.min_spread_8bit,
              "the same for 8-bit thermal frames, grey levels; 0 = off", non_negative),
    ParamSpec("frame_check.max_saturated_fraction", float, _DEFAULT_CHECK.max_saturated_fraction,
              "a thermal frame with more than this fraction of pixels at 0 or full scale is saturated/dead: "
              "no depth for it; 0 = off", in_range(0.0, 1.0)),
    ParamSpec("frame_check.max_identical_frames", int, _DEFAULT_CHECK.max_identical_frames,
              "after this many identical thermal frames in a row the driver counts as frozen: no depth until "
              "the frames change; 0 = off", non_negative),
]


def frame_health_config(params: dict[str, Any]) -> FrameHealthConfig:
    """``FrameHealthConfig`` from validated ``frame_check.*`` parameters."""
    return FrameHealthConfig(min_spread_16bit=params["frame_check.min_spread_16bit"],
                             min_spread_8bit=params["frame_check.min_spread_8bit"],
                             max_saturated_fraction=params["frame_check.max_saturated_fraction"],
                             max_identical_frames=params["frame_check.max_identical_frames"])


def image_topic(base: str, transport: str) -> str:
    """The topic a transport subscribes for a base image topic (image_transport's naming)."""
    return base + COMPRESSED_SUFFIX if transport == "compressed" else base


def info_from_calibration(calibration: CameraCalibration, frame_id: str = "") -> CameraInfo:
    """A ``CameraInfo`` holding a calibration file's values."""
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    msg.width, msg.height = calibration.width, calibration.height
    msg.distortion_model = calibration.distortion_model
    msg.d = list(calibration.D)
    msg.k, msg.r, msg.p = list(calibration.K), list(calibration.R), list(calibration.P)
    return msg


class CameraStream:
    """One camera's input settings and decoding (see the module docstring).

    Args:
        camera: ``thermal`` or ``rgb`` (the parameter prefix and the problem-name prefix).
        params: the node's validated parameters (``<camera>.*`` from the tables above).
        base_topic: the raw image topic (``thermal/image_raw``).
        max_dimension: largest accepted image width/height.

    Attributes:
        calibration_error: why ``<camera>.camera_info_url`` could not be used ('' when fine or unset).
    """

    def __init__(self, camera: str, params: dict[str, Any], base_topic: str, *, max_dimension: int = 16384) -> None:
        self.camera = camera
        self.transport: str = params[f"{camera}.transport"]
        self.topic = image_topic(base_topic, self.transport)
        self.message_type = CompressedImage if self.transport == "compressed" else Image
        self.fill_frame_id: str = params[f"{camera}.frame_id"]
        self.crop = Crop.from_list(params[f"{camera}.crop"]) if f"{camera}.crop" in params else Crop()
        self.max_dimension = max_dimension
        self.url: str = params[f"{camera}.camera_info_url"]
        self.url_info: Optional[CameraInfo] = None
        self.calibration_error = ""
        if self.url:
            try:
                self.url_info = info_from_calibration(read_calibration(self.url), self.fill_frame_id)
            except CalibrationError as exc:
                self.calibration_error = f"{camera}.camera_info_url: {exc}"
        self._info_key: Optional[tuple] = None
        self._info_out: Optional[CameraInfo] = None

    def subscribe(self, node, callback: Callable[[Any], None], qos_profile) -> Any:
        """Subscribe ``callback`` to this stream's topic with its transport's message type."""
        return node.create_subscription(self.message_type, self.topic, callback, qos_profile)

    def fill_header(self, msg: ImageMessage) -> None:
        """Give an empty ``header.frame_id`` the configured ``<camera>.frame_id`` (in place)."""
        if not msg.header.frame_id and self.fill_frame_id:
            msg.header.frame_id = self.fill_frame_id

    def decode(self, msg: ImageMessage) -> tuple[np.ndarray, str]:
        """(image, encoding) of a raw or compressed message (compressed colour comes out as rgb8).

        Raises:
            ImageDecodeError: malformed, corrupt, truncated or mislabelled data (``reason`` set).
        """
        if isinstance(msg, CompressedImage):
            image = decode_compressed_image(msg.data, msg.format, max_dimension=self.max_dimension)
            return image, ("rgb8" if image.ndim == 3 else "mono16" if image.dtype == np.uint16 else "mono8")
        return image_to_array(msg, max_dimension=self.max_dimension), msg.encoding

    def thermal(self, msg: ImageMessage) -> np.ndarray:
        """(H, W) uint8/uint16 thermal intensities: decoded, grey checked, cropped.

        Raises:
            ImageDecodeError: as :meth:`decode`, plus ``colour_mapped``, ``bad_encoding``, ``crop_too_large``.
        """
        image, encoding = self.decode(msg)
        return crop_frame(thermal_intensities(image, encoding), self.crop)

    def uncropped_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of the frame before the crop, from the cropped (H, W)."""
        return (image_hw[1] + self.crop.left + self.crop.right, image_hw[0] + self.crop.top + self.crop.bottom)

    def camera_info(self, received: Optional[CameraInfo], image_hw: tuple[int, int]) -> Optional[CameraInfo]:
        """The camera_info to use for a (cropped) image of ``image_hw`` = (H, W): the received one, else the
        calibration file's; cropped like the image when it has the uncropped size; None when neither.

        The result is cached per input (the same object while nothing changes).
        """
        info = received if received is not None else self.url_info
        if info is None:
            return None
        # Keyed on the object itself (held in the key, so its id cannot be reused) and the image size.
        key = (info, image_hw)
        if self._info_key is not None and self._info_key[0] is info and self._info_key[1] == image_hw:
            return self._info_out
        out = info
        if not self.crop.empty and (info.width, info.height) == self.uncropped_size(image_hw):
            out = copy.deepcopy(info)
            out.k, out.p = crop_intrinsics(info.k, info.p, self.crop)
            out.width, out.height = image_hw[1], image_hw[0]
        if not out.header.frame_id and self.fill_frame_id:
            out = copy.deepcopy(out) if out is info else out
            out.header.frame_id = self.fill_frame_id
        self._info_key, self._info_out = key, out
        return out


class DecodeAhead:
    """A decoding stage in front of a node's worker, for compressed input: frame n+1 is decoded while the
    worker runs inference on frame n (ONNX Runtime / torch release the GIL), so decoding costs latency but
    little rate.

    The stage takes the newest item from ``source`` only when the worker is ready for another one (it called
    :meth:`taken`), so at most one decoded item waits and nothing is decoded only to be dropped; the items
    arriving meanwhile replace each other in ``source`` as before (latest-only).

    Args:
        source: the latest-only slot the executor callback fills.
        decode: called with each item on this stage's thread; stores its result on the item and must not
            raise (errors are stored too, and reported by the worker).
        name: thread name.

    Attributes:
        output: the latest-only slot the worker drains instead of ``source``.
    """

    def __init__(self, source, decode: Callable[[Any], None], *, name: str = "decode-ahead") -> None:
        import threading

        from monother_ros.ros.worker import LatestSlot

        self.source = source
        self.output = LatestSlot()
        self._decode = decode
        self._ready = threading.Event()
        self._ready.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def taken(self) -> None:
        """The worker took the decoded item: decode the next one while it works."""
        self._ready.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._ready.wait(0.2):
                continue
            item = self.source.take(timeout=0.2)
            if item is None:
                if self.source.closed:
                    break
                continue
            self._decode(item)
            self._ready.clear()
            self.output.put(item)
        self.output.close()

    def clear(self) -> None:
        """Discard what waits in both slots (the node stopped listening)."""
        self.source.clear()
        self.output.clear()
        self._ready.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.source.close()
        self._thread.join(timeout)

"""The inference-engine interface shared by the TensorRT, ONNX Runtime and PyTorch backends.

Every backend runs the same three stages (DESIGN.md §3):

1. ``core.preprocess``: thermal (H, W) uint16/uint8 -> percentile normalisation -> resize to the
   engine's input (multiples of 14) -> mean/std -> (1, 3, h, w) float32;
2. the network at engine resolution -> depth (1, 1, h, w) metres [+ confidence (1, 1, h, w)];
3. ``core.preprocess``: resize back to the camera (H, W), NaN where the depth is out of
   ``[min_depth_m, max_depth_m]``, not finite, or the confidence is below ``min_confidence``.

Backends only implement stage 2 (:meth:`EngineBase._run`); :class:`EngineBase` does the rest with
buffers preallocated per camera size, under a lock so that weights or models can be swapped between
frames while another thread infers.

``make_backend`` picks and builds a backend from a model folder (checkpoint + optional ONNX) or an ONNX
file; ``backend="auto"`` tries TensorRT, then torch on a CUDA GPU, then ONNX Runtime on the CPU, each
failure falling through (``runtime/selection.py``; the choice is ``engine.selection``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from monother_ros.errors import ConfigError

__all__ = [
    "BackendName",
    "DepthResult",
    "Engine",
    "EngineBase",
    "EngineInfo",
    "MaskThresholds",
    "Precision",
    "BackendSelection",
    "available_backends",
    "make_backend",
    "resolve_backend",
]

_logger = logging.getLogger(__name__)

BackendName = Literal["auto", "tensorrt", "onnxruntime", "torch"]
Precision = Literal["fp16", "fp32"]


@dataclass(frozen=True)
class DepthResult:
    """One frame's output at the camera resolution.

    Attributes:
        depth: (H, W) float32 metres, NaN where invalid (REP 118).
        confidence: (H, W) float32 in [0, 1], or None when the model has no confidence output.
        timings: milliseconds per stage: ``preprocess_ms``, ``inference_ms``, ``postprocess_ms``,
            ``total_ms``.
        points: the organised point cloud of ``depth`` as PointCloud2 data (h * w * 16,) uint8 (x, y, z,
            intensity = confidence; ``core.cloud.pack_xyzi`` layout; h, w decimated by the cloud
            options), when the engine computes it (``TorchEngine.set_cloud_camera`` on a GPU); else None.
    """

    depth: np.ndarray
    confidence: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    points: np.ndarray | None = None


@dataclass(frozen=True)
class EngineInfo:
    """What an engine is (read from the ONNX metadata or checkpoint config, never restated).

    Attributes:
        input_hw: (h, w) network input size, multiples of the patch size.
        precision: ``fp16`` or ``fp32`` actually used.
        backend: ``tensorrt``, ``onnxruntime`` or ``torch``.
        model_hash: hex digest of weights + configuration.
        model_name: configuration name.
        has_confidence: whether ``DepthResult.confidence`` is filled.
        mean, std: per-channel input normalisation.
        min_depth_m, max_depth_m: the model's depth range (default masking thresholds).
    """

    input_hw: tuple[int, int]
    precision: Precision
    backend: Literal["tensorrt", "onnxruntime", "torch"]
    model_hash: str
    model_name: str
    has_confidence: bool
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)
    min_depth_m: float = 1e-3
    max_depth_m: float = 80.0


@dataclass(frozen=True)
class MaskThresholds:
    """Which pixels of the output are set to NaN.

    Attributes:
        min_depth_m, max_depth_m: valid depth range (exclusive, as ``core.preprocess.mask_depth``), metres.
        min_confidence: pixels with confidence strictly below this are invalid (0 keeps all; ignored
            when the model has no confidence output).
    """

    min_depth_m: float = 1e-3
    max_depth_m: float = 80.0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_depth_m) and np.isfinite(self.max_depth_m)):
            raise ConfigError(f"depth thresholds must be finite: {self.min_depth_m}, {self.max_depth_m}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ConfigError(f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


@runtime_checkable
class Engine(Protocol):
    """What every backend offers."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def thresholds(self) -> MaskThresholds: ...

    def infer(self, thermal: np.ndarray) -> DepthResult:
        """Depth (and confidence) at the camera resolution for one (H, W) uint16/uint8 thermal image."""
        ...

    def preprocess(self, thermal: np.ndarray) -> np.ndarray:
        """The (1, 3, h, w) float32 network input ``infer`` would feed for this thermal image."""
        ...

    def infer_tensor(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw network outputs for a preprocessed (1, 3, h, w) float32 input (h, w = ``info.input_hw``):
        ``(depth (1, 1, h, w) float32 metres, confidence (1, 1, h, w) float32 or None)``, new arrays."""
        ...

    def close(self) -> None:
        """Release sessions, GPU memory and files."""
        ...


class EngineBase:
    """Shared pre/postprocessing, buffers, locking and timings; subclasses implement :meth:`_run`.

    Thread safety: :meth:`infer` and :meth:`infer_tensor` hold ``self._lock`` for the whole frame, so
    a backend's swap method taking the same lock lands between frames.
    """

    # How make_backend chose this engine (runtime.selection.BackendSelection); None when built directly.
    selection = None

    def __init__(self, info: EngineInfo, thresholds: MaskThresholds) -> None:
        self._info = info
        self._thresholds = thresholds
        self._lock = threading.RLock()
        h, w = info.input_hw
        # Network input, reused every frame; backends may bind it directly (IO binding, device copy).
        self._input = np.zeros((1, 3, h, w), dtype=np.float32)
        # core.preprocess state for the current camera size (built by the first frame of that size).
        self._pre = None
        self._per_channel: tuple[np.ndarray, np.ndarray] | None = None
        self._post = None

    # ------------------------------------------------------------------ public API
    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def thresholds(self) -> MaskThresholds:
        return self._thresholds

    def set_thresholds(self, thresholds: MaskThresholds) -> None:
        """Change the masking thresholds (takes effect from the next frame)."""
        with self._lock:
            self._thresholds = thresholds

    def infer(self, thermal: np.ndarray) -> DepthResult:
        """Depth at the camera resolution.

        Args:
            thermal: (H, W) uint16 or uint8 raw thermal image (any H, W >= 2; not necessarily multiples
                of 14: it is resized to ``info.input_hw`` and the output resized back).

        Returns:
            :class:`DepthResult` with (H, W) float32 depth (NaN invalid) and confidence (or None).

        Raises:
            ValueError: not a 2-D uint8/uint16 image.
        """
        thermal = _check_thermal(thermal)
        with self._lock:
            t0 = time.perf_counter()
            self._preprocess(thermal)
            t1 = time.perf_counter()
            depth_net, conf_net = self._run(self._input)
            t2 = time.perf_counter()
            th = self._thresholds
            # Depth and confidence resized together in one pass into reused buffers; the returned arrays
            # are fresh (the caller's own).
            depth, confidence = self._post(
                depth_net[0, 0], None if conf_net is None else conf_net[0, 0], min_depth=th.min_depth_m,
                max_depth=th.max_depth_m, min_confidence=th.min_confidence,
            )
            t3 = time.perf_counter()
        timings = {
            "preprocess_ms": (t1 - t0) * 1e3,
            "inference_ms": (t2 - t1) * 1e3,
            "postprocess_ms": (t3 - t2) * 1e3,
            "total_ms": (t3 - t0) * 1e3,
        }
        return DepthResult(depth=depth, confidence=confidence, timings=timings)

    def preprocess(self, thermal: np.ndarray) -> np.ndarray:
        """The (1, 3, h, w) float32 network input for a thermal image (a new array; for tests/tools).

        Raises:
            ValueError: not a 2-D uint8/uint16 image.
        """
        thermal = _check_thermal(thermal)
        with self._lock:
            self._preprocess(thermal)
            return self._input.copy()

    def infer_tensor(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network outputs at engine resolution for a preprocessed input.

        Args:
            x: (1, 3, h, w) float32, h, w = ``info.input_hw``.

        Returns:
            ``(depth (1, 1, h, w) float32 metres, confidence (1, 1, h, w) float32 or None)``, fresh arrays
            (not the engine's internal buffers).

        Raises:
            ValueError: wrong shape.
        """
        x = np.asarray(x)
        expected = (1, 3, *self._info.input_hw)
        if x.shape != expected:
            raise ValueError(f"expected input of shape {expected}, got {x.shape}")
        with self._lock:
            np.copyto(self._input, x, casting="same_kind")
            depth, conf = self._run(self._input)
            return depth.copy(), (conf.copy() if conf is not None else None)

    def close(self) -> None:
        """Release backend resources (subclasses extend)."""

    def __enter__(self) -> "EngineBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ backend hooks
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the network on ``x`` (1, 3, h, w) float32; may return views of internal buffers that are
        valid until the next call (the caller holds the lock)."""
        raise NotImplementedError

    def _set_info(self, info: EngineInfo) -> None:
        """Replace the metadata after a swap (same input size and outputs; caller holds the lock)."""
        if info.input_hw != self._info.input_hw or info.has_confidence != self._info.has_confidence:
            raise ConfigError(
                f"swapped model has input {info.input_hw} / confidence {info.has_confidence}, the engine "
                f"was built for {self._info.input_hw} / {self._info.has_confidence}"
            )
        self._info = info

    # ------------------------------------------------------------------ internals
    def _preprocess(self, thermal: np.ndarray) -> None:
        """Fill ``self._input`` from a raw thermal image with ``core.preprocess`` (caller holds the lock).

        The preprocessor and the output resizer (index/weight tables, buffers) are built once per camera
        size and reused while frames keep that size.
        """
        from monother_ros.core import preprocess as pp

        if self._pre is None or self._pre.in_hw != thermal.shape:
            mean, std = self._info.mean, self._info.std
            same = len(set(mean)) == 1 and len(set(std)) == 1
            # One value per channel is what the thermal pipeline has (0.45 / 0.225 on a replicated
            # image); a model trained with per-channel values gets [0, 1] input and its affine below.
            self._pre = pp.ThermalPreprocessor(thermal.shape, self._info.input_hw,
                                               mean=mean[0] if same else 0.0, std=std[0] if same else 1.0)
            self._per_channel = None if same else (np.asarray(mean, np.float32), np.asarray(std, np.float32))
            self._post = pp.DepthPostprocessor(self._info.input_hw, thermal.shape)
        # Written straight into the (possibly IO-bound) network input buffer.
        self._pre(thermal, out=self._input)
        if self._per_channel is not None:
            mean, std = self._per_channel
            for c in range(3):
                self._input[0, c] -= mean[c]
                self._input[0, c] /= std[c]


def _check_thermal(thermal: np.ndarray) -> np.ndarray:
    thermal = np.asarray(thermal)
    if thermal.ndim != 2 or thermal.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"thermal must be (H, W) uint8 or uint16, got {thermal.shape} {thermal.dtype}")
    if min(thermal.shape) < 2:
        raise ValueError(f"thermal image too small: {thermal.shape}")
    return thermal


# ---------------------------------------------------------------------- backend selection
# The probes and the auto order live in runtime/selection.py; these names stay for callers and tests.
from monother_ros.runtime.selection import PROBES as _PROBES  # noqa: E402 - after the engine classes
from monother_ros.runtime.selection import BackendSelection, first_usable  # noqa: E402
from monother_ros.runtime.selection import probe_tensorrt as _tensorrt_importable  # noqa: E402


def available_backends() -> dict[str, str]:
    """Each concrete backend mapped to ``""`` when usable here, else the reason it is not."""
    return {name: _PROBES[name]()[1] for name in ("tensorrt", "onnxruntime", "torch")}


def resolve_backend(backend: str) -> Literal["tensorrt", "onnxruntime", "torch"]:
    """The backend ``auto`` would try first (TensorRT, torch on a CUDA GPU, ONNX Runtime) by the probes
    alone, or check that a named one is usable; no engine is built (``make_backend`` may still fall
    through when the build fails).

    Raises:
        ConfigError: unknown backend name.
        BackendUnavailableError: the backend's libraries or hardware are missing (the reason is given).
    """
    return first_usable(backend)


def make_backend(
    model_dir: str | os.PathLike,
    backend: BackendName = "auto",
    *,
    input_hw: Sequence[int] | None = None,
    precision: Precision = "fp16",
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_threads: int | None = None,
    min_depth_m: float | None = None,
    max_depth_m: float | None = None,
    min_confidence: float = 0.0,
    rebuild: bool = True,
    cuda_graphs: bool = True,
) -> EngineBase:
    """Build an inference engine.

    Args:
        model_dir: a saved model folder (``config.json`` + weights, optionally a ``model.onnx`` exported
            at some size) or an exported ``.onnx`` file (not for the torch backend).
        backend: ``auto`` (TensorRT >= 8.6 if it builds, else torch on a visible CUDA GPU, else ONNX
            Runtime on the CPU; each failure falls through: ``runtime/selection.py``), ``tensorrt``,
            ``onnxruntime`` or ``torch``.
        input_hw: network input (h, w), multiples of 14; default: the ONNX file's size or the model
            config's ``input_size``. A folder whose ONNX has another size is re-exported into the cache.
        precision: ``fp16`` or ``fp32`` on CUDA (TensorRT; torch casts the weights once, see
            ``runtime.half``). ONNX Runtime on the CPU and torch on the CPU always run fp32
            (``info.precision`` says what is used).
        device: ``auto`` (default: a CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
            ``cuda:N`` (``runtime.device``). ONNX Runtime uses the CPU unless a CUDA device is named.
        cache_dir: where exported ONNX files and TensorRT engines are cached (default ``engines/cache``).
        num_threads: CPU threads for ONNX Runtime / torch (default: all cores).
        min_depth_m, max_depth_m: valid depth range; default the model's range.
        min_confidence: NaN where confidence is below this (0 = keep all).
        rebuild: TensorRT only: rebuild a corrupt or mismatched cached engine (else ``EngineFileError``).
        cuda_graphs: torch on CUDA only: capture and replay frames as CUDA graphs (eager when off or
            when a capture fails).

    Returns:
        The engine; ``engine.selection`` (:class:`BackendSelection`) records the backend and device
        chosen and why earlier candidates were not used.

    Raises:
        ConfigError: bad arguments (unknown backend or device, input size not a multiple of 14, bad
            thresholds).
        BackendUnavailableError: the requested backend or device cannot run here (or, under ``auto``,
            no candidate could).
        CheckpointError: the model folder or ONNX file is missing or corrupt.
        EngineFileError: a cached TensorRT engine is corrupt/mismatched and rebuilding is off.
    """
    from monother_ros.errors import CheckpointError
    from monother_ros.runtime.selection import choose_and_build

    if precision not in ("fp16", "fp32"):
        raise ConfigError(f"precision must be fp16 or fp32, got {precision!r}")
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
    hw = None if input_hw is None else (int(input_hw[0]), int(input_hw[1]))
    model_path = Path(model_dir)
    if not model_path.exists():
        raise CheckpointError(f"model not found: {model_path} (expected a model folder or an .onnx file)")
    thresholds_kw = dict(min_depth_m=min_depth_m, max_depth_m=max_depth_m, min_confidence=min_confidence)

    def build_torch(run_on: str) -> EngineBase:
        from monother_ros.runtime.torch_engine import TorchEngine

        return TorchEngine.from_model_dir(model_path, input_hw=hw, precision=precision, device=run_on,
                                          num_threads=num_threads, cuda_graphs=cuda_graphs, **thresholds_kw)

    def build_onnxruntime(run_on: str) -> EngineBase:
        from monother_ros.runtime.export import resolve_onnx
        from monother_ros.runtime.onnx_engine import OnnxEngine

        return OnnxEngine(resolve_onnx(model_path, hw, cache_dir), device=run_on, num_threads=num_threads,
                          **thresholds_kw)

    def build_tensorrt(run_on: str) -> EngineBase:
        from monother_ros.runtime.export import resolve_onnx
        from monother_ros.runtime.tensorrt_engine import TensorRTEngine

        return TensorRTEngine.from_onnx(resolve_onnx(model_path, hw, cache_dir), precision=precision,
                                        device=run_on, cache_dir=cache_dir, rebuild=rebuild, **thresholds_kw)

    return choose_and_build(backend, device or "auto",
                            {"torch": build_torch, "onnxruntime": build_onnxruntime, "tensorrt": build_tensorrt})


def thresholds_for(info: EngineInfo, min_depth_m: float | None, max_depth_m: float | None,
                   min_confidence: float) -> MaskThresholds:
    """Masking thresholds, defaulting the depth range to the model's."""
    return MaskThresholds(
        min_depth_m=info.min_depth_m if min_depth_m is None else float(min_depth_m),
        max_depth_m=info.max_depth_m if max_depth_m is None else float(max_depth_m),
        min_confidence=float(min_confidence),
    )


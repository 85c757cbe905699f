"""ONNX Runtime backend (CPU by default; CUDA execution provider when asked and installed).

The session is built with explicit options: ``intra_op_num_threads`` configurable (default: ONNX
Runtime's own choice, one thread per physical core), ``inter_op_num_threads`` 1 with sequential
execution (the graph is a single chain; a second pool would only compete for the same cores), and all
graph optimisations. Input and outputs are bound once to the engine's preallocated numpy buffers through
IO binding, so a frame allocates no tensors on the hot path.

``swap_model(onnx_path)`` replaces the session with one built from another ONNX file of the same input
size and outputs (e.g. freshly adapted weights), between frames.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from monother_ros.errors import BackendUnavailableError, CheckpointError, ConfigError
from monother_ros.runtime.engine import EngineBase, EngineInfo, thresholds_for
from monother_ros.runtime.export import INPUT_NAME, OUTPUT_CONFIDENCE, OUTPUT_DEPTH, OnnxModelInfo, read_onnx_info

__all__ = ["OnnxEngine"]

_logger = logging.getLogger(__name__)


def _info_from_onnx(meta: OnnxModelInfo) -> EngineInfo:
    return EngineInfo(
        input_hw=meta.input_hw, precision="fp32", backend="onnxruntime", model_hash=meta.model_hash,
        model_name=meta.model_name, has_confidence=meta.has_confidence, mean=meta.mean, std=meta.std,
        min_depth_m=meta.min_depth_m, max_depth_m=meta.max_depth_m,
    )


class _Session:
    """An ``InferenceSession`` plus its IO binding onto fixed numpy buffers."""

    def __init__(self, path: Path, meta: OnnxModelInfo, input_buffer: np.ndarray, providers: list[str],
                 num_threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(num_threads or 0)  # 0 = ONNX Runtime default (physical cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise CheckpointError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        inputs = [(i.name, list(i.shape)) for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        h, w = meta.input_hw
        expected_out = [OUTPUT_DEPTH, OUTPUT_CONFIDENCE] if meta.has_confidence else [OUTPUT_DEPTH]
        if inputs != [(INPUT_NAME, [1, 3, h, w])] or outputs != expected_out:
            raise CheckpointError(f"{path}: graph inputs {inputs} / outputs {outputs} do not match its "
                                  f"metadata (expected {INPUT_NAME} [1, 3, {h}, {w}] / {expected_out})")
        self.depth = np.zeros((1, 1, h, w), dtype=np.float32)
        self.confidence = np.zeros((1, 1, h, w), dtype=np.float32) if meta.has_confidence else None
        on_cpu = self.session.get_providers()[0] == "CPUExecutionProvider"
        self.binding = None
        if on_cpu:
            # Bind once: ORT reads the input buffer and writes the outputs in place every run.
            self.binding = self.session.io_binding()
            self.binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(input_buffer))
            self.binding.bind_ortvalue_output(OUTPUT_DEPTH, ort.OrtValue.ortvalue_from_numpy(self.depth))
            if self.confidence is not None:
                self.binding.bind_ortvalue_output(OUTPUT_CONFIDENCE,
                                                  ort.OrtValue.ortvalue_from_numpy(self.confidence))
        self._input = input_buffer
        self.threads = options.intra_op_num_threads

    def run(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.binding is not None:
            self.session.run_with_iobinding(self.binding)
            return self.depth, self.confidence
        # Device providers: let ORT copy host<->device; outputs are new arrays.
        outs = self.session.run(None, {INPUT_NAME: self._input})
        return outs[0], (outs[1] if len(outs) > 1 else None)


class OnnxEngine(EngineBase):
    """ONNX Runtime engine for an exported ONNX file (see ``runtime/export.py`` for its metadata).

    Args:
        onnx_path: exported model file.
        device: ``cpu`` (default) or ``cuda``/``cuda:N`` (needs onnxruntime-gpu).
        num_threads: intra-op threads (default: ONNX Runtime's choice).
        min_depth_m, max_depth_m, min_confidence: masking thresholds (depth range defaults to the
            model's).

    Raises:
        CheckpointError: missing/corrupt file or graph not matching its metadata.
        BackendUnavailableError: CUDA asked for but the CUDA provider is missing.
    """

    def __init__(self, onnx_path: str | os.PathLike, *, device: str | None = None,
                 num_threads: int | None = None, min_depth_m: float | None = None,
                 max_depth_m: float | None = None, min_confidence: float = 0.0) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        meta = read_onnx_info(path)
        info = _info_from_onnx(meta)
        super().__init__(info, thresholds_for(info, min_depth_m, max_depth_m, min_confidence))
        self._providers = self._pick_providers(device, ort.get_available_providers())
        self._num_threads = num_threads
        self._session = _Session(path, meta, self._input, self._providers, num_threads)
        self.onnx_path = path
        _logger.info("ONNX Runtime engine %s (%s, %dx%d, providers %s, intra-op threads %s)", meta.model_name,
                     meta.model_hash[:12], *meta.input_hw, self._session.session.get_providers(),
                     num_threads or "default")

    @staticmethod
    def _pick_providers(device: str | None, available: list[str]) -> list[str]:
        if device is None or device == "cpu":
            return ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    f"device {device} needs onnxruntime's CUDAExecutionProvider (install onnxruntime-gpu); "
                    f"available: {', '.join(available)}")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        raise ConfigError(f"unknown device {device!r} for onnxruntime; use cpu or cuda[:N]")

    @property
    def num_threads(self) -> int:
        """intra-op threads requested (0 = ONNX Runtime default)."""
        return self._session.threads

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if x is not self._input:  # the binding reads self._input; keep that the only source
            np.copyto(self._input, x)
        return self._session.run()

    def swap_model(self, onnx_path: str | os.PathLike) -> EngineInfo:
        """Switch to another exported ONNX file between frames.

        The new session is built (slow) without holding the lock, so inference continues meanwhile;
        the switch itself is a reference swap under the lock.

        Returns:
            The new :class:`EngineInfo`.

        Raises:
            CheckpointError: unreadable file.
            ConfigError: different input size or outputs.
        """
        path = Path(onnx_path)
        meta = read_onnx_info(path)
        new_info = _info_from_onnx(meta)
        if new_info.input_hw != self.info.input_hw or new_info.has_confidence != self.info.has_confidence:
            raise ConfigError(f"cannot swap to {path}: input {new_info.input_hw}/confidence "
                              f"{new_info.has_confidence}, engine has {self.info.input_hw}/{self.info.has_confidence}")
        session = _Session(path, meta, self._input, self._providers, self._num_threads)
        with self._lock:
            self._set_info(new_info)
            self._session = session
            self.onnx_path = path
        _logger.info("ONNX Runtime engine swapped to %s (%s)", path, meta.model_hash[:12])
        return new_info

    def close(self) -> None:
        with self._lock:
            self._session = None  # type: ignore[assignment]


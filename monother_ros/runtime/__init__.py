"""Inference engines behind one interface: TensorRT, ONNX Runtime and PyTorch; ONNX export; engine cache.

Entry points (import the submodules for the rest; nothing heavy is imported here):

* :func:`make_backend` (``runtime.engine``): build an :class:`Engine` from a model folder or ONNX file;
* :class:`DepthResult`, :class:`EngineInfo`, :class:`MaskThresholds`: what engines return and describe;
* ``runtime.export``: ``export_onnx``, ``export_model_dir``, ``read_onnx_info``, ``resolve_onnx``;
* ``runtime.cache``: TensorRT engine cache keys, sidecars, pruning, atomic writes (pure Python);
* ``runtime.device``: device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``) checked and resolved;
* ``runtime.selection``: the ``auto`` order with fall-through, ``BackendSelection`` (``engine.selection``);
* ``runtime.onnx_passes``: the baked position embedding and the mixed-fp16 graph for TensorRT 11;
* backends: ``runtime.onnx_engine.OnnxEngine`` (``swap_model``), ``runtime.torch_engine.TorchEngine``
  (``swap_weights``), ``runtime.tensorrt_engine.TensorRTEngine`` (``from_onnx``).
"""
from monother_ros.runtime.engine import (
    DepthResult,
    Engine,
    EngineInfo,
    MaskThresholds,
    available_backends,
    make_backend,
    resolve_backend,
)

__all__ = [
    "DepthResult",
    "Engine",
    "EngineInfo",
    "MaskThresholds",
    "available_backends",
    "make_backend",
    "resolve_backend",
]

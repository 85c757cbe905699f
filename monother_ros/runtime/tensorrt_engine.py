"""TensorRT backend: engine built from the exported ONNX, cached per TensorRT version / GPU / shape /
precision / model and ONNX hash / builder settings, run asynchronously on a CUDA stream with torch CUDA
tensors as buffers.

Choices (see also ``runtime/cache.py`` for the cache files):

* Buffers: torch CUDA tensors (torch is already a dependency, also on a Jetson, where NVIDIA's JetPack
  wheel provides the CUDA build). Host input and outputs are pinned torch tensors seen as numpy arrays,
  copied with ``non_blocking`` on the engine's own stream, then one ``stream.synchronize()`` per frame.
* Versions: 8.6, 10.x and 11.x. TensorRT < 8.6 is refused (8.5's ONNX parser has no
  ``LayerNormalization``, which every export contains). The named-tensor API (``set_tensor_address``
  + ``execute_async_v3``) exists in all three; the bindings API (``execute_async_v2``) is kept as a
  fallback chosen by attribute.
* fp16, by the attributes the bindings have (:func:`network_typing`):

  - weakly typed (8.6, 10.x: ``BuilderFlag.FP16`` and ``ILayer.precision`` exist): the fp32 ONNX,
    ``BuilderFlag.FP16``, and the arithmetic layers that are not matrix products or convolutions
    (element-wise, unary, activation, normalisation, softmax, reduce, scale) pinned to fp32 with
    per-layer precision and output types + ``OBEY_PRECISION_CONSTRAINTS``;
  - strongly typed (11.x, where those were removed and every network is strongly typed; 11 keeps
    ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` only as an ignored, deprecated value, so it is
    passed only to an older release without ``FP16``): built from a mixed-fp16 ONNX in which exactly the
    matrix products and convolutions compute in fp16 (``runtime/onnx_passes.py`` explains the choice:
    the residual stream, LayerNorm and softmax of a DINOv2 ViT stay fp32).

  Both paths keep the same parts in fp32. fp32 engines use the plain ONNX (TF32 as TensorRT decides).
* The bicubic resize of the position embedding is baked into a constant before parsing (older exports
  included), so TensorRT never runs a cubic Resize whose kernel may differ from PyTorch's.
* Input/outputs stay fp32 (as in the ONNX) whatever the precision.
* Timing cache: one file per TensorRT version + GPU in the cache folder, reused across builds.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from monother_ros.errors import BackendUnavailableError, ConfigError, EngineFileError, MonotherError
from monother_ros.runtime.cache import (
    DEFAULT_KEEP_ENGINES,
    EngineCacheKey,
    atomic_write_bytes,
    default_cache_dir,
    engine_paths,
    file_sha256,
    load_or_build,
)
from monother_ros.runtime.engine import EngineBase, EngineInfo, Precision, thresholds_for
from monother_ros.runtime.export import INPUT_NAME, OUTPUT_CONFIDENCE, OUTPUT_DEPTH, OnnxModelInfo, read_onnx_info
from monother_ros.runtime.selection import MIN_TENSORRT, tensorrt_version_tuple

if TYPE_CHECKING:
    import torch

__all__ = ["TensorRTEngine", "build_serialized_engine", "builder_settings", "engine_cache_key", "network_typing",
           "prepare_onnx", "DEFAULT_WORKSPACE_BYTES", "BUILDER_RECIPE"]

_logger = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30  # 1 GiB: enough for ViT-L tactics, modest on an 8 GB Jetson
BUILDER_RECIPE = 2  # bump when the way engines are built changes (pinned layers, ONNX rewrites, flags)

# Layer kinds kept in fp32 on the weakly typed path: everything arithmetic except the matrix products
# and convolutions, i.e. the same split as onnx_passes.mixed_fp16 on the strongly typed path.
_FP32_LAYER_KINDS = ("ELEMENTWISE", "UNARY", "ACTIVATION", "NORMALIZATION", "SOFTMAX", "REDUCE", "SCALE")


def _trt_logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def network_typing(trt: Any) -> Literal["weak", "strong"]:
    """``weak`` when the bindings still have ``BuilderFlag.FP16`` (8.6, 10.x), ``strong`` when that
    API is gone (11.x) and ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists.

    Raises:
        BackendUnavailableError: neither API is present (an unknown TensorRT).
    """
    if hasattr(trt.BuilderFlag, "FP16"):
        return "weak"
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return "strong"
    raise BackendUnavailableError(f"TensorRT {getattr(trt, '__version__', '?')} has neither BuilderFlag.FP16 nor "
                                  "strongly typed networks; this package supports TensorRT 8.6, 10.x and 11.x")


def builder_settings(trt: Any, workspace_bytes: int) -> str:
    """The builder-settings part of the engine cache key."""
    return f"recipe{BUILDER_RECIPE}-{network_typing(trt)}-ws{int(workspace_bytes)}"


def _keep_fp32(network: Any, trt: Any) -> int:
    """Weakly typed path: pin the non-matmul arithmetic layers (and their float outputs) to fp32."""
    kinds = {getattr(trt.LayerType, n) for n in _FP32_LAYER_KINDS if hasattr(trt.LayerType, n)}
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in kinds:
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype == trt.float32]
        if not outputs:
            continue  # integer/bool arithmetic (shape math) has no precision to pin
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


def prepare_onnx(onnx_path: str | os.PathLike, precision: Precision, typing: Literal["weak", "strong"],
                 work_dir: str | os.PathLike) -> Path:
    """The ONNX file TensorRT parses: the position-embedding Resize baked into a constant and, for an
    fp16 strongly typed build, the mixed-fp16 graph. Written atomically into ``work_dir`` and reused
    (named by the source file's hash); the source itself is returned when nothing changes.

    Raises:
        CheckpointError: the source cannot be read.
        MonotherError: a rewrite failed.
    """
    import onnx

    from monother_ros.errors import CheckpointError
    from monother_ros.runtime.export import _save_atomic
    from monother_ros.runtime.onnx_passes import fold_constant_resizes, mixed_fp16

    source = Path(onnx_path)
    fp16_graph = precision == "fp16" and typing == "strong"
    try:
        digest = file_sha256(source)
    except OSError as exc:
        raise CheckpointError(f"cannot read {source}: {exc}") from exc
    target = Path(work_dir) / f"{source.stem}-{digest[:16]}-{'fp16mixed' if fp16_graph else 'fp32'}.trt.onnx"
    if target.is_file():
        return target
    try:
        proto = onnx.load_model(str(source))
    except Exception as exc:  # noqa: BLE001 - protobuf errors
        raise CheckpointError(f"ONNX file {source} is corrupt: {exc}") from exc
    folded = fold_constant_resizes(proto)
    if fp16_graph:
        proto = mixed_fp16(proto)
    elif not folded:
        return source
    _save_atomic(proto, target)
    return target


def build_serialized_engine(onnx_path: str | os.PathLike, precision: Precision, *,
                            workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                            timing_cache: str | os.PathLike | None = None,
                            work_dir: str | os.PathLike | None = None) -> bytes:
    """Build a TensorRT engine from an exported ONNX file.

    Args:
        onnx_path: exported model (static shape, fp32).
        precision: ``fp16`` (the fp32 parts of the module docstring kept fp32) or ``fp32``.
        workspace_bytes: builder workspace limit.
        timing_cache: file to read/update the builder timing cache (created if missing).
        work_dir: where the rewritten ONNX (:func:`prepare_onnx`) is kept; default the timing cache's
            folder, else the ONNX file's.

    Returns:
        The serialized engine.

    Raises:
        BackendUnavailableError: TensorRT older than 8.6 or of an unknown API.
        MonotherError: the parser or builder failed (parser errors are listed).
    """
    import tensorrt as trt

    if precision not in ("fp16", "fp32"):
        raise ConfigError(f"precision must be fp16 or fp32, got {precision!r}")
    version = str(trt.__version__)
    if tensorrt_version_tuple(version) < MIN_TENSORRT:
        raise BackendUnavailableError(f"TensorRT {version} is too old: >= 8.6 is needed (its ONNX parser must "
                                      "read LayerNormalization)")
    typing = network_typing(trt)
    folder = work_dir if work_dir is not None else (Path(timing_cache).parent if timing_cache is not None
                                                    else Path(onnx_path).parent)
    Path(folder).mkdir(parents=True, exist_ok=True)
    parsed = prepare_onnx(onnx_path, precision, typing, folder)
    logger = _trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if typing == "strong" and tensorrt_version_tuple(version) < (11, 0):
        flags |= 1 << int(creation.STRONGLY_TYPED)  # from 11 on every network is strongly typed (flag ignored)
    elif typing == "weak" and hasattr(creation, "EXPLICIT_BATCH") and tensorrt_version_tuple(version) < (10, 0):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # required before 10; a deprecated no-op from 10 on
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(parsed)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise MonotherError(f"TensorRT {version} cannot parse {parsed}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16" and typing == "weak":
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _keep_fp32(network, trt)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _logger.info("fp16 build (weakly typed, TensorRT %s): %d arithmetic layers kept in fp32", version, pinned)
    elif precision == "fp16":
        _logger.info("fp16 build (strongly typed, TensorRT %s) from %s", version, parsed.name)
    cache_file = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else b""
    trt_cache = config.create_timing_cache(cache_bytes)
    # ignore_mismatch: a cache from another device/version is dropped instead of failing the build.
    config.set_timing_cache(trt_cache, True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise MonotherError(f"TensorRT failed to build an engine from {onnx_path} ({precision}); see its log")
    if cache_file is not None:
        atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def engine_cache_key(trt: Any, *, gpu_name: str, compute_capability: tuple[int, int], sm_count: int,
                     total_memory_bytes: int, meta: OnnxModelInfo, onnx_sha256: str, precision: Precision,
                     workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> EngineCacheKey:
    """The cache key of an engine of ``meta``'s model built by this TensorRT module on that GPU."""
    return EngineCacheKey(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=compute_capability,
        input_shape=(1, 3, *meta.input_hw), precision=precision, model_hash=meta.model_hash,
        onnx_sha256=onnx_sha256, sm_count=sm_count, total_memory_bytes=total_memory_bytes,
        builder_settings=builder_settings(trt, workspace_bytes),
    )


def _torch_dtype(trt: Any, dtype: Any) -> "torch.dtype":
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    try:
        return table[dtype]
    except KeyError:
        raise EngineFileError(f"engine tensor has unsupported dtype {dtype}") from None


class TensorRTEngine(EngineBase):
    """Run a deserialized TensorRT engine; build it with :meth:`from_onnx`.

    Args:
        engine: ``tensorrt.ICudaEngine`` built from ``meta``'s ONNX file.
        runtime: the ``tensorrt.Runtime`` that deserialised it (kept alive with the engine).
        meta: the ONNX metadata (input size, names, mean/std, hash).
        precision: precision it was built with.
        device: CUDA device of the engine.
        min_depth_m, max_depth_m, min_confidence: masking thresholds.
    """

    def __init__(self, engine: Any, runtime: Any, meta: OnnxModelInfo, *, precision: Precision,
                 device: "torch.device", min_depth_m: float | None = None, max_depth_m: float | None = None,
                 min_confidence: float = 0.0) -> None:
        import tensorrt as trt
        import torch

        info = EngineInfo(
            input_hw=meta.input_hw, precision=precision, backend="tensorrt", model_hash=meta.model_hash,
            model_name=meta.model_name, has_confidence=meta.has_confidence, mean=meta.mean, std=meta.std,
            min_depth_m=meta.min_depth_m, max_depth_m=meta.max_depth_m,
        )
        super().__init__(info, thresholds_for(info, min_depth_m, max_depth_m, min_confidence))
        self._device = device
        self._runtime = runtime
        self._engine = engine
        self.engine_file: Path | None = None  # set by from_onnx: the cached engine file
        self.built = False  # set by from_onnx: True when the engine was (re)built, not loaded
        with torch.cuda.device(device):
            self._stream = torch.cuda.Stream(device=device)
            self._context = engine.create_execution_context()
            if self._context is None:
                raise EngineFileError("TensorRT could not create an execution context (out of GPU memory?)")
            io = self._io_tensors(trt)
            expected_out = [OUTPUT_DEPTH, OUTPUT_CONFIDENCE] if meta.has_confidence else [OUTPUT_DEPTH]
            inputs = [n for n, (is_in, _, _) in io.items() if is_in]
            outputs = [n for n, (is_in, _, _) in io.items() if not is_in]
            if inputs != [INPUT_NAME] or sorted(outputs) != sorted(expected_out):
                raise EngineFileError(f"engine has inputs {inputs} / outputs {outputs}, expected "
                                      f"[{INPUT_NAME!r}] / {expected_out}")
            h, w = meta.input_hw
            for name, (is_in, shape, _) in io.items():
                want = (1, 3, h, w) if is_in else (1, 1, h, w)
                if shape != want:
                    raise EngineFileError(f"engine tensor {name!r} has shape {shape}, expected {want}")
            # Device buffers, one per I/O tensor, in the engine's own dtypes.
            self._dev = {n: torch.empty(shape, dtype=dt, device=device) for n, (_, shape, dt) in io.items()}
            # Pinned host buffers so that the copies are truly asynchronous; the numpy views are what
            # EngineBase fills (input) and reads (outputs).
            self._host_in = torch.empty((1, 3, h, w), dtype=torch.float32, pin_memory=True)
            self._input = self._host_in.numpy()
            self._host_out = {n: torch.empty((1, 1, h, w), dtype=torch.float32, pin_memory=True) for n in outputs}
            self._use_v3 = hasattr(self._context, "execute_async_v3") and hasattr(engine, "num_io_tensors")
            if self._use_v3:
                for name, tensor in self._dev.items():
                    # bool in current releases; only an explicit False means refusal
                    if self._context.set_tensor_address(name, tensor.data_ptr()) is False:
                        raise EngineFileError(f"TensorRT refused the address of tensor {name!r}")
                self._bindings: list[int] = []
            else:
                self._bindings = [0] * engine.num_bindings
                for name, tensor in self._dev.items():
                    self._bindings[engine.get_binding_index(name)] = tensor.data_ptr()

    def _io_tensors(self, trt: Any) -> dict[str, tuple[bool, tuple[int, ...], "torch.dtype"]]:
        """name -> (is_input, shape, torch dtype), via the named-tensor API or the bindings API."""
        engine = self._engine
        out: dict[str, tuple[bool, tuple[int, ...], Any]] = {}
        if hasattr(engine, "num_io_tensors"):
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_in = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                out[name] = (is_in, tuple(engine.get_tensor_shape(name)),
                             _torch_dtype(trt, engine.get_tensor_dtype(name)))
        else:
            for i in range(engine.num_bindings):
                name = engine.get_binding_name(i)
                out[name] = (bool(engine.binding_is_input(i)), tuple(engine.get_binding_shape(i)),
                             _torch_dtype(trt, engine.get_binding_dtype(i)))
        return out

    @classmethod
    def from_onnx(cls, onnx_path: str | os.PathLike, *, precision: Precision = "fp16", device: str | None = None,
                  cache_dir: str | os.PathLike | None = None, rebuild: bool = True,
                  workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, min_depth_m: float | None = None,
                  max_depth_m: float | None = None, min_confidence: float = 0.0,
                  keep_engines: int | None = DEFAULT_KEEP_ENGINES) -> "TensorRTEngine":
        """Load the cached engine for this ONNX file, GPU and precision, or build and cache it.

        Args:
            onnx_path: exported model (``runtime/export.py``; its metadata gives shape and hash).
            precision: ``fp16`` (default) or ``fp32``.
            device: ``cuda`` / ``cuda:N`` (default ``cuda:0``).
            cache_dir: engine cache folder (default ``engines/cache``).
            rebuild: rebuild a corrupt/mismatched cached engine (True) or raise ``EngineFileError``.
            workspace_bytes: builder workspace limit.
            min_depth_m, max_depth_m, min_confidence: masking thresholds.
            keep_engines: after a build, keep the newest this many engines of the model (None: all).

        Raises:
            BackendUnavailableError: tensorrt missing or older than 8.6, or no CUDA GPU.
            CheckpointError: the ONNX file is missing or unreadable.
            EngineFileError: unusable cached engine with ``rebuild=False``; no execution context (GPU
                memory).
            MonotherError: the build failed.
        """
        from monother_ros.errors import CheckpointError
        from monother_ros.runtime.selection import probe_tensorrt

        ok, reason = probe_tensorrt()
        if not ok:
            raise BackendUnavailableError(f"backend tensorrt is unavailable: {reason}")
        import tensorrt as trt
        import torch

        from monother_ros.runtime.device import resolve_device

        if precision not in ("fp16", "fp32"):
            raise ConfigError(f"precision must be fp16 or fp32, got {precision!r}")
        name = resolve_device(device or "cuda")
        if name == "cpu":
            raise ConfigError(f"TensorRT runs on a CUDA device, not {device!r}")
        dev = torch.device(name)
        meta = read_onnx_info(onnx_path)
        try:
            onnx_sha = file_sha256(onnx_path)
        except OSError as exc:
            raise CheckpointError(f"cannot read {onnx_path}: {exc}") from exc
        props = torch.cuda.get_device_properties(dev)
        key = engine_cache_key(trt, gpu_name=str(props.name), compute_capability=(props.major, props.minor),
                               sm_count=int(props.multi_processor_count), total_memory_bytes=int(props.total_memory),
                               meta=meta, onnx_sha256=onnx_sha, precision=precision,
                               workspace_bytes=workspace_bytes)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        engine_file, sidecar_file = engine_paths(cache, meta.model_name, key)
        device_tag = hashlib.sha256(f"{key.tensorrt_version}|{key.gpu_name}|{key.compute_capability}|"
                                    f"{key.sm_count}|{key.total_memory_bytes}".encode())
        timing_cache = cache / f"timing-{device_tag.hexdigest()[:16]}.cache"

        with torch.cuda.device(dev):
            torch.cuda.init()  # TensorRT uses the current CUDA context: make sure torch created it
            runtime = trt.Runtime(_trt_logger())

            def build() -> bytes:
                _logger.info("building TensorRT %s engine for %s at %dx%d (minutes on a Jetson)", precision,
                             meta.model_name, *meta.input_hw)
                return build_serialized_engine(onnx_path, precision, workspace_bytes=workspace_bytes,
                                               timing_cache=timing_cache, work_dir=cache)

            engine, built = load_or_build(engine_file, sidecar_file, key, deserialize=runtime.deserialize_cuda_engine,
                                          build=build, rebuild=rebuild, keep=keep_engines,
                                          model_name=meta.model_name)
        try:
            instance = cls(engine, runtime, meta, precision=precision, device=dev, min_depth_m=min_depth_m,
                           max_depth_m=max_depth_m, min_confidence=min_confidence)
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineFileError(f"not enough GPU memory on {dev} for the TensorRT engine's buffers: {exc}") from exc
        instance.engine_file = engine_file
        instance.built = built
        _logger.info("TensorRT engine %s (%s)", engine_file, "built" if built else "from cache")
        return instance

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        if x is not self._input:
            np.copyto(self._input, x)
        stream = self._stream
        with torch.cuda.device(self._device), torch.cuda.stream(stream):
            self._dev[INPUT_NAME].copy_(self._host_in, non_blocking=True)
            if self._use_v3:
                ok = self._context.execute_async_v3(stream.cuda_stream)
            else:
                ok = self._context.execute_async_v2(self._bindings, stream.cuda_stream)
            if not ok:
                raise MonotherError("TensorRT execution failed (see the TensorRT log)")
            for name, host in self._host_out.items():
                host.copy_(self._dev[name], non_blocking=True)  # casts fp16 outputs, if any, to fp32
        stream.synchronize()
        depth = self._host_out[OUTPUT_DEPTH].numpy()
        conf = self._host_out[OUTPUT_CONFIDENCE].numpy() if OUTPUT_CONFIDENCE in self._host_out else None
        return depth, conf

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_stream", None) is not None:
                self._stream.synchronize()
            # Destroy in dependency order: context, engine, then runtime; buffers after the context.
            self._context = None
            self._engine = None
            self._runtime = None
            self._dev = {}

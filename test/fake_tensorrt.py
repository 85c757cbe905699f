"""Fake ``tensorrt`` modules whose attribute sets are those of the real Python bindings, per release.

The member lists below were read from NVIDIA's TensorRT repository (``python/src/infer/pyCore.cpp``,
``pyGraph.cpp``, ``pyFoundationalTypes.cpp``, ``python/src/parsers/pyOnnx.cpp``) at tag ``v8.6.1``,
branch ``release/10.3`` (JetPack 6's TensorRT) and tag ``v11.1``. Only the classes the package touches
are modelled, each with its complete public member list for that release: an attribute the release
does not have raises ``AttributeError`` exactly as the real bindings would, so code that still uses
e.g. ``BuilderFlag.FP16`` or ``ILayer.precision`` on TensorRT 11 fails a test here.

Behaviour is minimal and recorded (``fake.calls``) for the tests to assert on: the parser reads the
ONNX file it is given (so tests can inspect what TensorRT would parse), the builder returns bytes.
"""
from __future__ import annotations

import types
from typing import Any

# ---------------------------------------------------------------------- facts per release
_BUILDER_FLAG = {
    "8.6": "FP16 INT8 DEBUG GPU_FALLBACK STRICT_TYPES REFIT DISABLE_TIMING_CACHE TF32 SPARSE_WEIGHTS SAFETY_SCOPE "
           "OBEY_PRECISION_CONSTRAINTS PREFER_PRECISION_CONSTRAINTS DIRECT_IO REJECT_EMPTY_ALGORITHMS "
           "ENABLE_TACTIC_HEURISTIC VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME FP8",
    "10": "FP16 BF16 INT8 DEBUG GPU_FALLBACK REFIT DISABLE_TIMING_CACHE TF32 SPARSE_WEIGHTS SAFETY_SCOPE "
          "OBEY_PRECISION_CONSTRAINTS PREFER_PRECISION_CONSTRAINTS DIRECT_IO REJECT_EMPTY_ALGORITHMS "
          "VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME FP8 ERROR_ON_TIMING_CACHE_MISS DISABLE_COMPILATION_CACHE "
          "WEIGHTLESS STRIP_PLAN REFIT_IDENTICAL WEIGHT_STREAMING INT4 REFIT_INDIVIDUAL",
    "11": "DEBUG GPU_FALLBACK REFIT DISABLE_TIMING_CACHE EDITABLE_TIMING_CACHE TF32 SPARSE_WEIGHTS SAFETY_SCOPE "
          "DIRECT_IO VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME ERROR_ON_TIMING_CACHE_MISS DISABLE_COMPILATION_CACHE "
          "STRIP_PLAN REFIT_IDENTICAL WEIGHT_STREAMING REFIT_INDIVIDUAL STRICT_NANS MONITOR_MEMORY "
          "DISTRIBUTIVE_INDEPENDENCE",
}
# NetworkDefinitionCreationFlag: name -> value (NvInfer.h); 11 made STRONGLY_TYPED 0, deprecated and ignored.
_CREATION_FLAG = {
    "8.6": {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
    "10": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
    "11": {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
}
_ILAYER = {
    "8.6": "name metadata type num_inputs num_outputs precision precision_is_set reset_precision set_input "
           "get_input get_output set_output_type get_output_type output_type_is_set reset_output_type",
    "10": "name metadata type num_inputs num_outputs precision precision_is_set reset_precision set_input "
          "get_input get_output set_output_type get_output_type output_type_is_set reset_output_type",
    "11": "name metadata num_ranks type num_inputs num_outputs set_input get_input get_output get_output_type",
}
_ITENSOR = {
    "8.6": "allowed_formats broadcast_across_batch dtype dynamic_range get_dimension_name is_execution_tensor "
           "is_network_input is_network_output is_shape_tensor location name reset_dynamic_range "
           "set_dimension_name set_dynamic_range shape",
    "11": "allowed_formats broadcast_across_batch dtype get_dimension_name is_execution_tensor is_network_input "
          "is_network_output is_shape_tensor location name set_dimension_name shape",
}
_ITENSOR["10"] = _ITENSOR["8.6"]
_BUILDER_CONFIG = {
    "8.6": "DLA_core add_optimization_profile algorithm_selector avg_timing_iterations builder_optimization_level "
           "can_run_on_DLA clear_flag clear_quantization_flag create_timing_cache default_device_type "
           "engine_capability flags get_calibration_profile get_device_type get_flag get_memory_pool_limit "
           "get_preview_feature get_quantization_flag get_tactic_sources get_timing_cache "
           "hardware_compatibility_level int8_calibrator is_device_type_set max_aux_streams max_workspace_size "
           "min_timing_iterations num_optimization_profiles plugins_to_serialize profile_stream "
           "profiling_verbosity quantization_flags reset reset_device_type set_calibration_profile "
           "set_device_type set_flag set_memory_pool_limit set_preview_feature set_quantization_flag "
           "set_tactic_sources set_timing_cache",
    "10": "DLA_core add_optimization_profile algorithm_selector avg_timing_iterations builder_optimization_level "
          "can_run_on_DLA clear_flag clear_quantization_flag create_timing_cache default_device_type "
          "engine_capability flags get_calibration_profile get_device_type get_flag get_memory_pool_limit "
          "get_preview_feature get_quantization_flag get_tactic_sources get_timing_cache "
          "hardware_compatibility_level int8_calibrator is_device_type_set max_aux_streams "
          "num_optimization_profiles plugins_to_serialize profile_stream profiling_verbosity progress_monitor "
          "quantization_flags reset reset_device_type runtime_platform set_calibration_profile set_device_type "
          "set_flag set_memory_pool_limit set_preview_feature set_quantization_flag set_tactic_sources "
          "set_timing_cache",
    "11": "DLA_core add_optimization_profile all_build_routes avg_timing_iterations build_route "
          "builder_optimization_level can_run_on_DLA clear_flag create_timing_cache default_device_type "
          "engine_capability flags get_device_type get_flag get_memory_pool_limit get_preview_feature "
          "get_tactic_sources get_timing_cache hardware_compatibility_level is_device_type_set l2_limit_for_tiling "
          "max_aux_streams max_num_tactics num_optimization_profiles plugins_to_serialize profile_stream "
          "profiling_verbosity progress_monitor remote_auto_tuning_config reset reset_device_type "
          "runtime_platform set_device_type set_flag set_memory_pool_limit set_preview_feature "
          "set_tactic_sources set_timing_cache tiling_optimization_level",
}
_BUILDER = {
    "8.6": "build_engine build_serialized_network create_builder_config create_network create_optimization_profile "
           "error_recorder get_plugin_registry gpu_allocator is_network_supported logger max_DLA_batch_size "
           "max_batch_size max_threads num_DLA_cores platform_has_fast_fp16 platform_has_fast_int8 "
           "platform_has_tf32 reset",
    "10": "build_serialized_network create_builder_config create_network create_optimization_profile error_recorder "
          "get_plugin_registry gpu_allocator is_network_supported logger max_DLA_batch_size max_threads "
          "num_DLA_cores platform_has_fast_fp16 platform_has_fast_int8 platform_has_tf32 reset",
    "11": "build_engine_with_config build_serialized_network build_serialized_network_to_stream "
          "create_builder_config create_network create_optimization_profile error_recorder get_plugin_registry "
          "gpu_allocator is_network_supported logger max_DLA_batch_size max_threads num_DLA_cores reset",
}
_NETWORK = "num_layers num_inputs num_outputs get_layer get_input get_output name"  # same in all three
_ONNX_PARSER = {
    "8.6": "clear_errors clear_flag flags get_error get_flag get_used_vc_plugin_libraries num_errors parse "
           "parse_from_file parse_with_weight_descriptors set_flag supports_model supports_operator",
    "10": "clear_errors clear_flag flags get_error get_flag get_layer_output_tensor get_subgraph_nodes "
          "get_used_vc_plugin_libraries is_subgraph_supported num_errors num_subgraphs parse parse_from_file "
          "parse_with_weight_descriptors set_flag supports_model supports_model_v2 supports_operator",
    "11": "clear_errors clear_flag flags get_error get_flag get_layer_output_tensor get_subgraph_nodes "
          "get_used_vc_plugin_libraries is_subgraph_supported load_initializer load_model_proto num_errors "
          "num_subgraphs parse parse_from_file parse_model_proto set_builder_config set_flag supports_model_v2 "
          "supports_operator",
}
_LAYER_TYPES = {
    "8.6": "CONVOLUTION FULLY_CONNECTED ACTIVATION POOLING LRN SCALE SOFTMAX DECONVOLUTION CONCATENATION "
           "ELEMENTWISE PLUGIN UNARY PADDING SHUFFLE REDUCE TOPK GATHER MATRIX_MULTIPLY RAGGED_SOFTMAX CONSTANT "
           "RNN_V2 IDENTITY PLUGIN_V2 SLICE SHAPE PARAMETRIC_RELU RESIZE TRIP_LIMIT RECURRENCE ITERATOR "
           "LOOP_OUTPUT SELECT FILL QUANTIZE DEQUANTIZE CONDITION CONDITIONAL_INPUT CONDITIONAL_OUTPUT SCATTER "
           "EINSUM ASSERTION ONE_HOT NON_ZERO GRID_SAMPLE NMS REVERSE_SEQUENCE NORMALIZATION CAST",
    "10": "CONVOLUTION GRID_SAMPLE NMS ACTIVATION POOLING LRN SCALE SOFTMAX DECONVOLUTION CONCATENATION "
          "ELEMENTWISE PLUGIN UNARY PADDING SHUFFLE REDUCE TOPK GATHER MATRIX_MULTIPLY RAGGED_SOFTMAX CONSTANT "
          "IDENTITY CAST PLUGIN_V2 SLICE SHAPE PARAMETRIC_RELU RESIZE TRIP_LIMIT RECURRENCE ITERATOR LOOP_OUTPUT "
          "SELECT ASSERTION FILL QUANTIZE DEQUANTIZE CONDITION CONDITIONAL_INPUT CONDITIONAL_OUTPUT SCATTER "
          "EINSUM ONE_HOT NON_ZERO REVERSE_SEQUENCE NORMALIZATION PLUGIN_V3",
}
_LAYER_TYPES["11"] = _LAYER_TYPES["10"] + (" SQUEEZE UNSQUEEZE CUMULATIVE DYNAMIC_QUANTIZE ATTENTION_INPUT "
                                           "ATTENTION_OUTPUT ROTARY_EMBEDDING KV_CACHE_UPDATE MOE DIST_COLLECTIVE")
_DATA_TYPES = {  # module-level DataType aliases (m.attr)
    "8.6": "float32 float16 int8 int32 bool uint8 fp8",
    "10": "float32 float16 bfloat16 int8 int32 int64 bool uint8 fp8 int4",
    "11": "float32 float16 bfloat16 int8 int32 int64 bool uint8 fp8 int4 fp4 e8m0",
}
_CLASSES = {  # other classes present in every one of the three (names only)
    "8.6": "Runtime Refitter",
    "10": "Runtime Refitter",
    "11": "Runtime Refitter",
}
_MEMORY_POOL = {
    "8.6": "WORKSPACE DLA_MANAGED_SRAM DLA_LOCAL_DRAM DLA_GLOBAL_DRAM TACTIC_DRAM",
    "10": "WORKSPACE DLA_MANAGED_SRAM DLA_LOCAL_DRAM DLA_GLOBAL_DRAM TACTIC_DRAM TACTIC_SHARED_MEMORY",
}
_MEMORY_POOL["11"] = _MEMORY_POOL["10"]

RELEASES = {"8.6": "8.6.1.6", "10": "10.3.0.30", "11": "11.1.0.4"}


def _enum(name: str, members: dict[str, int] | str) -> Any:
    if isinstance(members, str):
        members = {m: i for i, m in enumerate(members.split())}
    return types.SimpleNamespace(**members, __name__=name)


class _Strict:
    """Public attributes limited to the release's member list (``_allowed``); the rest raise."""

    _allowed: frozenset[str] = frozenset()
    _release = "?"

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}' "
                                 f"(TensorRT {type(self)._release})")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}' "
                                 f"(TensorRT {type(self)._release})")
        object.__setattr__(self, name, value)


def make_fake_tensorrt(release: str = "10", *, version: str | None = None, layers: tuple[str, ...] = (),
                       parse_ok: bool = True, build_ok: bool = True) -> types.ModuleType:
    """A fake ``tensorrt`` module for ``release`` ``"8.6"``, ``"10"`` or ``"11"``.

    Args:
        release: which attribute sets to use.
        version: ``__version__`` (default the release's, e.g. ``"10.3.0.30"``); an 8.5 version string
            with the 8.6 attribute set models JetPack 5 for the version probe.
        layers: LayerType names of the parsed network's layers (float32 outputs); default a ViT-like mix.
        parse_ok, build_ok: make the parser / builder fail.

    Returns:
        The module; ``module.calls`` records flags, parsed files, pinned layers and builds.
    """
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version or RELEASES[release]
    calls: dict[str, Any] = {"parsed": [], "set_flags": [], "builds": 0}
    mod.calls = calls
    for dt in _DATA_TYPES[release].split():
        setattr(mod, dt, f"DataType.{dt}")
    mod.BuilderFlag = _enum("BuilderFlag", _BUILDER_FLAG[release])
    mod.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", _CREATION_FLAG[release])
    mod.LayerType = _enum("LayerType", _LAYER_TYPES[release])
    mod.MemoryPoolType = _enum("MemoryPoolType", _MEMORY_POOL[release])
    mod.TensorIOMode = _enum("TensorIOMode", "NONE INPUT OUTPUT")
    for name in _CLASSES[release].split():
        setattr(mod, name, type(name, (), {}))
    layer_kinds = layers or ("CONVOLUTION", "SHUFFLE", "NORMALIZATION", "MATRIX_MULTIPLY", "ELEMENTWISE",
                             "SOFTMAX", "MATRIX_MULTIPLY", "ACTIVATION", "ELEMENTWISE", "RESIZE")

    def strict(name: str, members: str) -> type:
        return type(name, (_Strict,), {"_allowed": frozenset(members.split()), "_release": mod.__version__})

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity: int = 2) -> None:
            self.min_severity = min_severity

    mod.Logger = Logger
    Tensor = strict("ITensor", _ITENSOR[release])
    Layer = strict("ILayer", _ILAYER[release])
    Network = strict("INetworkDefinition", _NETWORK)
    Config = strict("IBuilderConfig", _BUILDER_CONFIG[release])
    Parser = strict("OnnxParser", _ONNX_PARSER[release])
    Builder = strict("Builder", _BUILDER[release])

    def make_layer(kind: str) -> Any:
        layer = Layer()
        object.__setattr__(layer, "_kind", getattr(mod.LayerType, kind))
        object.__setattr__(layer, "_out_types", {})
        tensor = Tensor()
        object.__setattr__(tensor, "_dtype", mod.float32)
        object.__setattr__(layer, "_outputs", [tensor])
        object.__setattr__(layer, "_precision", None)
        return layer

    Tensor.dtype = property(lambda self: self._dtype)
    Layer.type = property(lambda self: self._kind)
    Layer.num_outputs = property(lambda self: len(self._outputs))
    Layer.get_output = lambda self, i: self._outputs[i]
    Layer.name = property(lambda self: f"layer{id(self)}")
    if "precision" in Layer._allowed:
        def set_precision(self: Any, value: Any) -> None:
            object.__setattr__(self, "_precision", value)
        Layer.precision = property(lambda self: self._precision, set_precision)
        Layer.set_output_type = lambda self, i, t: self._out_types.__setitem__(i, t)

    def network_init(self: Any) -> None:
        object.__setattr__(self, "_layers", [make_layer(k) for k in layer_kinds])

    Network.__init__ = network_init
    Network.num_layers = property(lambda self: len(self._layers))
    Network.get_layer = lambda self, i: self._layers[i]

    def config_init(self: Any) -> None:
        object.__setattr__(self, "_flags", set())
        object.__setattr__(self, "_cache", None)

    Config.__init__ = config_init
    Config.set_memory_pool_limit = lambda self, pool, size: calls.__setitem__("workspace", (pool, size))

    def set_flag(self: Any, flag: Any) -> None:
        self._flags.add(flag)
        calls["set_flags"].append(flag)

    Config.set_flag = set_flag

    def create_timing_cache(self: Any, data: bytes) -> dict:
        calls["timing_in"] = bytes(data)
        return {"data": bytes(data)}

    def set_timing_cache(self: Any, cache: dict, ignore_mismatch: bool) -> bool:
        object.__setattr__(self, "_cache", cache)
        calls["ignore_mismatch"] = ignore_mismatch
        return True

    Config.create_timing_cache = create_timing_cache
    Config.set_timing_cache = set_timing_cache
    Config.get_timing_cache = lambda self: types.SimpleNamespace(serialize=lambda: b"TIMING" + self._cache["data"])

    def parser_init(self: Any, network: Any, logger: Any) -> None:
        object.__setattr__(self, "_network", network)

    def parse_from_file(self: Any, path: str) -> bool:
        calls["parsed"].append(path)
        return parse_ok

    Parser.__init__ = parser_init
    Parser.parse_from_file = parse_from_file
    Parser.num_errors = property(lambda self: 0 if parse_ok else 1)
    Parser.get_error = lambda self, i: "In node 12 (LayerNormalization): unsupported operator"

    def builder_init(self: Any, logger: Any) -> None:
        pass

    def create_network(self: Any, flags: int = 0) -> Any:
        calls["network_flags"] = flags
        network = Network()
        calls["network"] = network
        return network

    def create_builder_config(self: Any) -> Any:
        config = Config()
        calls["config"] = config
        return config

    def build_serialized_network(self: Any, network: Any, config: Any) -> bytes | None:
        calls["builds"] += 1
        return b"SERIALIZED" if build_ok else None

    Builder.__init__ = builder_init
    Builder.create_network = create_network
    Builder.create_builder_config = create_builder_config
    Builder.build_serialized_network = build_serialized_network
    mod.Builder, mod.OnnxParser = Builder, Parser
    return mod

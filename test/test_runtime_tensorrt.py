"""TensorRT backend: build, infer, agree with ONNX Runtime, reuse the cache, rebuild corrupt engines.

The ``gpu`` tests run only where a CUDA GPU and the tensorrt package exist; elsewhere they are skipped
with the probe's reason. The cache-key and file checks they rely on are tested everywhere in
``test_runtime_cache.py``; the refusal without TensorRT is tested here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from monother_ros.errors import BackendUnavailableError, EngineFileError
from monother_ros.runtime import engine as E

_TRT_OK, _TRT_REASON = E._tensorrt_importable()
needs_trt = pytest.mark.skipif(not _TRT_OK, reason=f"TensorRT backend unavailable: {_TRT_REASON}")


@pytest.mark.skipif(_TRT_OK, reason="TensorRT is available here")
def test_tensorrt_refused_with_reason(tmp_path):
    with pytest.raises(BackendUnavailableError, match="backend tensorrt is unavailable"):
        E.make_backend(tmp_path, "tensorrt")


@pytest.mark.skipif(_TRT_OK, reason="TensorRT is available here")
def test_build_engine_command_fails_in_one_line(capsys, tmp_path):
    from monother_ros.cli import main

    rc = main(["build-engine", "--model", str(tmp_path), "--input-size", "56x70", "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    assert err[0].startswith("monother build-engine: error: backend tensorrt is unavailable")


@pytest.fixture(scope="module")
def trt_model(tmp_path_factory):
    import torch

    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.checkpoints import save_model
    from monother_ros.model.variants import get_preset
    from monother_ros.runtime.export import resolve_onnx

    root = tmp_path_factory.mktemp("trt")
    config = get_preset("test-tiny")
    torch.manual_seed(0)
    model_dir = save_model(DepthBranch(config).eval(), config, root / "tiny")
    cache = root / "cache"
    onnx_path = resolve_onnx(model_dir, None, cache)
    return {"dir": model_dir, "cache": cache, "onnx": onnx_path, "config": config}


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_build_infer_and_match_onnxruntime(trt_model, precision, tol):
    from monother_ros.runtime.onnx_engine import OnnxEngine
    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    trt_engine = TensorRTEngine.from_onnx(trt_model["onnx"], precision=precision, cache_dir=trt_model["cache"])
    ort_engine = OnnxEngine(trt_model["onnx"], num_threads=1)
    info = trt_engine.info
    assert info.backend == "tensorrt" and info.precision == precision
    assert info.input_hw == tuple(trt_model["config"].input_size) and info.has_confidence
    assert info.model_hash == ort_engine.info.model_hash
    h, w = info.input_hw
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    d_trt, c_trt = trt_engine.infer_tensor(x)
    d_ort, c_ort = ort_engine.infer_tensor(x)
    assert d_trt.shape == (1, 1, h, w) and d_trt.dtype == np.float32
    assert _rel(d_trt, d_ort) < tol and float(np.max(np.abs(c_trt - c_ort))) < tol
    img = (np.random.default_rng(1).random((61, 83)) * 40000 + 10000).astype(np.uint16)
    r_trt, r_ort = trt_engine.infer(img), ort_engine.infer(img)
    assert r_trt.depth.shape == (61, 83)
    both = ~np.isnan(r_trt.depth) & ~np.isnan(r_ort.depth)
    assert both.mean() > 0.99
    assert float(np.max(np.abs(r_trt.depth[both] - r_ort.depth[both]) / r_ort.depth[both])) < 5 * tol
    trt_engine.close()


@pytest.mark.gpu
@needs_trt
def test_cache_reuse_and_corrupt_rebuild(trt_model):
    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    kwargs = dict(precision="fp16", cache_dir=trt_model["cache"])
    first = TensorRTEngine.from_onnx(trt_model["onnx"], **kwargs)
    engine_file = first.engine_file
    x = np.zeros((1, 3, *first.info.input_hw), np.float32)
    ref = first.infer_tensor(x)[0]
    first.close()
    again = TensorRTEngine.from_onnx(trt_model["onnx"], **kwargs)
    assert again.engine_file == engine_file and not again.built  # reused
    np.testing.assert_array_equal(again.infer_tensor(x)[0], ref)
    again.close()
    sidecar = json.loads(engine_file.with_suffix(".json").read_text())
    assert sidecar["key"]["precision"] == "fp16" and sidecar["key"]["input_shape"] == [1, 3, *first.info.input_hw]

    data = bytearray(engine_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine_file.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="corrupt"):
        TensorRTEngine.from_onnx(trt_model["onnx"], rebuild=False, **kwargs)
    rebuilt = TensorRTEngine.from_onnx(trt_model["onnx"], **kwargs)
    assert rebuilt.built and rebuilt.engine_file == engine_file
    np.testing.assert_allclose(rebuilt.infer_tensor(x)[0], ref, rtol=2e-2)
    rebuilt.close()


@pytest.mark.gpu
@needs_trt
def test_make_backend_auto_uses_tensorrt(trt_model):
    engine = E.make_backend(trt_model["dir"], "auto", cache_dir=trt_model["cache"])
    assert engine.info.backend == "tensorrt" and engine.info.precision == "fp16"
    r = engine.infer(np.full((40, 50), 30000, np.uint16))
    assert r.depth.shape == (40, 50)
    engine.close()


@pytest.mark.gpu
@needs_trt
def test_build_engine_command(trt_model, capsys):
    from monother_ros.cli import main

    rc = main(["build-engine", "--model", str(trt_model["dir"]), "--input-size", "56x70",
               "--precision", "fp32", "--cache-dir", str(trt_model["cache"])])
    out = capsys.readouterr().out
    assert rc == 0 and ".engine" in out


# ---------------------------------------------------------------------- TensorRT-free checks of the glue
class _FakeTRT:
    """The slice of the tensorrt module the builder and I/O code use, recording what is called."""

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class NetworkDefinitionCreationFlag:
        EXPLICIT_BATCH = 0

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "fp16"
        OBEY_PRECISION_CONSTRAINTS = "obey"

    class LayerType:
        CONVOLUTION = "conv"
        NORMALIZATION = "norm"
        SOFTMAX = "softmax"

    class TensorIOMode:
        INPUT = "in"
        OUTPUT = "out"

    float32, float16, int32, int8, bool = "f32", "f16", "i32", "i8", "bool"

    def __init__(self, parse_ok=True, build_ok=True, version="10.3.0"):
        self.parse_ok, self.build_ok, self.__version__ = parse_ok, build_ok, version
        self.calls = {}
        fake = self

        class Layer:
            def __init__(self, kind):
                self.type, self.precision, self.num_outputs, self.out_types = kind, None, 1, {}

            def set_output_type(self, i, t):
                self.out_types[i] = t

        class Network:
            def __init__(self):
                self.layers = [Layer(k) for k in ("conv", "norm", "softmax", "conv", "norm")]
                self.num_layers = len(self.layers)

            def get_layer(self, i):
                return self.layers[i]

        class Config:
            def __init__(self):
                self.flags, self.cache = set(), None

            def set_memory_pool_limit(self, pool, size):
                fake.calls["workspace"] = (pool, size)

            def set_flag(self, flag):
                self.flags.add(flag)

            def create_timing_cache(self, data):
                fake.calls["timing_in"] = data
                return {"data": data}

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                fake.calls["ignore_mismatch"] = ignore_mismatch
                return True

            def get_timing_cache(self):
                return type("C", (), {"serialize": lambda s: b"TIMING" + self.cache["data"]})()

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls["network_flags"] = flags
                fake.network = Network()
                return fake.network

            def create_builder_config(self):
                fake.config = Config()
                return fake.config

            def build_serialized_network(self, network, config):
                return b"SERIALIZED" if fake.build_ok else None

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls["parsed"] = path
                return fake.parse_ok

            def get_error(self, i):
                return "unsupported op Foo"

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_builder_glue_fp16_pins_norm_and_softmax(monkeypatch, tmp_path):
    import sys

    from monother_ros.runtime import tensorrt_engine as T

    fake = _FakeTRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    timing = tmp_path / "timing.cache"
    data = T.build_serialized_engine(tmp_path / "m.onnx", "fp16", workspace_bytes=123, timing_cache=timing)
    assert data == b"SERIALIZED"
    assert fake.calls["network_flags"] == 1  # explicit batch
    assert fake.calls["workspace"] == ("workspace", 123)
    assert fake.config.flags == {"fp16", "obey"}
    pinned = [(l.type, l.precision, l.out_types) for l in fake.network.layers]
    assert pinned == [("conv", None, {}), ("norm", "f32", {0: "f32"}), ("softmax", "f32", {0: "f32"}),
                      ("conv", None, {}), ("norm", "f32", {0: "f32"})]
    assert fake.calls["timing_in"] == b"" and fake.calls["ignore_mismatch"] is True
    assert timing.read_bytes() == b"TIMING"
    # second build starts from the saved timing cache
    T.build_serialized_engine(tmp_path / "m.onnx", "fp32", timing_cache=timing)
    assert fake.calls["timing_in"] == b"TIMING" and fake.config.flags == set()
    assert all(l.precision is None for l in fake.network.layers)


def test_builder_glue_errors(monkeypatch, tmp_path):
    import sys

    from monother_ros.errors import MonotherError
    from monother_ros.runtime import tensorrt_engine as T

    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTRT(parse_ok=False))
    with pytest.raises(MonotherError, match="cannot parse .*unsupported op Foo$"):
        T.build_serialized_engine(tmp_path / "m.onnx", "fp16")
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTRT(parse_ok=False, version="8.5.2.2"))
    with pytest.raises(MonotherError, match=r"unsupported op Foo \(TensorRT 8.5.2.2: >= 8.6 is needed"):
        T.build_serialized_engine(tmp_path / "m.onnx", "fp16")
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTRT(build_ok=False))
    with pytest.raises(MonotherError, match="failed to build"):
        T.build_serialized_engine(tmp_path / "m.onnx", "fp16")


def test_io_tensor_discovery_both_apis():
    """Named-tensor API (TensorRT >= 8.5, 10) and bindings API (older) give the same table."""
    import types

    import torch

    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    trt = _FakeTRT()
    spec = [("thermal", True, (1, 3, 56, 70)), ("depth", False, (1, 1, 56, 70)), ("confidence", False, (1, 1, 56, 70))]

    class V3:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return spec[i][0]

        def get_tensor_mode(self, name):
            return "in" if dict((n, i) for n, i, _ in spec)[name] else "out"

        def get_tensor_shape(self, name):
            return list(dict((n, s) for n, _, s in spec)[name])

        def get_tensor_dtype(self, name):
            return "f32"

    class V2:
        num_bindings = 3

        def get_binding_name(self, i):
            return spec[i][0]

        def binding_is_input(self, i):
            return spec[i][1]

        def get_binding_shape(self, i):
            return list(spec[i][2])

        def get_binding_dtype(self, i):
            return "f16" if i else "f32"

    expect = {n: (i, s, torch.float32) for n, i, s in spec}
    assert TensorRTEngine._io_tensors(types.SimpleNamespace(_engine=V3()), trt) == expect
    v2 = TensorRTEngine._io_tensors(types.SimpleNamespace(_engine=V2()), trt)
    assert v2["thermal"] == expect["thermal"] and v2["depth"][2] == torch.float16

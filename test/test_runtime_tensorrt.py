"""TensorRT backend: build, infer, agree with ONNX Runtime, reuse the cache, rebuild corrupt engines.

The ``gpu`` tests run only where a CUDA GPU and the tensorrt package exist; elsewhere they are skipped
with the probe's reason. The cache-key and file checks they rely on are tested everywhere in
``test_runtime_cache.py``; the refusal without TensorRT is tested here.
"""
from __future__ import annotations

import json
from pathlib import Path

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
# Fakes with each release's real attribute sets (test/fake_tensorrt.py): 8.6, 10.x (JetPack 6), 11.x.
from fake_tensorrt import make_fake_tensorrt  # noqa: E402

_WEAK_PINNED = {"NORMALIZATION", "ELEMENTWISE", "SOFTMAX", "ACTIVATION"}  # of the fake's default layers


def _layer_names(fake, layers):
    names = {getattr(fake.LayerType, n): n for n in vars(fake.LayerType) if not n.startswith("_")}
    return [names[layer.type] for layer in layers]


def test_fake_releases_have_the_real_api_differences():
    """The facts the build paths depend on (a removed attribute raises, as in the real bindings)."""
    for release in ("8.6", "10"):
        fake = make_fake_tensorrt(release)
        assert hasattr(fake.BuilderFlag, "FP16") and hasattr(fake.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")
        layer = fake.Builder(None).create_network(0).get_layer(0)
        layer.precision = fake.float32
        layer.set_output_type(0, fake.float32)
    fake11 = make_fake_tensorrt("11")
    for gone in ("FP16", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "STRICT_TYPES"):
        assert not hasattr(fake11.BuilderFlag, gone)
    assert not hasattr(fake11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert fake11.NetworkDefinitionCreationFlag.STRONGLY_TYPED == 0
    assert make_fake_tensorrt("10").NetworkDefinitionCreationFlag.STRONGLY_TYPED == 1
    assert not hasattr(make_fake_tensorrt("8.6").NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    layer = fake11.Builder(None).create_network(0).get_layer(0)
    with pytest.raises(AttributeError):
        layer.precision = fake11.float32
    with pytest.raises(AttributeError):
        layer.set_output_type(0, fake11.float32)
    for release in ("8.6", "10", "11"):
        assert hasattr(make_fake_tensorrt(release), "Refitter")


def test_network_typing_by_attributes():
    from monother_ros.runtime import tensorrt_engine as T

    assert T.network_typing(make_fake_tensorrt("8.6")) == "weak"
    assert T.network_typing(make_fake_tensorrt("10")) == "weak"
    assert T.network_typing(make_fake_tensorrt("11")) == "strong"
    assert T.builder_settings(make_fake_tensorrt("10"), 1 << 30) != T.builder_settings(make_fake_tensorrt("11"), 1 << 30)


def test_weak_pinning_on_tensorrt_11_fails_loudly():
    """The weakly typed code path cannot run on 11 unnoticed: the fake raises like the real bindings."""
    from monother_ros.runtime import tensorrt_engine as T

    fake = make_fake_tensorrt("11")
    network = fake.Builder(None).create_network(0)
    with pytest.raises(AttributeError, match="precision"):
        T._keep_fp32(network, fake)


@pytest.mark.parametrize("release", ["8.6", "10", "11"])
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_per_release(monkeypatch, tmp_path, trt_model, release, precision):
    import sys

    import onnx

    from monother_ros.runtime import tensorrt_engine as T

    fake = make_fake_tensorrt(release)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    timing = tmp_path / "timing.cache"
    data = T.build_serialized_engine(trt_model["onnx"], precision, workspace_bytes=123, timing_cache=timing,
                                     work_dir=tmp_path)
    assert data == b"SERIALIZED" and fake.calls["builds"] == 1
    assert fake.calls["workspace"] == (fake.MemoryPoolType.WORKSPACE, 123)
    assert timing.read_bytes() == b"TIMING" and fake.calls["ignore_mismatch"] is True
    # 8.6 needs EXPLICIT_BATCH (bit 0); 10 ignores it (not passed); 11 is always strongly typed (no flag).
    assert fake.calls["network_flags"] == (1 if release == "8.6" else 0)
    layers = fake.calls["network"]._layers
    parsed = fake.calls["parsed"][0]
    if precision == "fp32":
        assert fake.calls["set_flags"] == [] and parsed == str(trt_model["onnx"])
    elif release in ("8.6", "10"):
        assert set(fake.calls["set_flags"]) == {fake.BuilderFlag.FP16, fake.BuilderFlag.OBEY_PRECISION_CONSTRAINTS}
        pinned = {n for n, layer in zip(_layer_names(fake, layers), layers) if layer.precision == fake.float32}
        assert pinned == _WEAK_PINNED
        assert all(layer._out_types == ({0: fake.float32} if layer.precision else {}) for layer in layers)
        assert parsed == str(trt_model["onnx"])  # the fp32 graph; the builder makes the fp16 choice
    else:
        assert fake.calls["set_flags"] == []
        assert parsed.endswith("fp16mixed.trt.onnx") and parsed.startswith(str(tmp_path))
        graph = onnx.load(parsed).graph
        half = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
        computes = [n for n in graph.node if n.op_type in ("MatMul", "Conv", "ConvTranspose", "Gemm")]
        assert computes and half
        assert all(any(i in half or i.endswith("__fp16") for i in n.input) for n in computes)
        norms = [n for n in graph.node if n.op_type in ("LayerNormalization", "Softmax")]
        assert norms and not any(i in half or i.endswith("__fp16") for n in norms for i in n.input)
        assert {o.name: o.type.tensor_type.elem_type for o in graph.output} == {
            "depth": onnx.TensorProto.FLOAT, "confidence": onnx.TensorProto.FLOAT}
        # reused, not rewritten, on the next build
        mtime = Path(parsed).stat().st_mtime_ns
        T.build_serialized_engine(trt_model["onnx"], precision, timing_cache=timing, work_dir=tmp_path)
        assert Path(parsed).stat().st_mtime_ns == mtime


def test_tensorrt_8_5_is_refused_by_the_probe(monkeypatch, tmp_path, trt_model):
    import sys

    from monother_ros.runtime import tensorrt_engine as T
    from monother_ros.runtime.selection import probe_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("8.6", version="8.5.2.2"))
    ok, reason = probe_tensorrt()
    assert not ok and "TensorRT 8.5.2.2 is too old: >= 8.6" in reason and "LayerNormalization" in reason
    with pytest.raises(BackendUnavailableError, match="backend tensorrt is unavailable: TensorRT 8.5.2.2 is too old"):
        E.make_backend(trt_model["dir"], "tensorrt", cache_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match="too old"):
        T.build_serialized_engine(trt_model["onnx"], "fp16", work_dir=tmp_path)
    # auto falls through to the next backend and says why
    engine = E.make_backend(trt_model["dir"], "auto", cache_dir=trt_model["cache"], num_threads=1)
    assert engine.info.backend in ("torch", "onnxruntime")
    assert "too old" in dict(engine.selection.skipped)["tensorrt"]
    engine.close()


@pytest.mark.skipif(_TRT_OK, reason="a CUDA torch exists here")
def test_tensorrt_without_cuda_torch_is_refused_with_what_to_install(monkeypatch, tmp_path, trt_model):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11"))
    with pytest.raises(BackendUnavailableError) as err:
        E.make_backend(trt_model["dir"], "tensorrt", cache_dir=tmp_path)
    text = str(err.value)
    assert "TensorRT 11.1.0.4 imports but its buffers need a CUDA-enabled torch" in text
    assert "NVIDIA's JetPack torch wheel" in text and "pycuda" not in text


def test_parser_and_builder_failures_are_clear(monkeypatch, tmp_path, trt_model):
    import sys

    from monother_ros.errors import MonotherError
    from monother_ros.runtime import tensorrt_engine as T

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10", parse_ok=False))
    with pytest.raises(MonotherError, match=r"TensorRT 10.3.0.30 cannot parse .*unsupported operator"):
        T.build_serialized_engine(trt_model["onnx"], "fp16", work_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11", build_ok=False))
    with pytest.raises(MonotherError, match="failed to build"):
        T.build_serialized_engine(trt_model["onnx"], "fp16", work_dir=tmp_path)
    assert not list(tmp_path.glob("*.engine"))


def test_cache_key_per_release_and_gpu(trt_model):
    from monother_ros.runtime.export import read_onnx_info
    from monother_ros.runtime.tensorrt_engine import engine_cache_key

    meta = read_onnx_info(trt_model["onnx"])
    gpu = dict(gpu_name="Orin", compute_capability=(8, 7), sm_count=16, total_memory_bytes=64 << 30)
    keys = {release: engine_cache_key(make_fake_tensorrt(release), meta=meta, onnx_sha256="0" * 64,
                                      precision="fp16", **gpu) for release in ("8.6", "10", "11")}
    assert len({k.digest() for k in keys.values()}) == 3
    assert keys["11"].builder_settings.startswith("recipe") and "strong" in keys["11"].builder_settings
    assert "weak" in keys["10"].builder_settings
    other_orin = engine_cache_key(make_fake_tensorrt("10"), meta=meta, onnx_sha256="0" * 64, precision="fp16",
                                  **{**gpu, "sm_count": 8, "total_memory_bytes": 16 << 30})
    assert other_orin.digest() != keys["10"].digest()


def test_prepare_onnx_bakes_the_position_embedding_of_an_old_export(tmp_path):
    """The shipped ONNX (exported before the bake) has a cubic Resize on the position embedding;
    what TensorRT parses has none and gives the same outputs."""
    import onnx
    import onnxruntime as ort

    from monother_ros.paths import default_model_dir
    from monother_ros.runtime.export import read_onnx_info
    from monother_ros.runtime.tensorrt_engine import prepare_onnx

    source = default_model_dir() / "model.onnx"
    cubic = [n for n in onnx.load(str(source)).graph.node if n.op_type == "Resize"
             and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute)]
    assert cubic, "the shipped export should still carry the cubic Resize this test removes"
    for precision, typing in (("fp32", "weak"), ("fp16", "strong")):
        parsed = prepare_onnx(source, precision, typing, tmp_path)
        assert parsed != source and parsed.parent == tmp_path
        graph = onnx.load(str(parsed)).graph
        assert not [n for n in graph.node if n.op_type == "Resize"
                    and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute)]
        h, w = read_onnx_info(source).input_hw
        x = np.random.default_rng(3).standard_normal((1, 3, h, w)).astype(np.float32)
        ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"thermal": x})
        got = ort.InferenceSession(str(parsed), providers=["CPUExecutionProvider"]).run(None, {"thermal": x})
        tol = 1e-5 if precision == "fp32" else 1e-2
        for r, g in zip(ref, got):
            assert _rel(g, r) < tol


def test_new_exports_have_no_resize_on_the_position_embedding(trt_model):
    import onnx

    graph = onnx.load(str(trt_model["onnx"])).graph
    modes = [a.s for n in graph.node if n.op_type == "Resize" for a in n.attribute if a.name == "mode"]
    assert b"cubic" not in modes and modes  # the DPT head's bilinear upsampling stays


def test_io_tensor_discovery_both_apis():
    """Named-tensor API (TensorRT >= 8.5, 10) and bindings API (older) give the same table."""
    import types

    import torch

    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    trt = make_fake_tensorrt("10")
    spec = [("thermal", True, (1, 3, 56, 70)), ("depth", False, (1, 1, 56, 70)), ("confidence", False, (1, 1, 56, 70))]

    class V3:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return spec[i][0]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if dict((n, i) for n, i, _ in spec)[name] else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return list(dict((n, s) for n, _, s in spec)[name])

        def get_tensor_dtype(self, name):
            return trt.float32

    class V2:
        num_bindings = 3

        def get_binding_name(self, i):
            return spec[i][0]

        def binding_is_input(self, i):
            return spec[i][1]

        def get_binding_shape(self, i):
            return list(spec[i][2])

        def get_binding_dtype(self, i):
            return trt.float16 if i else trt.float32

    expect = {n: (i, s, torch.float32) for n, i, s in spec}
    assert TensorRTEngine._io_tensors(types.SimpleNamespace(_engine=V3()), trt) == expect
    v2 = TensorRTEngine._io_tensors(types.SimpleNamespace(_engine=V2()), trt)
    assert v2["thermal"] == expect["thermal"] and v2["depth"][2] == torch.float16


# ---------------------------------------------------------------------- the fp16 decision, checked numerically
@pytest.fixture(scope="module")
def dav2s_onnx(tmp_path_factory):
    """A DAv2-S metric network at real width/depth (random weights) exported at 196x252, fp32 graph."""
    import onnx
    import torch

    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.variants import get_preset
    from monother_ros.runtime.export import export_onnx

    config = get_preset("dav2-metric-vits")
    torch.manual_seed(0)
    model = DepthBranch(config).eval()
    path = tmp_path_factory.mktemp("dav2s") / "dav2s.onnx"
    export_onnx(model, config, path, input_hw=(196, 252), verify=False)
    return onnx.load(str(path))


def _ort_outputs(proto, x):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"thermal": x})


@pytest.mark.slow
def test_mixed_fp16_matches_fp32_on_a_real_size_vit(dav2s_onnx):
    """The strongly typed fp16 graph (matmuls/convs in fp16, residual/LayerNorm/softmax in fp32) stays
    within 1e-2 of fp32 on DAv2-S; and when the residual stream carries a value past fp16's range (as
    DINOv2's high-norm channels can approach), it still does, while the all-fp16 graph overflows."""
    import onnx
    from onnx import numpy_helper

    from monother_ros.runtime.onnx_passes import all_fp16, mixed_fp16

    x = np.random.default_rng(0).standard_normal((1, 3, 196, 252)).astype(np.float32)
    ref = _ort_outputs(dav2s_onnx, x)[0]
    mixed = mixed_fp16(dav2s_onnx)
    types = {i.data_type for i in mixed.graph.initializer if i.name.endswith("__fp16")}
    assert types == {onnx.TensorProto.FLOAT16}
    got = _ort_outputs(mixed, x)[0]
    assert np.isfinite(got).all() and _rel(got, ref) < 1e-2

    outlier = onnx.ModelProto()
    outlier.CopyFrom(dav2s_onnx)
    # The class token (folded by the exporter into a (1, 1, 384) constant concatenated before the patches).
    concat_inputs = {i for n in outlier.graph.node if n.op_type == "Concat" for i in n.input}
    cls = next(i for i in outlier.graph.initializer if list(i.dims) == [1, 1, 384] and i.name in concat_inputs)
    value = numpy_helper.to_array(cls).copy()
    value[..., 7] = 7.0e4  # one residual channel of the class token beyond fp16's 65504
    cls.CopyFrom(numpy_helper.from_array(value, cls.name))
    ref_outlier = _ort_outputs(outlier, x)[0]
    assert np.isfinite(ref_outlier).all()
    got_outlier = _ort_outputs(mixed_fp16(outlier), x)[0]
    assert np.isfinite(got_outlier).all() and _rel(got_outlier, ref_outlier) < 1e-2
    naive = _ort_outputs(all_fp16(outlier), x)[0]
    assert not np.isfinite(naive).all() or _rel(naive.astype(np.float32), ref_outlier) > 0.1

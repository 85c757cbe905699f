"""ONNX export: names, shapes, metadata, atomic write, and ONNX Runtime == PyTorch on the same input."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from monother_ros.errors import CheckpointError, ConfigError, MonotherError
from monother_ros.model.branch import DepthBranch
from monother_ros.model.variants import get_preset
from monother_ros.runtime.export import (
    DEFAULT_OPSET,
    export_onnx,
    parse_hw,
    read_onnx_info,
)

RTOL = 1e-4


def _model(config, seed=0):
    torch.manual_seed(seed)
    return DepthBranch(config).eval()


def _ort_vs_torch(model, path, hw, seed=1):
    """max relative difference per output between ONNX Runtime and PyTorch on a random input."""
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model(x, features=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"thermal": x.numpy()})
    refs = [ref.depth] + ([ref.confidence] if ref.confidence is not None else [])
    assert len(got) == len(refs)
    errs = []
    for r, g in zip(refs, got):
        r = r.numpy()
        assert g.shape == r.shape == (1, 1, *hw)
        # relative to the output's scale (an untrained ReLU head may output zeros: then absolute)
        errs.append(float(np.max(np.abs(r - g)) / max(float(np.max(np.abs(r))), 1e-3)))
    return errs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = get_preset("test-tiny")
    model = _model(config)
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    info = export_onnx(model, config, path, model_hash="f00d" * 16, verify=False)
    return config, model, path, info


def test_graph_names_shapes_and_opset(tiny):
    config, _, path, info = tiny
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["thermal"]
    assert [o.name for o in proto.graph.output] == ["depth", "confidence"]
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    h, w = config.input_size
    assert dims(proto.graph.input[0]) == [1, 3, h, w]
    assert dims(proto.graph.output[0]) == dims(proto.graph.output[1]) == [1, 1, h, w]
    assert info.opset == DEFAULT_OPSET >= 17
    # LayerNorm stays one op (TensorRT maps it to a normalisation layer it can keep in fp32)
    assert "LayerNormalization" in {n.op_type for n in proto.graph.node}


def test_metadata_carries_config_size_mean_std_hash(tiny):
    config, _, path, info = tiny
    assert info.model_name == "test-tiny" and info.model_hash == "f00d" * 16
    assert info.input_hw == tuple(config.input_size)
    assert info.mean == pytest.approx(config.mean) and info.std == pytest.approx(config.std)
    assert info.has_confidence is True
    assert info.max_depth_m == config.max_depth_m and info.min_depth_m == config.min_depth_m
    from monother_ros.model.variants import ModelConfig

    assert ModelConfig.from_json(info.config_json) == config


def test_onnxruntime_matches_torch_at_default_size(tiny):
    _, model, path, _ = tiny
    errs = _ort_vs_torch(model, path, read_onnx_info(path).input_hw)
    assert max(errs) < RTOL, errs


def test_other_size_without_confidence(tmp_path):
    config = get_preset("test-tiny").replace(confidence_head=False)
    model = _model(config, seed=3)
    path = tmp_path / "tiny_42x84.onnx"
    info = export_onnx(model, config, path, input_hw=(42, 84))  # verify=True runs the built-in check
    assert info.input_hw == (42, 84) and info.has_confidence is False
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["depth"]
    errs = _ort_vs_torch(model, path, (42, 84))
    assert max(errs) < RTOL, errs


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, hw, overrides",
    [
        ("monother-default", None, {}),
        ("monother-default", (252, 322), {}),
        ("test-tiny", (70, 56), {"name": "tiny-zoe", "head": "zoe_bins", "n_bins": 16, "bin_embedding_dim": 16}),
        ("test-tiny", (28, 42), {"name": "tiny-relative", "head": "relative", "confidence_head": False}),
        # the official MonoTher layout (DA v1 taps, official 64-bin / 128-dim ZoeDepth head, thermal
        # mean/std) with a narrow, shallow encoder and decoder so that it exports in seconds
        ("monother-ms2-vitl", (70, 168), {"name": "ms2-narrow", "embed_dim": 64, "depth": 4, "num_heads": 2,
                                           "taps": (0, 1, 2, 3), "features": 32, "out_channels": (16, 32, 64, 64)}),
    ],
)
def test_presets_and_sizes_match_torch(tmp_path, preset, hw, overrides):
    config = get_preset(preset).replace(**overrides) if overrides else get_preset(preset)
    model = _model(config, seed=5)
    path = tmp_path / "m.onnx"
    info = export_onnx(model, config, path, input_hw=hw, verify=False)
    errs = _ort_vs_torch(model, path, info.input_hw)
    assert max(errs) < RTOL, errs


@pytest.mark.slow
def test_dav2_metric_vits_at_252x644(tmp_path):
    config = get_preset("dav2-metric-vits")
    model = _model(config, seed=7)
    path = tmp_path / "vits.onnx"
    info = export_onnx(model, config, path, input_hw=(252, 644), verify=False)
    assert info.input_hw == (252, 644) and info.has_confidence is False
    errs = _ort_vs_torch(model, path, (252, 644))
    assert max(errs) < RTOL, errs


def test_bad_arguments(tiny, tmp_path):
    config, model, _, _ = tiny
    with pytest.raises(ConfigError, match="multiples"):
        export_onnx(model, config, tmp_path / "x.onnx", input_hw=(50, 70))
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, config, tmp_path / "x.onnx", opset=13)
    assert not (tmp_path / "x.onnx").exists()
    assert parse_hw("252x644") == (252, 644)
    for bad in ("252", "axb", "0x14", "1x2x3"):
        with pytest.raises(ConfigError):
            parse_hw(bad)


def test_failed_export_leaves_existing_file_untouched(tiny, tmp_path):
    config, _, path, _ = tiny
    target = tmp_path / "keep.onnx"
    target.write_bytes(path.read_bytes())
    before = target.read_bytes()

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(MonotherError, match="export of test-tiny"):
        export_onnx(Broken(), config, target, model_hash="0" * 64, verify=False)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]


def test_corrupt_or_foreign_onnx_is_a_clear_error(tiny, tmp_path):
    _, _, path, _ = tiny
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_onnx_info(corrupt)
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(CheckpointError, match="lacks monother metadata"):
        read_onnx_info(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        read_onnx_info(tmp_path / "missing.onnx")


def test_failed_verification_leaves_no_file(tiny, tmp_path, monkeypatch):
    from monother_ros.runtime import export as X

    config, model, _, _ = tiny
    monkeypatch.setattr(X, "_run_onnxruntime", lambda path, x: [np.zeros((1, 1, *config.input_size), np.float32)] * 2)
    with pytest.raises(MonotherError, match="differs from PyTorch"):
        export_onnx(model, config, tmp_path / "m.onnx", model_hash="0" * 64)
    assert list(tmp_path.iterdir()) == []

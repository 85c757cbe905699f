"""The fast torch path: fp16 weights cast once (runtime.half), the whole frame on the engine's device
(core.frame_torch inside TorchEngine), CUDA graphs.

CPU tests run the device-frame code on CPU tensors (``device_frames=True``) against the numpy path of
the same engine, and the fp16 conversion on CPU (torch has fp16 CPU kernels); the gpu-marked tests
check precision, graphs, swaps and capture failures on a CUDA device.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from monother_ros.core.camera import PinholeCamera
from monother_ros.core.cloud import CloudOptions, CloudProjector
from monother_ros.model.branch import DepthBranch
from monother_ros.model.variants import get_preset
from monother_ros.runtime.half import Fp32LayerNorm, convert_to_fp16, fp32_parameter_names
from monother_ros.runtime.torch_engine import GRAPH_WARMUP_FRAMES, TorchEngine

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "engines" / "default"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def _thermal(hw, seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    img = 20000 + 8000 * (yy / h) + 3000 * np.sin(xx / 7.0) + rng.normal(0, 300, size=hw)
    if dtype == np.uint8:
        img = img / 256.0
    return np.clip(img, 0, np.iinfo(dtype).max).astype(dtype)


def _max_rel(a, b):
    """The project's max relative difference: max |a - b| / max |b| over pixels valid in both."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok])) / np.max(np.abs(b[ok])))


def _tiny_model(seed=0):
    config = get_preset("test-tiny")
    torch.manual_seed(seed)
    return DepthBranch(config).eval(), config


# ---------------------------------------------------------------------- fp16 conversion (CPU)


def test_convert_to_fp16_with_an_fp16_residual_stream_keeps_only_the_head_fp32():
    model, config = _tiny_model()
    keys = list(model.state_dict())
    half = convert_to_fp16(copy.deepcopy(model), fp32_residual_stream=False)
    assert list(half.state_dict()) == keys
    kept = set(fp32_parameter_names(half))
    assert kept == {"depth_head.scratch.output_conv2.2.weight", "depth_head.scratch.output_conv2.2.bias",
                    "confidence_head.net.0.weight", "confidence_head.net.0.bias",
                    "confidence_head.net.2.weight", "confidence_head.net.2.bias"}
    assert half.pretrained.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert half.pretrained.blocks[0].norm1.weight.dtype == torch.float16
    with pytest.raises(ValueError):
        convert_to_fp16(torch.nn.Linear(2, 2))


def test_convert_to_fp16_default_keeps_the_residual_stream_layernorms_and_head_fp32():
    model, config = _tiny_model()
    keys = list(model.state_dict())
    ref_ln = model.pretrained.blocks[0].norm1.weight.detach().clone()
    half = convert_to_fp16(copy.deepcopy(model))
    assert list(half.state_dict()) == keys
    kept = set(fp32_parameter_names(half))
    assert "pretrained.pos_embed" in kept and "pretrained.blocks.0.ls1.gamma" in kept
    assert "pretrained.norm.weight" in kept and "pretrained.blocks.0.norm1.bias" in kept
    assert "depth_head.scratch.output_conv2.2.weight" in kept
    assert "pretrained.cls_token" not in kept
    assert half.pretrained.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert isinstance(half.pretrained.blocks[0].norm1, Fp32LayerNorm)
    assert torch.equal(half.pretrained.blocks[0].norm1.weight, ref_ln)  # kept exactly, never rounded to fp16
    x = torch.randn(1, 3, *config.input_size)
    with torch.inference_mode():
        ref = model(x, features=False).depth
        out = half(x.half(), features=False).depth
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-2


def test_residual_value_past_fp16_range_stays_finite_with_the_fp32_stream():
    """A channel of the residual stream at 1e5 (past fp16's 65504): the fp16 stream overflows to NaN
    depth, the default fp32 stream stays within 1e-2 of fp32."""
    model, config = _tiny_model()
    with torch.no_grad():
        block = model.pretrained.blocks[1]
        block.mlp.fc2.bias[0] = 1000.0
        block.ls2.gamma[0] = 100.0
    x = torch.randn(1, 3, *config.input_size)
    with torch.inference_mode():
        ref = model(x, features=False).depth
        default = convert_to_fp16(copy.deepcopy(model))(x.half(), features=False).depth
        fp16_stream = convert_to_fp16(copy.deepcopy(model), fp32_residual_stream=False)(x.half(), features=False).depth
    assert torch.isfinite(ref).all()
    assert not torch.isfinite(fp16_stream).all()
    assert torch.isfinite(default).all()
    assert float((default - ref).abs().max() / ref.abs().max()) < 1e-2


def test_fp16_model_on_cpu_is_close_to_fp32_and_outputs_fp32():
    model, config = _tiny_model()
    x = torch.randn(1, 3, *config.input_size)
    with torch.inference_mode():
        ref = model(x, features=False)
        out = convert_to_fp16(copy.deepcopy(model))(x.half(), features=False)
    assert out.depth.dtype == torch.float32 and out.confidence.dtype == torch.float32
    assert float((out.depth - ref.depth).abs().max() / ref.depth.abs().max()) < 1e-2
    assert float((out.confidence - ref.confidence).abs().max()) < 1e-2


def test_shipped_model_fp16_on_cpu_within_1e2():
    from monother_ros.runtime.export import load_student

    model, config, _ = load_student(DEFAULT_MODEL)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *config.input_size)
    with torch.inference_mode():
        ref = model(x, features=False).depth
        out = convert_to_fp16(copy.deepcopy(model))(x.half(), features=False).depth
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-2


def test_zoe_bins_branch_converts_and_runs():
    config = get_preset("monother-ms2-vitl").replace(embed_dim=64, depth=4, num_heads=2, taps=(0, 1, 2, 3),
                                                     features=32, out_channels=(16, 32, 64, 64), n_bins=16,
                                                     bin_embedding_dim=32, input_size=(56, 70))
    torch.manual_seed(1)
    model = DepthBranch(config).eval()
    x = torch.randn(1, 3, 56, 70)
    with torch.inference_mode():
        ref = model(x, features=False).depth
        half = convert_to_fp16(copy.deepcopy(model))
        out = half(x.half(), features=False).depth
    assert all(p.dtype == torch.float32 for p in half.bins_head.parameters())
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-2


def test_fp32_state_dict_loads_into_fp16_weights():
    model, _ = _tiny_model()
    half = convert_to_fp16(copy.deepcopy(model))
    other, _ = _tiny_model(seed=7)
    half.load_state_dict(other.state_dict(), strict=True)
    w = half.pretrained.blocks[1].mlp.fc1.weight
    assert w.dtype == torch.float16
    assert torch.equal(w, other.pretrained.blocks[1].mlp.fc1.weight.half())
    assert torch.equal(half.depth_head.scratch.output_conv2[2].weight, other.depth_head.scratch.output_conv2[2].weight)
    assert torch.equal(half.pretrained.pos_embed, other.pretrained.pos_embed)
    assert torch.equal(half.pretrained.blocks[0].norm2.weight, other.pretrained.blocks[0].norm2.weight)


# ---------------------------------------------------------------------- device frames on CPU tensors


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_device_frames_on_cpu_equal_the_numpy_path(dtype):
    model, config = _tiny_model()
    numpy_path = TorchEngine(model, config, model_hash="x", num_threads=1)
    torch_path = TorchEngine(model, config, model_hash="x", num_threads=1, device_frames=True)
    for hw in ((61, 83), (40, 50)):  # a camera-size change rebuilds the device buffers
        img = _thermal(hw, seed=3, dtype=dtype)
        ref = numpy_path.infer(img)
        out = torch_path.infer(img)
        assert out.depth.shape == hw and out.depth.dtype == np.float32
        assert np.array_equal(np.isnan(out.depth), np.isnan(ref.depth))
        assert _max_rel(out.depth, ref.depth) < 1e-4
        assert _max_rel(out.confidence, ref.confidence) < 1e-4
        assert out.points is None
        assert set(out.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}


def test_device_frames_thresholds_and_cloud_on_cpu():
    model, config = _tiny_model()
    engine = TorchEngine(model, config, model_hash="x", num_threads=1, device_frames=True)
    numpy_path = TorchEngine(model, config, model_hash="x", num_threads=1)
    img = _thermal((48, 64), seed=5)
    first = engine.infer(img)
    # Thresholds changed between frames are applied to the next one (on both paths alike).
    # A depth cut in the widest gap between depths of the middle half: no pixel within rounding of it.
    vals = np.sort(first.depth.ravel())
    mid = vals[vals.size // 4: 3 * vals.size // 4]
    i = int(np.argmax(np.diff(mid)))
    cut = float(mid[i] + mid[i + 1]) / 2
    for e in (engine, numpy_path):
        e.set_thresholds(type(e.thresholds)(min_depth_m=cut, max_depth_m=80.0, min_confidence=0.0))
    masked = engine.infer(img)
    ref = numpy_path.infer(img)
    assert np.isnan(masked.depth).sum() > np.isnan(first.depth).sum()
    assert np.array_equal(np.isnan(masked.depth), np.isnan(ref.depth))
    cam = PinholeCamera(64, 48, 40.0, 41.0, 31.5, 23.5)
    engine.set_cloud_camera(cam)
    with_points = engine.infer(img)
    assert with_points.points.dtype == np.uint8 and with_points.points.size == 48 * 64 * 16
    ref_points = CloudProjector(cam).pack(with_points.depth, with_points.confidence)
    a = with_points.points.view(np.float32)
    b = ref_points.view(np.float32)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[~np.isnan(b)], b[~np.isnan(b)])
    options = CloudOptions(decimation=2, max_range_m=30.0)
    engine.set_cloud_camera(cam, options)
    decimated = engine.infer(img)
    ref_points = CloudProjector(cam, options).pack(decimated.depth, decimated.confidence).view(np.float32)
    a = decimated.points.view(np.float32)
    assert a.size == 24 * 32 * 4
    np.testing.assert_array_equal(np.isnan(a), np.isnan(ref_points))
    with pytest.raises(ValueError, match="rgb"):
        engine.set_cloud_camera(cam, CloudOptions(rgb=True))
    # A camera of another size gives no points (and frames keep coming).
    engine.set_cloud_camera(PinholeCamera(32, 24, 20.0, 20.0, 16.0, 12.0))
    assert engine.infer(img).points is None
    engine.set_cloud_camera(None)
    assert engine.infer(img).points is None


def test_device_frames_results_are_the_callers_own():
    model, config = _tiny_model()
    engine = TorchEngine(model, config, model_hash="x", num_threads=1, device_frames=True)
    a = engine.infer(_thermal((30, 40), seed=1))
    kept = a.depth.copy()
    engine.infer(_thermal((30, 40), seed=2))
    np.testing.assert_array_equal(a.depth, kept)


def test_cpu_engine_ignores_graphs_and_fp16():
    model, config = _tiny_model()
    engine = TorchEngine(model, config, model_hash="x", num_threads=1, precision="fp16", cuda_graphs=True)
    assert engine.info.precision == "fp32"
    assert engine.model is model  # the CPU path does not copy or convert the caller's module
    engine.infer(_thermal((30, 40)))
    assert not engine.graph_captured


# ---------------------------------------------------------------------- CUDA (gpu-marked)


def _cuda_pair(model, config, **kw):
    fp32 = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp32", **kw)
    fp16 = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp16", **kw)
    return fp32, fp16


@pytest.mark.gpu
@cuda
def test_gpu_shipped_model_fp16_graph_frame():
    fp32 = TorchEngine.from_model_dir(DEFAULT_MODEL, device="cuda", precision="fp32")
    fp16 = TorchEngine.from_model_dir(DEFAULT_MODEL, device="cuda", precision="fp16")
    cpu = TorchEngine.from_model_dir(DEFAULT_MODEL, device="cpu")
    img = _thermal((512, 640), seed=4)
    results = [fp16.infer(img) for _ in range(GRAPH_WARMUP_FRAMES + 2)]
    assert fp16.graph_captured and fp16.info.precision == "fp16"
    eager, graph = results[0], results[-1]
    np.testing.assert_allclose(graph.depth, eager.depth, rtol=1e-5, equal_nan=True)
    ref = fp32.infer(img)
    assert _max_rel(graph.depth, ref.depth) <= 1e-2
    assert _max_rel(ref.depth, cpu.infer(img).depth) <= 2e-3  # TF32 convolutions on the GPU


@pytest.mark.gpu
@cuda
def test_gpu_device_frames_equal_numpy_pre_post():
    """Same GPU network (fp32, no TF32) with numpy pre/post and with device pre/post: within 1e-4."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model, config = _tiny_model()
        device_path = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp32")
        numpy_path = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp32", device_frames=False)
        img = _thermal((256, 320), seed=6)
        for _ in range(GRAPH_WARMUP_FRAMES + 1):
            out = device_path.infer(img)
        assert device_path.graph_captured
        ref = numpy_path.infer(img)
        assert _max_rel(out.depth, ref.depth) <= 1e-4
        assert _max_rel(out.confidence, ref.confidence) <= 1e-4
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.gpu
@cuda
def test_gpu_swap_weights_with_a_captured_graph_and_size_change():
    model, config = _tiny_model()
    engine = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp16")
    img = _thermal((120, 160), seed=2)
    for _ in range(GRAPH_WARMUP_FRAMES + 1):
        before = engine.infer(img)
    assert engine.graph_captured
    other, _ = _tiny_model(seed=9)
    engine.swap_weights(other.state_dict())  # fp32 tensors into fp16 weights
    after = engine.infer(img)
    assert engine.graph_captured
    fresh = TorchEngine(other, config, model_hash="y", device="cuda", precision="fp16", cuda_graphs=False)
    np.testing.assert_allclose(after.depth, fresh.infer(img).depth, rtol=1e-5, equal_nan=True)
    assert not np.allclose(np.nan_to_num(after.depth), np.nan_to_num(before.depth))
    small = _thermal((60, 80), seed=2)
    for _ in range(GRAPH_WARMUP_FRAMES + 1):
        engine.infer(small)
    assert engine.graph_captured and engine.infer(small).depth.shape == (60, 80)


@pytest.mark.gpu
@cuda
def test_gpu_capture_failure_falls_back_to_eager_with_one_warning(caplog):
    model, config = _tiny_model()
    engine = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp16")
    reference = TorchEngine(model, config, model_hash="x", device="cuda", precision="fp16", cuda_graphs=False)
    frame = engine._frame_on_device

    def syncing_frame(st):
        out = frame(st)
        float(out[0])  # a host sync: legal eagerly, illegal while capturing
        return out

    engine._frame_on_device = syncing_frame
    img = _thermal((64, 80), seed=8)
    with caplog.at_level(logging.WARNING, logger="monother_ros.runtime.torch_engine"):
        results = [engine.infer(img) for _ in range(GRAPH_WARMUP_FRAMES + 3)]
    warnings = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warnings) == 1
    assert not engine.graph_captured
    ref = reference.infer(img)
    for r in results[GRAPH_WARMUP_FRAMES:]:
        np.testing.assert_allclose(r.depth, ref.depth, rtol=1e-5, equal_nan=True)
    # The failed capture must not leave torch's CUDA generator in capture mode: random ops of the same
    # process (a learner's weight init, dropout) keep working.
    sample = torch.empty(1000, device="cuda").uniform_(-1.0, 1.0)
    assert float(sample.abs().max()) <= 1.0 and float(sample.std()) > 0.1


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("preset,net_hw,cam_hw", [("dav2-metric-vits", (518, 518), (518, 518)),
                                                  ("monother-ms2-vitl", (252, 644), (256, 640))])
def test_gpu_real_size_random_weights_fp16_within_1e2(preset, net_hw, cam_hw):
    config = get_preset(preset)
    torch.manual_seed(0)
    with torch.device("cuda"):  # random init of a ViT-L: much faster on the GPU
        model = DepthBranch(config).eval()
    fp32, fp16 = _cuda_pair(model, config, input_hw=net_hw)
    img = _thermal(cam_hw, seed=1)
    ref = fp32.infer(img)
    for _ in range(GRAPH_WARMUP_FRAMES + 1):
        out = fp16.infer(img)
    assert fp16.graph_captured
    assert _max_rel(out.depth, ref.depth) <= 1e-2

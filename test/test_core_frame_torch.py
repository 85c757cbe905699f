"""The torch frame pipeline (core.frame_torch) against the numpy reference (core.preprocess, core.cloud).

Runs on CPU tensors here; the same functions run on CUDA tensors in the GPU engine (the gpu-marked test
at the end repeats the comparison on the device).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from monother_ros.core import preprocess as pp
from monother_ros.core.camera import PinholeCamera
from monother_ros.core.cloud import CloudOptions, CloudProjector
from monother_ros.core.frame_torch import (
    CloudProjectorTorch,
    DepthPostprocessorTorch,
    ThermalPreprocessorTorch,
    counts_to_index,
)

RTOL = 1e-4


def _frame(hw, seed=0, bits=16):
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, hw[0])[:, None]
    xx = np.linspace(0, 1, hw[1])[None, :]
    if bits == 16:
        img = 20000 + 9000 * yy + 3000 * xx + rng.normal(0, 400, hw)
        img[: hw[0] // 8, : hw[1] // 8] = 65535  # saturated hot corner (above the 98th percentile)
        return np.clip(img, 0, 65535).astype(np.uint16)
    img = 60 + 120 * yy + 40 * xx + rng.normal(0, 8, hw)
    return np.clip(img, 0, 255).astype(np.uint8)


def _torch_counts(img: np.ndarray) -> torch.Tensor:
    if img.dtype == np.uint16:
        return torch.from_numpy(img.view(np.int16))  # the engine's pinned-buffer view
    return torch.from_numpy(img)


def _close(a: np.ndarray, b: np.ndarray, rtol=RTOL, thresholds=()) -> None:
    """Relative to the reference's largest magnitude (the project's max relative difference).

    NaN (masked) pixels must agree, except where the unmasked value lies within float32 rounding of
    a masking threshold (either side of it is right then).
    """
    assert a.shape == b.shape
    differ = np.isnan(a) != np.isnan(b)
    if differ.any():
        value = np.where(np.isnan(a), b, a)[differ]
        near = np.zeros(value.shape, bool)
        for t in thresholds:
            near |= np.abs(value - t) <= 1e-5 * max(abs(t), 1.0)
        assert near.all(), f"{int((~near).sum())} pixels masked differently"
    ok = ~(np.isnan(a) | np.isnan(b))
    scale = float(np.max(np.abs(b[ok]))) if ok.any() else 1.0
    assert float(np.max(np.abs(a[ok] - b[ok]), initial=0.0)) <= rtol * scale


def test_counts_to_index_reads_uint16_bit_patterns():
    img = np.array([[0, 1, 32767], [32768, 65534, 65535]], np.uint16)
    assert counts_to_index(_torch_counts(img)).tolist() == img.astype(np.int64).tolist()
    assert counts_to_index(torch.from_numpy(img)).tolist() == img.astype(np.int64).tolist()
    with pytest.raises(ValueError):
        counts_to_index(torch.zeros(2, 2))


@pytest.mark.parametrize("bits", [16, 8])
@pytest.mark.parametrize("in_hw,out_hw", [((512, 640), (112, 140)), ((256, 640), (252, 644)),
                                          ((37, 53), (37, 53)), ((30, 40), (56, 70))])
def test_preprocess_equals_numpy(bits, in_hw, out_hw):
    img = _frame(in_hw, seed=sum(in_hw), bits=bits)
    ref = pp.ThermalPreprocessor(in_hw, out_hw)(img).copy()
    pre = ThermalPreprocessorTorch(in_hw, out_hw, bits=bits)
    out = pre(_torch_counts(img)).numpy()
    _close(out, ref)
    # The bounds and the table are the numpy ones exactly (float64 math, one rounding).
    lo, hi = pp.thermal_percentile_bounds(img)
    bounds = pre.bounds(counts_to_index(_torch_counts(img))).tolist()
    assert bounds == [lo, hi]
    np.testing.assert_array_equal(pre.lut(torch.tensor([lo, hi], dtype=torch.float64)).numpy(),
                                  pp._unit_lut(bits, lo, hi, pp.THERMAL_MEAN, pp.THERMAL_STD))


def test_preprocess_constant_and_two_level_frames():
    for img in (np.full((20, 30), 1234, np.uint16), np.where(np.arange(600).reshape(20, 30) % 2, 900, 100).astype(np.uint16)):
        ref = pp.ThermalPreprocessor(img.shape, (28, 42))(img).copy()
        out = ThermalPreprocessorTorch(img.shape, (28, 42))(_torch_counts(img)).numpy()
        _close(out, ref)


def test_preprocess_per_channel_normalisation_matches_engine_convention():
    img = _frame((48, 64), seed=3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = pp.ThermalPreprocessor(img.shape, (42, 56), mean=0.0, std=1.0)(img).copy()
    for c in range(3):
        ref[0, c] -= np.float32(mean[c])
        ref[0, c] /= np.float32(std[c])
    out = ThermalPreprocessorTorch(img.shape, (42, 56), mean=mean, std=std)(_torch_counts(img)).numpy()
    _close(out, ref)


def test_preprocess_rejects_wrong_shapes():
    pre = ThermalPreprocessorTorch((10, 12), (14, 14))
    with pytest.raises(ValueError):
        pre(torch.zeros(11, 12, dtype=torch.int16))
    with pytest.raises(ValueError):
        ThermalPreprocessorTorch((10, 12), (14, 14), bits=12)


@pytest.mark.parametrize("with_conf", [True, False])
@pytest.mark.parametrize("net_hw,cam_hw", [((112, 140), (512, 640)), ((252, 644), (256, 640)), ((14, 28), (14, 28))])
def test_postprocess_equals_numpy(with_conf, net_hw, cam_hw):
    rng = np.random.default_rng(5)
    depth = rng.uniform(-5, 90, net_hw).astype(np.float32)
    depth[0, :3] = [np.nan, np.inf, -np.inf]
    conf = rng.uniform(-0.1, 1.1, net_hw).astype(np.float32) if with_conf else None
    kw = dict(min_depth=0.5, max_depth=70.0, min_confidence=0.3)
    ref_d, ref_c = pp.DepthPostprocessor(net_hw, cam_hw)(depth, conf, **kw)
    post = DepthPostprocessorTorch(net_hw, cam_hw)
    post.set_thresholds(0.5, 70.0, 0.3)
    d, c = post(torch.from_numpy(depth), None if conf is None else torch.from_numpy(conf))
    _close(d.numpy(), ref_d, thresholds=(0.5, 70.0))
    if with_conf:
        _close(c.numpy(), ref_c)
    else:
        assert c is None
    # Writing into given buffers gives the same numbers.
    d_out = torch.empty(cam_hw)
    c_out = torch.empty(cam_hw) if with_conf else None
    d2, c2 = post(torch.from_numpy(depth), None if conf is None else torch.from_numpy(conf),
                  depth_out=d_out, confidence_out=c_out)
    assert d2.data_ptr() == d_out.data_ptr()
    np.testing.assert_array_equal(d2.numpy(), d.numpy())


def test_cloud_equals_numpy_pack():
    cam = PinholeCamera(64, 48, 50.0, 52.0, 31.2, 24.7)
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.5, 30, (48, 64)).astype(np.float32)
    depth[3, 4], depth[5, 6], depth[7, 8] = np.nan, np.inf, -1.0
    conf = rng.uniform(0, 1, (48, 64)).astype(np.float32)
    ref = CloudProjector(cam).pack(depth, conf).view(np.float32).reshape(48, 64, 4).copy()
    proj = CloudProjectorTorch.from_camera(cam)
    out = proj.pack(torch.from_numpy(depth), torch.from_numpy(conf)).numpy()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(out[~np.isnan(ref)], ref[~np.isnan(ref)])  # same float32 products
    for options in (CloudOptions(decimation=3), CloudOptions(max_range_m=12.0), CloudOptions(decimation=2, max_range_m=9.0)):
        ref = CloudProjector(cam, options).pack(depth, conf).view(np.float32).reshape(-1).copy()
        out = CloudProjectorTorch.from_camera(cam, options).pack(torch.from_numpy(depth), torch.from_numpy(conf))
        out = out.numpy().reshape(-1)
        assert out.size == ref.size
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        np.testing.assert_array_equal(out[~np.isnan(ref)], ref[~np.isnan(ref)])
    with pytest.raises(ValueError, match="rgb"):
        CloudProjectorTorch.from_camera(cam, CloudOptions(rgb=True))
    no_intensity = proj.pack(torch.from_numpy(depth)).numpy()
    assert np.all(no_intensity[..., 3] == 0)
    with pytest.raises(ValueError):
        proj.pack(torch.zeros(4, 4))


@pytest.mark.gpu
def test_frame_pipeline_on_cuda_equals_numpy():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    dev = torch.device("cuda")
    img = _frame((512, 640), seed=9)
    ref = pp.ThermalPreprocessor(img.shape, (112, 140))(img).copy()
    out = ThermalPreprocessorTorch(img.shape, (112, 140), device=dev)(_torch_counts(img).to(dev)).cpu().numpy()
    _close(out, ref)
    rng = np.random.default_rng(1)
    depth = rng.uniform(0, 90, (112, 140)).astype(np.float32)
    conf = rng.uniform(0, 1, (112, 140)).astype(np.float32)
    ref_d, ref_c = pp.DepthPostprocessor((112, 140), (512, 640))(depth, conf, min_depth=1e-3, max_depth=80.0)
    d, c = DepthPostprocessorTorch((112, 140), (512, 640), device=dev)(torch.from_numpy(depth).to(dev), torch.from_numpy(conf).to(dev))
    _close(d.cpu().numpy(), ref_d)
    _close(c.cpu().numpy(), ref_c)

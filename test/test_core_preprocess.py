"""Thermal/RGB preprocessing against the reference formulas (np.percentile, F.interpolate)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monother_ros.core.preprocess import (
    BilinearResizer,
    RgbPreprocessor,
    ThermalPreprocessor,
    constrain_to_multiple,
    integer_percentiles,
    mask_depth,
    network_input_size,
    postprocess_depth,
    preprocess_rgb,
    preprocess_thermal,
    resize_depth,
    thermal_to_unit,
    thermal_to_unit_torch,
    to_network_input_torch,
)


def _reference_unit(raw: np.ndarray, bits: int = 16) -> np.ndarray:
    """The reference dataset formula written out: float32 / (2^bits-1), np.percentile 2/98, clip."""
    img = raw.astype(np.float32) / (2**bits - 1)
    lo = np.percentile(img, 2)
    hi = np.percentile(img, 98)
    return np.clip((img - lo) / (hi - lo), 0, 1).astype(np.float32)


def _reference_network_input(unit: np.ndarray, out_hw, mean=0.45, std=0.225) -> np.ndarray:
    x = torch.from_numpy(unit)[None, None].expand(1, 3, -1, -1)
    x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=True)
    return ((x - mean) / std).numpy()


def _thermal(seed: int, hw=(48, 64), dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    base = rng.normal(0.45 * top, 0.08 * top, size=hw)
    base[: hw[0] // 4, : hw[1] // 3] = 0.9 * top  # a hot object -> ties at one value
    return np.clip(base, 0, top).astype(dtype)


@pytest.mark.parametrize(
    "hw, expected", [((256, 640), (252, 644)), ((512, 640), (518, 644)), ((480, 640), (476, 644)), ((21, 35), (28, 28))]
)
def test_network_input_size_minimal_rule(hw, expected):
    assert network_input_size(*hw) == expected


def test_network_input_size_with_target_and_bounds():
    # Keep aspect, scale closest to 1 (minimal): 640x256 to a 518-wide target keeps 256/640.
    assert network_input_size(256, 640, target_hw=(392, 518)) == (210, 518)
    assert network_input_size(256, 640, target_hw=(392, 518), resize_method="lower_bound") == (392, 980)
    assert network_input_size(256, 640, target_hw=(392, 518), resize_method="upper_bound") == (210, 518)
    assert constrain_to_multiple(35.0) == 28  # 2.5 rounds half to even, as np.round
    assert constrain_to_multiple(49.0) == 56  # 3.5 -> 4


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_percentiles_equal_np_percentile(dtype, seed):
    img = _thermal(seed, hw=(37, 53), dtype=dtype)
    qs = [0, 2, 13.7, 50, 98, 99.99, 100]
    np.testing.assert_allclose(integer_percentiles(img, qs), np.percentile(img, qs), rtol=0, atol=1e-9)


def test_integer_percentiles_edge_cases():
    one = np.array([[1234]], dtype=np.uint16)
    assert integer_percentiles(one, [2, 98]).tolist() == [1234.0, 1234.0]
    two = np.array([10, 20], dtype=np.uint16)
    np.testing.assert_allclose(integer_percentiles(two, [2, 50, 98]), np.percentile(two, [2, 50, 98]))
    with pytest.raises(ValueError):
        integer_percentiles(np.zeros((2, 2), np.float32), [2])


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_thermal_to_unit_matches_reference(dtype):
    img = _thermal(3, dtype=dtype)
    bits = 16 if dtype == np.uint16 else 8
    ours = thermal_to_unit(img)
    ref = _reference_unit(img, bits)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert ours.min() == 0.0 and ours.max() == 1.0


def test_constant_frame_gives_no_nan():
    img = np.full((8, 10), 30000, np.uint16)
    out = thermal_to_unit(img)
    assert np.isfinite(out).all() and (out == 0).all()
    pre = ThermalPreprocessor(img.shape)(img)
    assert np.isfinite(pre).all()


def test_bilinear_resizer_matches_interpolate():
    rng = np.random.default_rng(4)
    img = rng.normal(size=(31, 47)).astype(np.float32)
    for out_hw in [(28, 56), (62, 94), (31, 47), (1, 5)]:
        ref = F.interpolate(torch.from_numpy(img)[None, None], size=out_hw, mode="bilinear", align_corners=True)
        np.testing.assert_allclose(BilinearResizer(img.shape, out_hw)(img), ref[0, 0].numpy(), atol=2e-6)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_thermal_preprocessor_matches_reference_pipeline(dtype):
    img = _thermal(5, dtype=dtype)
    bits = 16 if dtype == np.uint16 else 8
    out_hw = network_input_size(*img.shape)
    pre = ThermalPreprocessor(img.shape)
    out = pre(img)
    assert out.shape == (1, 3, *out_hw) and out.dtype == np.float32
    ref = _reference_network_input(_reference_unit(img, bits), out_hw)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # The three channels are copies.
    assert (out[0, 0] == out[0, 1]).all() and (out[0, 0] == out[0, 2]).all()


def test_numpy_and_torch_paths_agree():
    imgs = [_thermal(s) for s in (6, 7)]
    batch = torch.from_numpy(np.stack(imgs).astype(np.int32))
    unit = thermal_to_unit_torch(batch)
    for i, img in enumerate(imgs):
        np.testing.assert_allclose(unit[i, 0].numpy(), thermal_to_unit(img), rtol=0, atol=1e-6)
    net = to_network_input_torch(unit, (56, 70))
    for i, img in enumerate(imgs):
        np.testing.assert_allclose(net[i : i + 1].numpy(), preprocess_thermal(img, (56, 70)), rtol=0, atol=1e-6)


def test_rgb_preprocessor_matches_torch():
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    out = preprocess_rgb(rgb, (28, 42))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    ref = to_network_input_torch(x, (28, 42), modality="rgb")
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=1e-6)
    pre = RgbPreprocessor((30, 40), (28, 42))
    assert pre(rgb) is pre.output  # preallocated buffer
    with pytest.raises(ValueError):
        pre(rgb.astype(np.float32))


def test_buffers_are_reused_and_shape_checked():
    img = _thermal(9)
    pre = ThermalPreprocessor(img.shape, (28, 42))
    a = pre(img)
    b = pre(_thermal(10))
    assert a is b
    with pytest.raises(ValueError):
        pre(img[:-1])
    with pytest.raises(ValueError):
        pre(img.astype(np.float32))


def test_postprocess_resizes_and_masks():
    depth = np.array([[0.0, 5.0], [90.0, 10.0]], np.float32)
    conf = np.array([[1.0, 0.2], [1.0, 0.9]], np.float32)
    out = mask_depth(depth, min_depth=1e-3, max_depth=80.0, confidence=conf, min_confidence=0.5)
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1]) and np.isnan(out[1, 0]) and out[1, 1] == 10.0
    d, c = postprocess_depth(np.full((4, 6), 3.0, np.float32), (8, 11), confidence=np.full((4, 6), 0.7, np.float32))
    assert d.shape == (8, 11) and c.shape == (8, 11)
    np.testing.assert_allclose(d, 3.0)
    ramp = np.arange(3, dtype=np.float32)[None].repeat(2, 0)
    np.testing.assert_allclose(resize_depth(ramp, (2, 5))[0], [0, 0.5, 1, 1.5, 2], atol=1e-6)
    nan_in = np.array([[np.nan, 2.0]], np.float32)
    assert np.isnan(mask_depth(nan_in)[0, 0]) and mask_depth(nan_in)[0, 1] == 2.0


def test_torch_mono8_and_default_size():
    img = _thermal(11, dtype=np.uint8)
    unit = thermal_to_unit_torch(torch.from_numpy(img.astype(np.int32)), bits=8)
    np.testing.assert_allclose(unit[0, 0].numpy(), thermal_to_unit(img), rtol=0, atol=1e-6)
    out = to_network_input_torch(unit)
    assert out.shape == (1, 3, *network_input_size(*img.shape))
    with pytest.raises(ValueError):
        thermal_to_unit_torch(torch.zeros(4, 4), bits=8)  # float counts
    with pytest.raises(ValueError):
        to_network_input_torch(unit, modality="lidar")


# --------------------------------------------------------------------------- fast paths (issue 3 benchmark)


@pytest.mark.parametrize("in_hw, out_hw", [((23, 31), (57, 70)), ((57, 70), (23, 31)), ((20, 9), (7, 40))])
def test_stacked_resize_both_orders_match_interpolate(in_hw, out_hw):
    from monother_ros.core.preprocess import DepthPostprocessor  # noqa: F401  (exported)

    rng = np.random.default_rng(12)
    stack = rng.normal(size=(2, *in_hw)).astype(np.float32)
    r = BilinearResizer(in_hw, out_hw)
    # Upsampling goes columns first, downsampling rows first (cost model); both must be bilinear.
    if in_hw == (23, 31):
        assert r.columns_first
    if in_hw == (57, 70):
        assert not r.columns_first
    ref = F.interpolate(torch.from_numpy(stack)[None], size=out_hw, mode="bilinear", align_corners=True)[0].numpy()
    out = np.full((2, *out_hw), -7.0, np.float32)
    assert r(stack, out=out) is out
    np.testing.assert_allclose(out, ref, rtol=0, atol=3e-6)
    # One plane alone gives the same numbers as the stacked pass.
    assert np.array_equal(r(stack[1]), out[1])
    with pytest.raises(ValueError):
        r(stack, out=np.empty(out_hw, np.float32))


@pytest.mark.parametrize("block_rows", [128, 7, 1])
def test_depth_postprocessor_equals_resize_then_mask(block_rows):
    from monother_ros.core.preprocess import DepthPostprocessor

    rng = np.random.default_rng(13)
    net_hw, cam_hw = (13, 17), (150, 23)
    depth = rng.uniform(-5.0, 100.0, size=net_hw).astype(np.float32)
    depth[3, 4] = np.nan
    depth[8, 2] = np.inf
    conf = rng.uniform(-0.2, 1.2, size=net_hw).astype(np.float32)
    conf[10, 10] = np.nan
    post = DepthPostprocessor(net_hw, cam_hw, block_rows=block_rows)
    d, c = post(depth, conf, min_depth=1.0, max_depth=80.0, min_confidence=0.4)
    c_ref = np.clip(resize_depth(conf, cam_hw), 0.0, 1.0)
    d_ref = mask_depth(resize_depth(depth, cam_hw), min_depth=1.0, max_depth=80.0, confidence=c_ref,
                       min_confidence=0.4)
    assert d.shape == c.shape == cam_hw and d.dtype == c.dtype == np.float32
    np.testing.assert_array_equal(c, c_ref)  # NaN in the same places, the rest bit-equal
    np.testing.assert_array_equal(d, d_ref)
    assert 0.2 < np.isnan(d).mean() < 0.9  # the thresholds did mask something, not everything
    # Fresh arrays each call: the first frame's result survives the second call.
    d_keep = d.copy()
    d2, c2 = post(depth + 1.0, None)
    assert c2 is None and d2 is not d
    np.testing.assert_array_equal(d, d_keep)
    np.testing.assert_array_equal(d2, postprocess_depth(depth + 1.0, cam_hw)[0])
    with pytest.raises(ValueError):
        post(depth[:-1], None)
    with pytest.raises(ValueError):
        post(depth, conf[:, :-1])


@pytest.mark.parametrize("bits, lo, hi", [(16, 0.3, 0.41), (16, 0.0, 1.0), (16, 0.5, 0.5), (8, 0.1, 0.9),
                                          (16, 0.99998, 1.0), (8, 0.0, 0.0)])
def test_unit_lut_equals_full_formula(bits, lo, hi):
    from monother_ros.core.preprocess import _unit_lut

    full = float(2**bits - 1)
    counts = np.arange(2**bits, dtype=np.float64)
    span = max(hi - lo, 1.0 / full)
    ref = ((np.clip((counts / full - lo) / span, 0.0, 1.0) - 0.45) / 0.225).astype(np.float32)
    np.testing.assert_array_equal(_unit_lut(bits, lo, hi, 0.45, 0.225), ref)


def test_thermal_preprocessor_writes_into_given_buffer():
    img = _thermal(14)
    pre = ThermalPreprocessor(img.shape, (28, 42))
    buf = np.full((1, 3, 28, 42), np.nan, np.float32)
    assert pre(img, out=buf) is buf
    np.testing.assert_array_equal(buf, ThermalPreprocessor(img.shape, (28, 42))(img))
    with pytest.raises(ValueError):
        pre(img, out=np.empty((1, 3, 28, 43), np.float32))
    with pytest.raises(ValueError):
        pre(img, out=np.empty((1, 3, 42, 28), np.float32).transpose(0, 1, 3, 2))


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, monother_ros.core.preprocess as p; p.preprocess_thermal(p.np.zeros((20, 30), p.np.uint16)); " \
           "sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
@pytest.mark.parametrize("in_hw, out_hw", [((60, 80), (28, 42)), ((20, 30), (42, 56))])
def test_thermal_preprocessor_both_resize_orders_equal_lut_then_resize(in_hw, out_hw, dtype):
    from monother_ros.core.preprocess import _unit_lut, thermal_percentile_bounds

    img = _thermal(15, hw=in_hw, dtype=dtype)
    pre = ThermalPreprocessor(in_hw, out_hw)
    assert pre._resize.columns_first == (in_hw == (20, 30))  # rows-first gathers raw counts before the lookup
    bits = 16 if dtype == np.uint16 else 8
    lut = _unit_lut(bits, *thermal_percentile_bounds(img), 0.45, 0.225)
    ref = BilinearResizer(in_hw, out_hw)(lut[img])
    out = pre(img)
    for c in range(3):
        np.testing.assert_array_equal(out[0, c], ref)

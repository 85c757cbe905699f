"""Engines: backend selection, torch == ONNX Runtime on the same weights, camera-size handling, NaN
masking, metadata, corrupt files, and hot swapping while another thread infers."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monother_ros.core import preprocess as pp
from monother_ros.errors import BackendUnavailableError, CheckpointError, ConfigError
from monother_ros.model.branch import DepthBranch
from monother_ros.model.checkpoints import save_model
from monother_ros.model.variants import get_preset
from monother_ros.runtime import engine as E
from monother_ros.runtime.export import MODEL_ONNX_FILE, read_onnx_info, resolve_onnx
from monother_ros.runtime.onnx_engine import OnnxEngine
from monother_ros.runtime.torch_engine import TorchEngine

RTOL = 1e-4


def _rel(a, b):
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b)))


def _thermal(hw, seed=0, dtype=np.uint16):
    """Smooth gradient + noise, like a thermal frame (counts)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    base = 20000 + 8000 * (yy / h) + 3000 * np.sin(xx / 7.0)
    img = base + rng.normal(0, 300, size=hw)
    if dtype == np.uint8:
        img = img / 256.0
    return np.clip(img, 0, np.iinfo(dtype).max).astype(dtype)


def _onnx_variant(src, dst, *, perturb=False, **meta):
    """Copy of an exported ONNX file with other weights (``perturb``) and/or other metadata values,
    made without a second export (exports take seconds)."""
    import json

    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    if perturb:
        for init in proto.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype == np.float32 and arr.ndim >= 2:
                init.CopyFrom(numpy_helper.from_array((arr * 0.9).astype(np.float32), init.name))
    for entry in proto.metadata_props:
        key = entry.key.removeprefix("monother.")
        if key in meta:
            value = meta[key]
            entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved test-tiny model folder (random weights), its cache folder and both engines."""
    root = tmp_path_factory.mktemp("engines")
    config = get_preset("test-tiny")
    torch.manual_seed(0)
    model = DepthBranch(config).eval()
    # Non-trivial confidence spread, so masking by confidence has something to mask.
    model_dir = save_model(model, config, root / "tiny")
    cache = root / "cache"
    ort_engine = E.make_backend(model_dir, "onnxruntime", cache_dir=cache, num_threads=1)
    torch_engine = E.make_backend(model_dir, "torch", num_threads=1)
    yield {"dir": model_dir, "cache": cache, "config": config, "ort": ort_engine, "torch": torch_engine,
           "root": root}
    ort_engine.close()
    torch_engine.close()


# ---------------------------------------------------------------------- selection
def test_auto_picks_onnxruntime_without_tensorrt(monkeypatch):
    monkeypatch.setitem(E._PROBES, "tensorrt", lambda: (False, "no tensorrt here"))
    assert E.resolve_backend("auto") == "onnxruntime"
    with pytest.raises(BackendUnavailableError, match="backend tensorrt is unavailable: no tensorrt here"):
        E.resolve_backend("tensorrt")


def test_auto_picks_tensorrt_when_present(monkeypatch):
    monkeypatch.setitem(E._PROBES, "tensorrt", lambda: (True, ""))
    assert E.resolve_backend("auto") == "tensorrt"


def test_selection_errors(monkeypatch, tiny):
    with pytest.raises(ConfigError, match="unknown backend"):
        E.resolve_backend("openvino")
    monkeypatch.setitem(E._PROBES, "onnxruntime", lambda: (False, "onnxruntime missing"))
    monkeypatch.setitem(E._PROBES, "tensorrt", lambda: (False, "no GPU"))
    # without ONNX Runtime, torch on the CPU is the last resort
    engine = E.make_backend(tiny["dir"], "auto", num_threads=1)
    assert engine.info.backend == "torch" and engine.selection.device == "cpu"
    assert dict(engine.selection.skipped)["onnxruntime"] == "onnxruntime missing"
    monkeypatch.setitem(E._PROBES, "torch", lambda: (False, "torch missing"))
    with pytest.raises(BackendUnavailableError, match="onnxruntime missing.*torch-cpu: torch missing"):
        E.make_backend(tiny["dir"], "auto")
    with pytest.raises(ConfigError, match="precision"):
        E.make_backend(tiny["dir"], "torch", precision="int8")


# ---------------------------------------------------------------------- devices and the auto order
def test_device_names_are_checked_in_one_place(monkeypatch):
    from monother_ros.runtime import device as D

    assert [D.check_device(v) for v in ("auto", "CPU", " cuda ", "cuda:1")] == ["auto", "cpu", "cuda", "cuda:1"]
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:x", "mps", "", "cuda1"):
        with pytest.raises(ConfigError, match="device must be auto"):
            D.check_device(bad)
        assert D.device_validator(bad)
    assert D.device_validator("cuda:0") is None
    monkeypatch.setattr(D, "cuda_device_count", lambda: 0)
    assert D.resolve_device("auto") == "cpu" and D.resolve_device("cpu") == "cpu"
    with pytest.raises(BackendUnavailableError, match="torch sees no CUDA GPU: install a CUDA-enabled torch"):
        D.resolve_device("cuda")
    monkeypatch.setattr(D, "cuda_device_count", lambda: 2)
    assert D.resolve_device("auto") == "cuda:0" and D.resolve_device("cuda") == "cuda:0"
    assert D.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(BackendUnavailableError, match=r"only 2 CUDA device\(s\)"):
        D.resolve_device("cuda:2")


class _Built:
    """Stands in for an engine built by a fake builder (records where it runs)."""

    def __init__(self, name, device, fail_first_frame=False):
        self.name, self.device, self.fail = name, device, fail_first_frame
        self.info = E.EngineInfo((14, 14), "fp16", name, "h", "m", False)

    def infer_tensor(self, x):
        if self.fail:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x, None


def _gpu_machine(monkeypatch, count=1):
    from monother_ros.runtime import device as D
    from monother_ros.runtime import selection

    monkeypatch.setitem(selection.PROBES, "torch_cuda", lambda: (True, ""))
    monkeypatch.setitem(selection.PROBES, "tensorrt", lambda: (True, ""))
    monkeypatch.setattr(D, "cuda_device_count", lambda: count)


def test_auto_order_and_fall_through_on_a_gpu_machine(monkeypatch, caplog):
    from monother_ros.errors import EngineFileError
    from monother_ros.runtime.selection import choose_and_build

    _gpu_machine(monkeypatch)
    calls = []

    def builders(trt_error=None, torch_oom=False):
        def trt(dev):
            calls.append(("tensorrt", dev))
            if trt_error:
                raise trt_error
            return _Built("tensorrt", dev)

        def torch_(dev):
            calls.append(("torch", dev))
            return _Built("torch", dev, fail_first_frame=torch_oom)

        def ort(dev):
            calls.append(("onnxruntime", dev))
            return _Built("onnxruntime", dev)

        return {"tensorrt": trt, "torch": torch_, "onnxruntime": ort}

    engine = choose_and_build("auto", "auto", builders())
    assert engine.name == "tensorrt" and engine.device == "cuda:0" and engine.selection.skipped == ()
    assert engine.selection.warnings == ()
    calls.clear()
    engine = choose_and_build("auto", "cuda:0", builders(EngineFileError("cached engine is corrupt; rebuild failed")))
    assert (engine.name, engine.device) == ("torch", "cuda:0") and calls == [("tensorrt", "cuda:0"), ("torch", "cuda:0")]
    assert engine.selection.skipped == (("tensorrt", "failed: EngineFileError: cached engine is corrupt; rebuild failed"),)
    calls.clear()
    caplog.clear()
    with caplog.at_level("WARNING", logger="monother_ros.runtime.selection"):
        engine = choose_and_build("auto", "auto", builders(MemoryError("no"), torch_oom=True))
    assert (engine.name, engine.device) == ("onnxruntime", "cpu")
    reasons = dict(engine.selection.skipped)
    assert reasons["torch"] == "failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert any("a CUDA GPU is visible but onnxruntime runs on the CPU" in w for w in engine.selection.warnings)
    assert sum("trying the next backend" in r.message for r in caplog.records) == 2
    assert any("GPU is visible but onnxruntime runs on the CPU" in r.message for r in caplog.records)
    diag = engine.selection.diagnostics()
    assert diag["backend chosen"] == "onnxruntime" and diag["gpu visible"] == "yes"
    assert diag["backend tensorrt not used"] == "failed: MemoryError: no"
    # device cpu: the GPU candidates are skipped on purpose, not a failure; the CPU is then no warning
    calls.clear()
    engine = choose_and_build("auto", "cpu", builders())
    assert calls == [("onnxruntime", "cpu")] and engine.selection.warnings == ()
    assert dict(engine.selection.skipped) == {"tensorrt": "device cpu requested", "torch": "device cpu requested"}


def test_explicit_backends_and_devices(monkeypatch):
    from monother_ros.runtime.selection import choose_and_build

    built = {n: (lambda dev, n=n: _Built(n, dev)) for n in ("tensorrt", "torch", "onnxruntime")}
    with pytest.raises(BackendUnavailableError, match="device cuda asked for, but torch sees no CUDA GPU"):
        choose_and_build("torch", "cuda", built)
    assert choose_and_build("torch", "auto", built).device == "cpu"
    assert choose_and_build("onnxruntime", "auto", built).device == "cpu"
    _gpu_machine(monkeypatch, count=2)
    assert choose_and_build("torch", "auto", built).device == "cuda:0"
    assert choose_and_build("tensorrt", "cuda:1", built).device == "cuda:1"
    assert choose_and_build("onnxruntime", "auto", built).device == "cpu"  # CUDA provider only when named
    assert choose_and_build("onnxruntime", "cuda:1", built).device == "cuda:1"
    assert choose_and_build("torch", "cpu", built).selection.warnings == ()  # the CPU asked for: no warning
    ort_beside_gpu = choose_and_build("onnxruntime", "auto", built)
    assert "runs on the CPU although a CUDA GPU is visible" in ort_beside_gpu.selection.warnings[0]
    with pytest.raises(ConfigError, match="backend tensorrt runs on a CUDA device"):
        choose_and_build("tensorrt", "cpu", built)
    with pytest.raises(ConfigError, match="device must be"):
        choose_and_build("auto", "gpu0", built)
    with pytest.raises(ConfigError, match="unknown backend"):
        choose_and_build("openvino", "auto", built)


def test_explicit_backend_failure_is_not_replaced(monkeypatch):
    """A named backend that fails to build raises its own error: no silent switch to another one."""
    from monother_ros.errors import EngineFileError
    from monother_ros.runtime.selection import choose_and_build

    _gpu_machine(monkeypatch)

    def broken(dev):
        raise EngineFileError("engine built for another GPU and rebuild disabled")

    with pytest.raises(EngineFileError, match="another GPU"):
        choose_and_build("tensorrt", "auto", {"tensorrt": broken})


def test_model_folder_without_onnx_falls_through_when_export_fails(monkeypatch, tiny, tmp_path):
    """No model.onnx and the export cannot run here (e.g. onnxscript missing on a robot): auto still
    starts (torch), and says why ONNX Runtime was not used."""
    import shutil

    from monother_ros.errors import MonotherError
    from monother_ros.runtime import export

    folder = tmp_path / "no_onnx"
    shutil.copytree(tiny["dir"], folder)
    assert not (folder / MODEL_ONNX_FILE).exists()

    def no_export(*args, **kwargs):
        raise MonotherError("ONNX export of test-tiny at 56x70 failed: No module named 'onnxscript'")

    monkeypatch.setattr(export, "export_onnx", no_export)
    engine = E.make_backend(folder, "auto", cache_dir=tmp_path / "cache", num_threads=1)
    assert engine.info.backend == "torch" and engine.selection.device == "cpu"
    assert "onnxscript" in dict(engine.selection.skipped)["onnxruntime"]
    assert not list((tmp_path / "cache").glob("*.onnx"))  # nothing half-written by the failed export
    with pytest.raises(MonotherError, match="onnxscript"):
        E.make_backend(folder, "onnxruntime", cache_dir=tmp_path / "cache")


def test_real_probe_here():
    """This machine: tensorrt absent or no GPU -> auto is onnxruntime (the probe says why otherwise)."""
    reasons = E.available_backends()
    assert reasons["onnxruntime"] == "" and reasons["torch"] == ""
    expected = "tensorrt" if reasons["tensorrt"] == "" else ("torch" if torch.cuda.is_available() else "onnxruntime")
    assert E.resolve_backend("auto") == expected


# ---------------------------------------------------------------------- metadata
def test_info_is_read_from_onnx_and_config(tiny):
    config = tiny["config"]
    for name in ("ort", "torch"):
        info = tiny[name].info
        assert info.input_hw == tuple(config.input_size)
        assert info.model_name == "test-tiny" and info.has_confidence
        assert info.mean == pytest.approx(config.mean) and info.std == pytest.approx(config.std)
        assert info.precision == "fp32"
    assert tiny["ort"].info.backend == "onnxruntime" and tiny["torch"].info.backend == "torch"
    assert tiny["ort"].info.model_hash == tiny["torch"].info.model_hash  # same weights, same key
    assert isinstance(tiny["ort"], E.Engine) and isinstance(tiny["torch"], E.Engine)
    assert tiny["ort"].thresholds == E.MaskThresholds(config.min_depth_m, config.max_depth_m, 0.0)


# ---------------------------------------------------------------------- parity
def test_torch_and_onnxruntime_agree_at_engine_resolution(tiny):
    h, w = tiny["config"].input_size
    x = np.random.default_rng(2).standard_normal((1, 3, h, w)).astype(np.float32)
    d_ort, c_ort = tiny["ort"].infer_tensor(x)
    d_t, c_t = tiny["torch"].infer_tensor(x)
    assert d_ort.shape == d_t.shape == (1, 1, h, w) and c_ort.shape == (1, 1, h, w)
    assert _rel(d_ort, d_t) < RTOL and _rel(c_ort, c_t) < RTOL
    assert float(d_t.std()) > 0  # not a constant output
    # results are copies: a second call does not change them
    d_keep = d_ort.copy()
    tiny["ort"].infer_tensor(np.zeros_like(x))
    assert np.array_equal(d_keep, d_ort)


@pytest.mark.parametrize("hw", [(56, 70), (61, 83), (37, 100), (120, 90)])
def test_camera_sizes_round_trip_and_backends_agree(tiny, hw):
    img = _thermal(hw, seed=hw[0])
    r_ort = tiny["ort"].infer(img)
    r_t = tiny["torch"].infer(img)
    for r in (r_ort, r_t):
        assert r.depth.shape == hw and r.depth.dtype == np.float32
        assert r.confidence.shape == hw and r.confidence.dtype == np.float32
        assert np.all((r.confidence >= 0) & (r.confidence <= 1))
        assert set(r.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
    assert np.array_equal(np.isnan(r_ort.depth), np.isnan(r_t.depth))
    assert _rel(r_ort.depth, r_t.depth) < RTOL and _rel(r_ort.confidence, r_t.confidence) < RTOL


def test_infer_equals_the_pipeline_done_by_hand(tiny):
    """preprocess (core) -> network -> bilinear align_corners resize back -> mask, done independently."""
    hw = (61, 83)
    img = _thermal(hw, seed=9)
    engine = tiny["torch"]
    config = tiny["config"]
    # ImageNet mean/std differ per channel: [0, 1] thermal, replicated, then per-channel affine
    unit = pp.ThermalPreprocessor(hw, tuple(config.input_size), mean=0.0, std=1.0)(img).copy()
    mean = np.asarray(config.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config.std, np.float32).reshape(1, 3, 1, 1)
    x = (unit - mean) / std
    np.testing.assert_allclose(engine.preprocess(img), x, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        out = engine.model(torch.from_numpy(x), features=False)
        depth = F.interpolate(out.depth, size=hw, mode="bilinear", align_corners=True)[0, 0].numpy()
    result = engine.infer(img)
    valid = (depth > config.min_depth_m) & (depth < config.max_depth_m)
    assert np.array_equal(~np.isnan(result.depth), valid)
    np.testing.assert_allclose(result.depth[valid], depth[valid], rtol=1e-5)


def test_uint8_input_and_bad_inputs(tiny):
    r = tiny["ort"].infer(_thermal((40, 50), dtype=np.uint8))
    assert r.depth.shape == (40, 50) and np.isfinite(r.depth).any()
    with pytest.raises(ValueError, match="uint8 or uint16"):
        tiny["ort"].infer(np.zeros((40, 50), np.float32))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        tiny["ort"].infer(np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        tiny["ort"].infer_tensor(np.zeros((1, 3, 14, 14), np.float32))


# ---------------------------------------------------------------------- masking
def test_nan_masking_by_depth_range_and_confidence(tiny):
    engine = tiny["ort"]
    img = _thermal((64, 80), seed=4)
    try:
        engine.set_thresholds(E.MaskThresholds(0.0, 1e9, 0.0))
        raw = engine.infer(img)
        assert not np.isnan(raw.depth).any()
        lo, hi = np.percentile(raw.depth, [25, 75])
        engine.set_thresholds(E.MaskThresholds(float(lo), float(hi), 0.0))
        ranged = engine.infer(img)
        expected = (raw.depth > lo) & (raw.depth < hi)
        assert np.array_equal(~np.isnan(ranged.depth), expected)
        assert 0.3 < expected.mean() < 0.7
        np.testing.assert_array_equal(ranged.depth[expected], raw.depth[expected])
        c_thr = float(np.median(raw.confidence))
        engine.set_thresholds(E.MaskThresholds(0.0, 1e9, c_thr))
        conf = engine.infer(img)
        assert np.array_equal(~np.isnan(conf.depth), raw.confidence >= c_thr)
        np.testing.assert_array_equal(conf.confidence, raw.confidence)  # confidence itself is not masked
    finally:
        engine.set_thresholds(E.MaskThresholds(1e-3, 80.0, 0.0))


def test_threshold_validation():
    with pytest.raises(ConfigError):
        E.MaskThresholds(5.0, 1.0)
    with pytest.raises(ConfigError):
        E.MaskThresholds(0.0, float("inf"))
    with pytest.raises(ConfigError):
        E.MaskThresholds(0.0, 10.0, 1.5)


def test_thresholds_from_make_backend(tiny):
    engine = E.make_backend(tiny["dir"], "onnxruntime", cache_dir=tiny["cache"], num_threads=1,
                            max_depth_m=20.0, min_confidence=0.25)
    assert engine.thresholds == E.MaskThresholds(1e-3, 20.0, 0.25)


# ---------------------------------------------------------------------- model files
def test_onnx_cache_reuse_and_other_size(tiny):
    path = resolve_onnx(tiny["dir"], None, tiny["cache"])
    mtime = path.stat().st_mtime_ns
    assert resolve_onnx(tiny["dir"], tuple(tiny["config"].input_size), tiny["cache"]) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not re-exported
    assert path.name.startswith("tiny-") and path.name.endswith("-56x70.onnx")


@pytest.mark.slow
def test_other_input_size_is_exported_and_runs(tiny):
    engine = E.make_backend(tiny["dir"], "onnxruntime", input_hw=(42, 84), cache_dir=tiny["cache"], num_threads=1)
    t_engine = E.make_backend(tiny["dir"], "torch", input_hw=(42, 84), num_threads=1)
    assert engine.info.input_hw == (42, 84)
    img = _thermal((50, 90))
    assert _rel(engine.infer(img).depth, t_engine.infer(img).depth) < RTOL
    with pytest.raises(ConfigError, match="multiples"):
        E.make_backend(tiny["dir"], "torch", input_hw=(40, 84))


def test_onnx_file_given_directly(tiny):
    path = resolve_onnx(tiny["dir"], None, tiny["cache"])
    engine = E.make_backend(path, "onnxruntime", num_threads=1)
    assert engine.info.model_hash == tiny["ort"].info.model_hash
    with pytest.raises(ConfigError, match="exported for 56x70"):
        E.make_backend(path, "onnxruntime", input_hw=(42, 84))
    with pytest.raises(CheckpointError, match="checkpoint folder"):
        E.make_backend(path, "torch")


def test_folder_onnx_used_only_when_fresh(tiny, tmp_path):
    import shutil

    folder = tmp_path / "tiny"  # same folder name as the cached export, so the cache entry matches
    shutil.copytree(tiny["dir"], folder)
    onnx_file = resolve_onnx(tiny["dir"], None, tiny["cache"])
    shutil.copy(onnx_file, folder / MODEL_ONNX_FILE)
    assert resolve_onnx(folder, None, tiny["cache"]) == folder / MODEL_ONNX_FILE
    # a stale model.onnx (exported from other weights) is not used: the cached export of the
    # folder's current weights is
    _onnx_variant(onnx_file, folder / MODEL_ONNX_FILE, model_hash="0" * 64)
    assert resolve_onnx(folder, None, tiny["cache"]) == onnx_file
    # a model.onnx of another size is not used for the default size either
    _onnx_variant(onnx_file, folder / MODEL_ONNX_FILE, input_hw=[28, 28])
    assert resolve_onnx(folder, (56, 70), tiny["cache"]) == onnx_file


def test_corrupt_onnx_is_a_clear_error(tiny, tmp_path):
    good = resolve_onnx(tiny["dir"], None, tiny["cache"])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        OnnxEngine(bad)
    with pytest.raises(CheckpointError):
        E.make_backend(bad, "onnxruntime")
    with pytest.raises(CheckpointError, match="not found"):
        E.make_backend(tmp_path / "nothing", "onnxruntime")
    # metadata promising a confidence output the graph does not have
    lying = _onnx_variant(good, tmp_path / "lying.onnx", has_confidence=False)
    with pytest.raises(CheckpointError, match="do not match its metadata"):
        OnnxEngine(lying)


@pytest.mark.slow
def test_corrupt_cached_export_is_redone(tiny, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny["cache"], cache)
    cache_file = resolve_onnx(tiny["dir"], None, cache)
    assert cache_file.parent == cache
    cache_file.write_bytes(b"garbage")
    again = resolve_onnx(tiny["dir"], None, cache)
    assert again == cache_file and read_onnx_info(again).model_hash == tiny["ort"].info.model_hash


# ---------------------------------------------------------------------- hot swap
def _run_while(engine, img, stop, results, errors):
    while not stop.is_set():
        try:
            results.append(engine.infer(img).depth)
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)
            return


def test_torch_swap_weights_while_inferring(tiny):
    config = tiny["config"]
    engine = TorchEngine.from_model_dir(tiny["dir"], num_threads=1)
    img = _thermal((50, 60), seed=11)
    before = engine.infer(img).depth
    torch.manual_seed(123)
    new_state = DepthBranch(config).state_dict()
    stop, results, errors = threading.Event(), [], []
    worker = threading.Thread(target=_run_while, args=(engine, img, stop, results, errors))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        old_hash = engine.info.model_hash
        info = engine.swap_weights(new_state)
        n_at_swap = len(results)
        while len(results) < n_at_swap + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        stop.set()
        worker.join(5)
    assert not errors
    after = engine.infer(img).depth
    assert info.model_hash != old_hash
    assert not np.allclose(np.nan_to_num(after), np.nan_to_num(before))
    # every frame is entirely old or entirely new weights (never a mix)
    for depth in results:
        same_old = np.array_equal(depth, before, equal_nan=True)
        same_new = np.array_equal(depth, after, equal_nan=True)
        assert same_old or same_new
    assert any(np.array_equal(d, after, equal_nan=True) for d in results)


def test_torch_swap_rejects_bad_state_and_keeps_weights(tiny):
    engine = TorchEngine.from_model_dir(tiny["dir"], num_threads=1)
    img = _thermal((30, 40))
    before = engine.infer(img).depth
    state = {k: v.clone() for k, v in engine.model.state_dict().items()}
    key = next(iter(state))
    broken = dict(state)
    broken.pop(key)
    with pytest.raises(CheckpointError, match="missing"):
        engine.swap_weights(broken)
    wrong = dict(state)
    wrong[key] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        engine.swap_weights(wrong)
    assert np.array_equal(engine.infer(img).depth, before, equal_nan=True)


def test_onnx_swap_model_while_inferring(tiny, tmp_path):
    current = resolve_onnx(tiny["dir"], None, tiny["cache"])
    engine = OnnxEngine(current, num_threads=1)
    img = _thermal((50, 60), seed=12)
    before = engine.infer(img).depth
    other = _onnx_variant(current, tmp_path / "other.onnx", perturb=True, model_hash="1" * 64)
    stop, results, errors = threading.Event(), [], []
    worker = threading.Thread(target=_run_while, args=(engine, img, stop, results, errors))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        info = engine.swap_model(other)
        n_at_swap = len(results)
        while len(results) < n_at_swap + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        stop.set()
        worker.join(5)
    assert not errors and info.model_hash == "1" * 64 and engine.info.model_hash == "1" * 64
    after = engine.infer(img).depth
    assert not np.allclose(np.nan_to_num(after), np.nan_to_num(before))
    for depth in results:
        assert np.array_equal(depth, before, equal_nan=True) or np.array_equal(depth, after, equal_nan=True)
    assert any(np.array_equal(d, after, equal_nan=True) for d in results)
    # a model of another input size is refused, the engine keeps running
    small = _onnx_variant(current, tmp_path / "small.onnx", input_hw=[28, 28])
    with pytest.raises(ConfigError, match="cannot swap"):
        engine.swap_model(small)
    assert np.array_equal(engine.infer(img).depth, after, equal_nan=True)


def test_num_threads_recorded(tiny):
    assert tiny["ort"].num_threads == 1
    assert os.cpu_count() is None or torch.get_num_threads() >= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_torch_engine_on_cuda_matches_cpu(tiny, precision, tol):
    gpu = E.make_backend(tiny["dir"], "torch", device="cuda", precision=precision)
    assert gpu.info.precision == precision
    h, w = tiny["config"].input_size
    x = np.random.default_rng(5).standard_normal((1, 3, h, w)).astype(np.float32)
    d_gpu, c_gpu = gpu.infer_tensor(x)
    d_cpu, c_cpu = tiny["torch"].infer_tensor(x)
    assert _rel(d_gpu, d_cpu) < tol and float(np.max(np.abs(c_gpu - c_cpu))) < tol
    img = _thermal((61, 83))
    assert gpu.infer(img).depth.shape == (61, 83)
    gpu.close()


@pytest.mark.slow
def test_dual_model_folder_runs_its_thermal_student(tmp_path):
    from monother_ros.model.dual import MonotherDual

    config = get_preset("test-tiny")
    torch.manual_seed(4)
    dual = MonotherDual(config).eval()
    folder = save_model(dual, config, tmp_path / "dual", kind="monother_dual")
    engine = E.make_backend(folder, "torch", num_threads=1)
    h, w = config.input_size
    x = np.random.default_rng(6).standard_normal((1, 3, h, w)).astype(np.float32)
    with torch.inference_mode():
        ref = dual.student(torch.from_numpy(x), features=False)
    depth, conf = engine.infer_tensor(x)
    np.testing.assert_allclose(depth, ref.depth.numpy(), rtol=1e-6)
    np.testing.assert_allclose(conf, ref.confidence.numpy(), rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_auto_on_a_gpu_machine_runs_on_the_gpu(tiny):
    """With a CUDA GPU, auto never ends on the CPU: TensorRT when installed and building, else torch on CUDA."""
    engine = E.make_backend(tiny["dir"], "auto", cache_dir=tiny["cache"])
    try:
        assert engine.selection.device.startswith("cuda") and engine.info.backend in ("tensorrt", "torch")
        assert engine.selection.gpu_visible and engine.selection.warnings == ()
        assert engine.info.precision == "fp16"
        assert engine.infer(_thermal((61, 83))).depth.shape == (61, 83)
    finally:
        engine.close()

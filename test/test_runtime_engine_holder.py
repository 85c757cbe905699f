"""The one swap route without ROS: ``runtime.engine_holder.EngineHolder`` loads a model folder for its own
backend off the calling thread and swaps it in between frames (torch, ONNX Runtime with the export done by
the holder, the teacher path's pair engine); frame/close life cycle, latest-only requests, failures keep the
running engine, TensorRT refit-or-rate-limited-rebuild, and the TensorRT refit glue against fake tensorrt
modules shaped like the 8.6 and 10.x bindings (``Refitter``; ``OnnxParserRefitter`` from 10.0)."""
from __future__ import annotations

import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from tiny_models import tiny_dual_dir, tiny_student_dir


def _frame(h=50, w=60):
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 13 % 65535).astype(np.uint16)


def _scaled_copy(src: Path, target: Path, factor: float, *, student_of_dual: bool = False) -> Path:
    """A model folder with ``src``'s (student) weights times ``factor``: what the learner writes."""
    import torch

    from monother_ros.model.checkpoints import load_model, save_model

    model, config = load_model(src)
    if student_of_dual:
        model = model.student
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return save_model(model, config, target)


# ------------------------------------------------------------------------------------------ life cycle (fakes)


class _Engine:
    """An engine double: records close(), answers infer with its own constant."""

    def __init__(self, name: str, backend: str = "torch") -> None:
        self.name, self.closed = name, False
        self.info = types.SimpleNamespace(input_hw=(4, 4), model_hash=f"hash-{name}", backend=backend)
        self.thresholds = types.SimpleNamespace(min_depth_m=0.1, max_depth_m=10.0, min_confidence=0.0)

    def infer(self, thermal):
        assert not self.closed, f"{self.name} used after close"
        return self.name

    def close(self):
        self.closed = True


def _holder(loader, **kw):
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings

    outcomes = []
    holder = EngineHolder(EngineSettings(**kw), "first", on_swap=outcomes.append, loader=loader)
    return holder, outcomes


def test_swap_lands_between_frames_and_the_old_engine_closes_after_its_frame():
    def loader(path, settings, current, **_):
        return _Engine(Path(path).name), "load"

    holder, outcomes = _holder(loader)
    first = holder.engine
    with holder.frame() as engine:
        assert engine is first
        holder.request("second")
        assert holder.wait_idle(10)
        assert holder.engine.name == "second" and holder.model_path == Path("second")
        assert not first.closed  # the frame in flight still runs on it
        assert engine.infer(None) == "first"
    assert first.closed  # closed as the frame ended
    with holder.frame() as engine:
        assert engine.infer(None) == "second"
    assert [o.ok for o in outcomes] == [True] and outcomes[0].how == "load" and outcomes[0].model_hash == "hash-second"
    holder.request("second")  # the running model: nothing to do
    assert not holder.busy
    assert holder.close(5) and holder.engine.closed


def test_requests_are_latest_only_and_a_failure_keeps_the_running_engine():
    gate, loaded = threading.Event(), []

    def loader(path, settings, current, **_):
        name = Path(path).name
        if current is not None:
            loaded.append(name)
        if name == "slow":
            gate.wait(10)
        if name == "bad":
            raise ValueError("model.safetensors is corrupt")
        return _Engine(name), "load"

    holder, outcomes = _holder(loader)
    holder.request("slow")
    assert _wait(lambda: loaded == ["slow"])
    holder.request("b")
    holder.request("c")  # replaces b, still waiting
    gate.set()
    assert holder.wait_idle(10)
    assert loaded == ["slow", "c"] and holder.engine.name == "c"
    running = holder.engine
    holder.request("bad")
    assert holder.wait_idle(10)
    assert holder.engine is running and not running.closed
    assert not outcomes[-1].ok and "ValueError: model.safetensors is corrupt" in outcomes[-1].reason
    assert holder.failures == 1 and holder.swaps == 2
    holder.close(5)


def test_close_joins_a_load_in_progress_and_drops_its_engine():
    started, made = threading.Event(), []

    def loader(path, settings, current, **_):
        if current is not None:
            started.set()
            time.sleep(0.5)
        engine = _Engine(Path(path).name)
        made.append(engine)
        return engine, "load"

    holder, outcomes = _holder(loader)
    holder.request("late")
    assert started.wait(10)
    t0 = time.monotonic()
    assert holder.close(10)  # waits for the load instead of leaving a thread inside it
    assert time.monotonic() - t0 >= 0.2
    assert all(e.closed for e in made) and holder.engine.name == "first"
    assert outcomes[-1].reason == "shutting down"
    holder.request("after")  # ignored once closed
    assert not holder.busy


def test_tensorrt_rebuilds_are_rate_limited_refits_are_not():
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings

    loads = []

    def loader(path, settings, current, **_):
        name = Path(path).name
        loads.append((name, time.monotonic()))
        return _Engine(name, backend="tensorrt"), ("rebuild" if name.startswith("re") else "refit")

    holder = EngineHolder(EngineSettings(min_rebuild_interval_s=1.0), "first", loader=loader,
                          needs_rebuild=lambda path, settings, current, **_: Path(path).name.startswith("re"))
    t0 = time.monotonic()
    holder.request("rebuild-1")  # no rebuild yet: at once
    assert holder.wait_idle(10)
    holder.request("refit-1")  # refits are not limited
    assert holder.wait_idle(10)
    holder.request("rebuild-2")  # within the interval: deferred
    time.sleep(0.2)
    assert holder.busy and holder.engine.name == "refit-1"
    holder.request("rebuild-3")  # replaces the deferred one
    assert holder.wait_idle(10)
    names = [n for n, _ in loads]
    assert names == ["first", "rebuild-1", "refit-1", "rebuild-3"]
    rebuild_times = [t for n, t in loads if n.startswith("rebuild")]
    assert rebuild_times[1] - rebuild_times[0] >= 0.95 and rebuild_times[0] - t0 < 0.5
    holder.close(5)


def test_swaps_are_spaced_by_min_swap_interval_and_the_newest_waiting_folder_wins():
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings

    loads = []

    def loader(path, settings, current, **_):
        loads.append((Path(path).name, time.monotonic()))
        return _Engine(Path(path).name, backend="onnxruntime"), "load"

    holder = EngineHolder(EngineSettings(min_swap_interval_s=1.0), "first", loader=loader)
    t0 = time.monotonic()
    holder.request("adapt-1")  # the first swap goes at once
    assert holder.wait_idle(10)
    holder.request("adapt-2")  # within the interval: waits
    time.sleep(0.2)
    assert holder.busy and holder.engine.name == "adapt-1"
    holder.request("adapt-3")  # the learner wrote a newer checkpoint meanwhile: that one is loaded
    assert holder.wait_idle(10)
    names = [n for n, _ in loads]
    assert names == ["first", "adapt-1", "adapt-3"] and holder.engine.name == "adapt-3"
    times = dict(loads)
    assert times["adapt-1"] - t0 < 0.5 and times["adapt-3"] - times["adapt-1"] >= 0.95
    holder.close(5)
    with pytest.raises(Exception, match="min_swap_interval_s"):
        EngineSettings(min_swap_interval_s=-1.0)


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


# ------------------------------------------------------------------------------------------ real backends


def test_torch_swap_runs_the_new_weights(tmp_path):
    from monother_ros.runtime.engine import make_backend
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings

    new = _scaled_copy(tiny_student_dir(), tmp_path / "adapt-000001", 1.1)
    expected = make_backend(new, "torch", num_threads=1).infer(_frame()).depth
    outcomes = []
    holder = EngineHolder(EngineSettings(backend="torch", num_threads=1), tiny_student_dir(), on_swap=outcomes.append)
    before = holder.engine.infer(_frame()).depth
    holder.request(new)
    assert holder.wait_idle(60) and outcomes[-1].ok, outcomes
    with holder.frame() as engine:
        after = engine.infer(_frame()).depth
    np.testing.assert_allclose(after, expected, rtol=1e-6, equal_nan=True)
    assert not np.allclose(np.nan_to_num(before), np.nan_to_num(after))
    holder.close()


def test_onnxruntime_swap_exports_in_the_holder(tmp_path):
    """A learner checkpoint has no ONNX: the holder of an ONNX Runtime engine exports it (its cache)."""
    from monother_ros.runtime.engine import make_backend
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings

    new = _scaled_copy(tiny_student_dir(), tmp_path / "adapt-000002", 0.9)
    assert not (new / "model.onnx").exists()
    cache = tmp_path / "cache"
    outcomes = []
    holder = EngineHolder(EngineSettings(backend="onnxruntime", num_threads=1, cache_dir=str(cache)),
                          tiny_student_dir(), on_swap=outcomes.append)
    holder.request(new)
    assert holder.wait_idle(120) and outcomes[-1].ok, outcomes
    assert holder.engine.info.backend == "onnxruntime" and len(list(cache.glob("*.onnx"))) == 1
    expected = make_backend(new, "torch", num_threads=1).infer(_frame()).depth
    got = holder.engine.infer(_frame()).depth
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    # The new engine has the running engine's input size (the holder's, whatever the folder says).
    assert holder.engine.info.input_hw == make_backend(tiny_student_dir(), "onnxruntime").info.input_hw
    holder.close()


def test_teacher_path_swap_keeps_the_teacher(tmp_path):
    from monother_ros.core.camera import PinholeCamera
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings
    from monother_ros.runtime.pair_engine import PairEngine

    new = _scaled_copy(tiny_dual_dir(), tmp_path / "adapt-000003", 1.05, student_of_dual=True)
    holder = EngineHolder(EngineSettings(backend="torch", teacher=True, num_threads=1), tiny_dual_dir())
    first = holder.engine
    assert isinstance(first, PairEngine)
    holder.request(new)
    assert holder.wait_idle(60) and holder.last_outcome.ok and holder.last_outcome.how == "teacher"
    swapped = holder.engine
    assert isinstance(swapped, PairEngine) and swapped.teacher is first.teacher
    cam = PinholeCamera.from_hfov(64, 48, 60.0)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    thermal = _frame(48, 64)
    reference = PairEngine.from_model_dir(tiny_dual_dir(), num_threads=1).with_student(new)
    got = swapped.infer_pair(thermal, rgb, cam, cam, np.eye(4))
    want = reference.infer_pair(thermal, rgb, cam, cam, np.eye(4))
    np.testing.assert_allclose(got.student_depth, want.student_depth, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got.teacher_confidence, want.teacher_confidence, rtol=1e-6)
    # A folder the teacher path cannot take keeps the running pair engine.
    holder.request(tiny_student_dir() / "model.onnx")
    assert holder.wait_idle(30) and not holder.last_outcome.ok and holder.engine is swapped
    assert "ONNX" in holder.last_outcome.reason
    holder.close()


def test_load_engine_refits_a_running_tensorrt_engine(tmp_path):
    """The TensorRT branch of the holder's loader (no GPU here: a running engine double with the refit API):
    the folder is exported to ONNX at the running size in the loader, then refitted, not rebuilt."""
    from monother_ros.runtime.engine_holder import EngineSettings, load_engine
    from monother_ros.runtime.export import folder_hash, read_onnx_info

    new = _scaled_copy(tiny_student_dir(), tmp_path / "adapt-000004", 1.2)
    asked = []

    class RunningTRT(_Engine):
        def refit_unavailable(self, onnx_path):
            asked.append(Path(onnx_path))
            return ""

        def refitted(self, onnx_path):
            return _Engine(f"refit:{Path(onnx_path).name}", backend="tensorrt")

    current = RunningTRT("running", backend="tensorrt")
    current.info.input_hw = (56, 70)
    engine, how = load_engine(new, EngineSettings(backend="tensorrt", cache_dir=str(tmp_path / "cache")), current)
    assert how == "refit" and engine.name.startswith("refit:")
    info = read_onnx_info(asked[0])
    assert info.model_hash == folder_hash(new) and info.input_hw == (56, 70)


# ------------------------------------------------------------------------------------------ TensorRT refit glue


class _FakeRefitTRT:
    """The refit slice of ``tensorrt``: ``Refitter`` (8.6 and 10.x), ``OnnxParserRefitter`` (10.x only),
    ``Weights``; records what is set."""

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    def __init__(self, version: str, engine_weights: list[str], *, parser_refitter: bool) -> None:
        self.__version__ = version
        self.set_weights: dict[str, np.ndarray] = {}
        self.refitted_from: list[str] = []
        fake = self

        class Weights:
            def __init__(self, array):
                self.array = array

        class Refitter:
            def __init__(self, engine, logger):
                self.engine = engine

            def get_all_weights(self):
                return list(engine_weights)

            def set_named_weights(self, name, weights):
                fake.set_weights[name] = weights.array
                return True

            def get_missing_weights(self):
                if parser_refitter:
                    return [] if fake.refitted_from else list(engine_weights)
                return [n for n in engine_weights if n not in fake.set_weights]

            def refit_cuda_engine(self):
                return True

        class OnnxParserRefitter:
            num_errors = 0

            def __init__(self, refitter, logger):
                pass

            def refit_from_file(self, path):
                fake.refitted_from.append(path)
                return True

        self.Weights, self.Refitter = Weights, Refitter
        if parser_refitter:
            self.OnnxParserRefitter = OnnxParserRefitter


def test_refit_engine_with_the_10x_and_86_bindings_and_its_refusals(tmp_path):
    import onnx
    from onnx import numpy_helper

    from monother_ros.errors import MonotherError
    from monother_ros.runtime.tensorrt_engine import refit_engine, refit_unavailable

    onnx_path = tiny_student_dir() / "model.onnx"
    initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    names = sorted(initializers)[:5]
    engine = types.SimpleNamespace(refittable=True)

    trt10 = _FakeRefitTRT("10.3.0", names, parser_refitter=True)
    assert refit_unavailable(trt10, engine) == ""
    refit_engine(trt10, engine, onnx_path, logger=object())
    assert trt10.refitted_from == [str(onnx_path)] and trt10.set_weights == {}

    trt86 = _FakeRefitTRT("8.6.1", names, parser_refitter=False)
    assert refit_engine(trt86, engine, onnx_path, logger=object()) == len(names)
    assert sorted(trt86.set_weights) == names
    for name in names:
        np.testing.assert_array_equal(trt86.set_weights[name], initializers[name])

    other = _FakeRefitTRT("8.6.1", names + ["not.in.this.onnx"], parser_refitter=False)
    with pytest.raises(MonotherError, match="lacks 1 of the engine's weights"):
        refit_engine(other, engine, onnx_path, logger=object())
    assert "older than 8.6" in refit_unavailable(_FakeRefitTRT("8.5.2", names, parser_refitter=False), engine)
    assert "not built refittable" in refit_unavailable(trt10, types.SimpleNamespace(refittable=False))
    no_refitter = types.SimpleNamespace(__version__="10.3.0")
    assert "no Refitter" in refit_unavailable(no_refitter, engine)
    with pytest.raises(MonotherError, match="cannot refit: .*not built refittable"):
        refit_engine(trt10, types.SimpleNamespace(refittable=False), onnx_path, logger=object())


def test_builds_are_refittable_with_each_release(monkeypatch, tmp_path):
    """REFIT is set on 8.6, 10.x and 11.x (fakes with each release's real attribute sets, test/fake_tensorrt.py)
    and left out on request."""
    import sys

    from fake_tensorrt import make_fake_tensorrt
    from monother_ros.runtime import tensorrt_engine as T

    onnx_path = tiny_student_dir() / "model.onnx"
    for release in ("8.6", "10", "11"):
        fake = make_fake_tensorrt(release)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        T.build_serialized_engine(onnx_path, "fp16", work_dir=tmp_path)
        assert fake.BuilderFlag.REFIT in fake.calls["set_flags"], release
        assert T.refit_unavailable(fake, types.SimpleNamespace(refittable=True)) == "", release
        fake = make_fake_tensorrt(release)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        T.build_serialized_engine(onnx_path, "fp32", work_dir=tmp_path, refittable=False)
        assert fake.BuilderFlag.REFIT not in fake.calls["set_flags"], release


def test_export_child_reports_failures_and_is_killed_on_cancel(tmp_path):
    from monother_ros.errors import MonotherError
    from monother_ros.runtime.engine_holder import resolve_onnx_isolated

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(MonotherError, match="ONNX export of .*broken failed: CheckpointError"):
        resolve_onnx_isolated(broken, None, str(tmp_path / "cache"))
    new = _scaled_copy(tiny_student_dir(), tmp_path / "adapt-000005", 1.3)
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(MonotherError, match="cancelled"):
        resolve_onnx_isolated(new, None, str(tmp_path / "cache"), cancel)
    assert time.monotonic() - t0 < 8.0  # killed, not waited for (an export takes 15-35 s on this machine)
    assert not list((tmp_path / "cache").glob("*.onnx"))  # nothing half-written left as a result


def test_a_folder_pruned_during_the_export_still_loads(tmp_path):
    """The learner keeps only its newest checkpoints: the holder exports from a private hard-linked copy,
    so a folder removed right after the request still loads; the copy is removed afterwards."""
    import shutil

    from monother_ros.runtime.engine import make_backend
    from monother_ros.runtime.engine_holder import EngineHolder, EngineSettings, stage_folder, unstage

    cache = tmp_path / "cache"
    new = _scaled_copy(tiny_student_dir(), tmp_path / "adapt-000009", 0.95)
    expected = make_backend(new, "torch", num_threads=1).infer(_frame()).depth
    staged = stage_folder(new, str(cache))
    assert staged.name == new.name and (staged / "model.safetensors").stat().st_ino == (new / "model.safetensors").stat().st_ino
    unstage(staged)
    assert not staged.parent.exists()
    (cache / ".staging-999999999-0" / "x").mkdir(parents=True)  # left by a process that died
    holder = EngineHolder(EngineSettings(backend="onnxruntime", num_threads=1, cache_dir=str(cache)), tiny_student_dir())
    assert not (cache / ".staging-999999999-0").exists()
    holder.request(new)
    assert _wait(lambda: list(cache.glob(".staging-*")), 10)  # staged: now the learner may prune
    shutil.rmtree(new)
    assert holder.wait_idle(120) and holder.last_outcome.ok, holder.last_outcome
    np.testing.assert_allclose(holder.engine.infer(_frame()).depth, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert not list(cache.glob(".staging-*"))
    holder.close()


@pytest.mark.gpu
def test_tensorrt_refit_on_a_gpu_matches_onnxruntime(tmp_path):
    """Real TensorRT: the running engine is refitted (a copy) with adapted weights, not rebuilt; the copy's
    output equals ONNX Runtime on the new ONNX, and the old engine still runs the old weights."""
    from monother_ros.runtime import engine as E

    ok, reason = E._tensorrt_importable()
    if not ok:
        pytest.skip(f"TensorRT backend unavailable: {reason}")
    from monother_ros.runtime.export import resolve_onnx
    from monother_ros.runtime.onnx_engine import OnnxEngine
    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    cache = tmp_path / "cache"
    new = _scaled_copy(tiny_student_dir(), tmp_path / "adapt-000011", 1.1)
    old_onnx, new_onnx = tiny_student_dir() / "model.onnx", resolve_onnx(new, None, cache)
    running = TensorRTEngine.from_onnx(old_onnx, precision="fp32", cache_dir=cache)
    assert running.refit_unavailable(new_onnx) == ""
    refitted = running.refitted(new_onnx)
    x = np.random.default_rng(0).standard_normal((1, 3, *running.info.input_hw)).astype(np.float32)
    for engine, onnx_path in ((refitted, new_onnx), (running, old_onnx)):
        want = OnnxEngine(onnx_path, num_threads=1).infer_tensor(x)[0]
        got = engine.infer_tensor(x)[0]
        assert float(np.max(np.abs(got - want)) / np.max(np.abs(want))) < 1e-3
    assert refitted.info.model_hash != running.info.model_hash
    refitted.close()
    running.close()

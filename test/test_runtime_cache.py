"""TensorRT engine cache: keys, sidecars, corruption checks and the load-or-build logic (pure Python)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from monother_ros.errors import EngineFileError
from monother_ros.runtime import cache as C

KEY = C.EngineCacheKey(
    tensorrt_version="10.3.0",
    gpu_name="NVIDIA GeForce RTX 4090",
    compute_capability=(8, 9),
    input_shape=(1, 3, 252, 644),
    precision="fp16",
    model_hash="ab" * 32,
    onnx_sha256="ef" * 32,
    sm_count=128,
    total_memory_bytes=25_757_220_864,
    builder_settings="recipe2-weak-ws1073741824",
)


def test_digest_is_deterministic_and_depends_on_every_field():
    assert KEY.digest() == replace(KEY).digest()
    assert len(KEY.digest()) == 64
    variants = [
        replace(KEY, tensorrt_version="8.6.1"),
        replace(KEY, gpu_name="Orin"),
        replace(KEY, compute_capability=(8, 7)),
        replace(KEY, input_shape=(1, 3, 518, 518)),
        replace(KEY, precision="fp32"),
        replace(KEY, model_hash="cd" * 32),
        replace(KEY, onnx_sha256="01" * 32),
        # Jetson Orin NX 16 GB vs AGX Orin 32 GB: same name family and compute capability 8.7
        replace(KEY, sm_count=8),
        replace(KEY, total_memory_bytes=16_000_000_000),
        replace(KEY, builder_settings="recipe2-strong-ws1073741824"),
    ]
    digests = {v.digest() for v in variants}
    assert KEY.digest() not in digests and len(digests) == len(variants)


def test_key_round_trips_through_json_fields():
    again = C.EngineCacheKey.from_fields(json.loads(json.dumps(KEY.fields())))
    assert again == KEY and again.digest() == KEY.digest()
    # lists from JSON compare equal to tuples
    assert C.EngineCacheKey(**{**KEY.fields()}) == KEY


def test_bad_precision_and_malformed_fields():
    with pytest.raises(ValueError, match="precision"):
        replace(KEY, precision="int8")
    with pytest.raises(EngineFileError, match="malformed"):
        C.EngineCacheKey.from_fields({"gpu_name": "x"})


def test_engine_paths_name_model_and_key(tmp_path):
    engine, sidecar = C.engine_paths(tmp_path, "monother-default", KEY)
    assert engine.parent == tmp_path and sidecar.parent == tmp_path
    assert engine.name == f"monother-default-{KEY.digest()[:16]}.engine"
    assert sidecar.name == f"monother-default-{KEY.digest()[:16]}.json"
    weird, _ = C.engine_paths(tmp_path, "../my model/x", KEY)
    assert weird.parent == tmp_path and "/" not in weird.name and " " not in weird.name


def test_write_read_round_trip_and_sidecar_fields(tmp_path):
    engine, sidecar = C.engine_paths(tmp_path, "m", KEY)
    payload = os.urandom(4096)
    C.write_cached_engine(engine, sidecar, payload, KEY)
    assert C.read_cached_engine(engine, sidecar, KEY) == payload
    meta = json.loads(sidecar.read_text())
    assert meta["key"]["gpu_name"] == KEY.gpu_name and meta["key"]["input_shape"] == [1, 3, 252, 644]
    assert meta["engine_size"] == 4096 and meta["key_digest"] == KEY.digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([engine.name, sidecar.name])  # no temp files


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_corrupt_engine_is_detected(tmp_path, damage):
    engine, sidecar = C.engine_paths(tmp_path, "m", KEY)
    C.write_cached_engine(engine, sidecar, b"\x01" * 1000, KEY)
    data = bytearray(engine.read_bytes())
    if damage == "flip":
        data[500] ^= 0xFF
    elif damage == "truncate":
        data = data[:600]
    else:
        data += b"x"
    engine.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="corrupt"):
        C.read_cached_engine(engine, sidecar, KEY)


def test_mismatched_key_names_the_differing_field(tmp_path):
    engine, sidecar = C.engine_paths(tmp_path, "m", KEY)
    C.write_cached_engine(engine, sidecar, b"engine", KEY)
    other = replace(KEY, tensorrt_version="8.6.1")
    with pytest.raises(EngineFileError, match=r"tensorrt_version: cached '10.3.0' != wanted '8.6.1'"):
        C.read_cached_engine(engine, sidecar, other)


def test_missing_or_malformed_sidecar(tmp_path):
    engine, sidecar = C.engine_paths(tmp_path, "m", KEY)
    with pytest.raises(EngineFileError, match="no cached engine"):
        C.read_cached_engine(engine, sidecar, KEY)
    engine.write_bytes(b"engine")
    with pytest.raises(EngineFileError, match="no sidecar"):
        C.read_cached_engine(engine, sidecar, KEY)
    sidecar.write_text("{not json")
    with pytest.raises(EngineFileError, match="unreadable"):
        C.read_cached_engine(engine, sidecar, KEY)
    sidecar.write_text(json.dumps({"format": 999}))
    with pytest.raises(EngineFileError, match="unknown format"):
        C.read_cached_engine(engine, sidecar, KEY)


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    C.atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(C.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        C.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # temporary file removed


class _FakeTRT:
    """Stands in for TensorRT: builds bytes, deserialises only bytes it built."""

    def __init__(self, payload: bytes = b"ENGINE" * 10) -> None:
        self.payload = payload
        self.builds = 0

    def build(self) -> bytes:
        self.builds += 1
        return self.payload

    def deserialize(self, data: bytes):
        return ("engine", data) if data.startswith(b"ENGINE") else None


def test_load_or_build_builds_once_then_reuses(tmp_path):
    trt = _FakeTRT()
    engine_file, sidecar = C.engine_paths(tmp_path, "m", KEY)
    eng, built = C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)
    assert built and trt.builds == 1 and eng == ("engine", trt.payload)
    eng2, built2 = C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)
    assert not built2 and trt.builds == 1 and eng2 == eng
    # another key (e.g. a new TensorRT version) -> another file, built separately
    other = replace(KEY, tensorrt_version="10.4.0")
    f2, s2 = C.engine_paths(tmp_path, "m", other)
    assert f2 != engine_file
    _, built3 = C.load_or_build(f2, s2, other, deserialize=trt.deserialize, build=trt.build)
    assert built3 and trt.builds == 2


def test_corrupt_engine_is_rebuilt_or_refused(tmp_path):
    trt = _FakeTRT()
    engine_file, sidecar = C.engine_paths(tmp_path, "m", KEY)
    C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)
    engine_file.write_bytes(b"garbage")
    with pytest.raises(EngineFileError, match="rebuild disabled"):
        C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build, rebuild=False)
    assert trt.builds == 1
    eng, built = C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)
    assert built and trt.builds == 2 and eng == ("engine", trt.payload)
    assert C.read_cached_engine(engine_file, sidecar, KEY) == trt.payload


def test_engine_tensorrt_rejects_is_rebuilt(tmp_path):
    """Checksum fine but TensorRT cannot deserialise (e.g. an engine of an incompatible build)."""
    engine_file, sidecar = C.engine_paths(tmp_path, "m", KEY)
    C.write_cached_engine(engine_file, sidecar, b"OLDFORMAT", KEY)
    trt = _FakeTRT()
    eng, built = C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)
    assert built and eng[1] == trt.payload


def test_fresh_build_that_does_not_deserialise_is_an_error(tmp_path):
    trt = _FakeTRT(payload=b"BROKEN")
    engine_file, sidecar = C.engine_paths(tmp_path, "m", KEY)
    with pytest.raises(EngineFileError, match="freshly built"):
        C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)


def test_orin_modules_with_the_same_compute_capability_get_different_engines(tmp_path):
    """An engine built on one Orin module is not loaded on another one (same CC 8.7, other SMs/memory)."""
    orin_nx = replace(KEY, gpu_name="Orin", compute_capability=(8, 7), sm_count=8, total_memory_bytes=15_655_829_504)
    agx = replace(orin_nx, sm_count=16, total_memory_bytes=32_000_000_000)
    f_nx, s_nx = C.engine_paths(tmp_path, "m", orin_nx)
    C.write_cached_engine(f_nx, s_nx, b"ENGINE-nx", orin_nx)
    assert C.engine_paths(tmp_path, "m", agx)[0] != f_nx
    with pytest.raises(EngineFileError, match=r"sm_count: cached 8 != wanted 16.*total_memory_bytes"):
        C.read_cached_engine(f_nx, s_nx, agx)


def test_old_sidecar_format_is_rebuilt(tmp_path):
    """A sidecar of the previous layout (no ONNX hash / SM count) is stale: rebuilt, never trusted."""
    engine_file, sidecar = C.engine_paths(tmp_path, "m", KEY)
    engine_file.write_bytes(b"ENGINE-old")
    old = {"format": 1, "key": {k: v for k, v in KEY.fields().items() if k in (
        "tensorrt_version", "gpu_name", "compute_capability", "input_shape", "precision", "model_hash")}}
    sidecar.write_text(json.dumps(old))
    trt = _FakeTRT()
    eng, built = C.load_or_build(engine_file, sidecar, KEY, deserialize=trt.deserialize, build=trt.build)
    assert built and eng == ("engine", trt.payload)


def test_deserialiser_that_raises_means_rebuild(tmp_path):
    """Some TensorRT versions raise on an engine of another build instead of returning None."""
    engine_file, sidecar = C.engine_paths(tmp_path, "m", KEY)
    C.write_cached_engine(engine_file, sidecar, b"FOREIGN", KEY)
    trt = _FakeTRT()

    def deserialize(data):
        if data == b"FOREIGN":
            raise RuntimeError("engine plan file is generated on an incompatible device")
        return trt.deserialize(data)

    eng, built = C.load_or_build(engine_file, sidecar, KEY, deserialize=deserialize, build=trt.build)
    assert built and eng == ("engine", trt.payload) and C.read_cached_engine(engine_file, sidecar, KEY) == trt.payload


def _engine_for(tmp_path, model, n, mtime):
    key = replace(KEY, model_hash=f"{n:064x}")
    engine_file, sidecar = C.engine_paths(tmp_path, model, key)
    C.write_cached_engine(engine_file, sidecar, b"ENGINE%d" % n, key)
    os.utime(engine_file, ns=(mtime, mtime))
    return engine_file


def test_prune_keeps_the_newest_k_per_model(tmp_path):
    files = [_engine_for(tmp_path, "model-a", n, 1_000_000_000 * (n + 1)) for n in range(5)]
    other = [_engine_for(tmp_path, "model-b", n, 1_000) for n in range(2)]
    (tmp_path / "model-a-0123456789abcdef-56x70.onnx").write_bytes(b"onnx")  # not an engine: untouched
    (tmp_path / "timing-0123456789abcdef.cache").write_bytes(b"t")
    removed = C.prune_engines(tmp_path, "model-a", keep=2)
    assert sorted(removed) == sorted(files[:3])
    for f in files[:3]:
        assert not f.exists() and not f.with_suffix(".json").exists()
    for f in files[3:] + other:
        assert f.exists() and f.with_suffix(".json").exists()
    assert (tmp_path / "model-a-0123456789abcdef-56x70.onnx").exists()
    assert (tmp_path / "timing-0123456789abcdef.cache").exists()
    # the protected engine is kept even when it is the oldest
    oldest_b = other[0]
    assert C.prune_engines(tmp_path, "model-b", keep=1, protect=oldest_b) == [other[1]]
    assert oldest_b.exists()
    with pytest.raises(ValueError, match="keep"):
        C.prune_engines(tmp_path, "model-a", keep=0)
    assert C.prune_engines(tmp_path / "missing", "model-a") == []


def test_load_or_build_prunes_after_a_build(tmp_path):
    trt = _FakeTRT()
    for n in range(3):
        _engine_for(tmp_path, "m", n, 1_000 * (n + 1))
    key = replace(KEY, model_hash="f" * 64)
    engine_file, sidecar = C.engine_paths(tmp_path, "m", key)
    C.load_or_build(engine_file, sidecar, key, deserialize=trt.deserialize, build=trt.build, keep=2,
                    model_name="m")
    engines = sorted(p.name for p in tmp_path.glob("*.engine"))
    assert len(engines) == 2 and engine_file.name in engines
    assert C.DEFAULT_KEEP_ENGINES == 3


def test_file_sha256_covers_external_data(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph")
    alone = C.file_sha256(model)
    (tmp_path / "m.onnx.data").write_bytes(b"weights")
    with_data = C.file_sha256(model)
    assert alone != with_data
    (tmp_path / "m.onnx.data").write_bytes(b"weightz")
    assert C.file_sha256(model) != with_data


def test_cache_module_does_not_import_tensorrt_or_torch():
    code = ("import sys, monother_ros.runtime.cache, monother_ros.runtime.engine; "
            "print('tensorrt' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["False", "False"]

"""bench/bench_gpu.py --smoke: every section runs on the CPU, the JSON holds sane values, and the
benchmark imports nothing a lent GPU machine lacks (rclpy, rosbags, matplotlib are blocked here)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Run the bench with the modules a bare GPU machine does not have made unimportable.
_RUNNER = (
    "import runpy, sys\n"
    "for name in ('rclpy', 'rosbags', 'matplotlib', 'tensorrt'):\n"
    "    sys.modules[name] = None  # import raises ImportError\n"
    "sys.argv = ['bench_gpu.py'] + sys.argv[1:]\n"
    "runpy.run_path({bench!r}, run_name='__main__')\n"
)


def test_bench_gpu_smoke_writes_a_full_report(tmp_path):
    out = tmp_path / "bench_gpu.json"
    code = _RUNNER.format(bench=str(REPO / "bench" / "bench_gpu.py"))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, "--smoke", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"] == "cpu" and report["errors"] == {}
    assert set(report["sections"]) == {"student", "dav2s", "vitl", "train"}
    for key, (input_hw, camera_hw) in {"student": ([56, 70], [64, 80]), "dav2s": ([56, 56], [56, 56]),
                                       "vitl": ([42, 98], [48, 96])}.items():
        sec = report["sections"][key]
        assert sec["input_hw"] == input_hw and sec["camera_hw"] == camera_hw
        assert set(sec["runs"]) == {"fp32", "fp16"}
        for run in sec["runs"].values():
            assert run["precision"] == "fp32"  # fp16 weights only on CUDA
            assert run["net_eager_ms"] > 0 and run["frame_graph_ms"] > 0 and run["frame_eager_ms"] > 0
            assert run["frame_cloud_graph_ms"] > 0 and run["frame_numpy_prepost_ms"] > 0
            assert run["net_graph_ms"] is None and run["graph_captured"] is False
            assert run["tensorrt_ms"] is None and run["tensorrt_note"]
            assert run["peak_mem_mib"] is None
            assert set(run["frame_timings_ms"]) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
            assert 0.0 <= run["valid_fraction"] <= 1.0
        # Both runs are fp32 on the CPU: the same numbers.
        assert sec["fp16_vs_fp32_max_rel"] == 0.0
    # The shipped (trained) model gives valid depth on most of a thermal frame.
    assert report["sections"]["student"]["runs"]["fp32"]["valid_fraction"] > 0.9
    train = report["sections"]["train"]
    assert set(train["variants"]) == {"deterministic fp32", "fp32", "bf16", "deterministic bf16"}
    assert all(math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 and r["finite"]
               for r in train["variants"].values())
    # The table is printed last, after every section's figures.
    tail = proc.stdout.strip().splitlines()
    assert tail[-1].startswith("JSON:") and tail[-2].startswith("total")
    assert any("MonoTher ViT-L" in line for line in tail)


def test_bench_gpu_refuses_unknown_sections_and_a_missing_gpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bench = str(REPO / "bench" / "bench_gpu.py")
    bad = subprocess.run([sys.executable, bench, "--smoke", "--sections", "nope"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "unknown sections" in bad.stderr
    import torch

    if not torch.cuda.is_available():
        no_gpu = subprocess.run([sys.executable, bench, "--out", str(tmp_path / "x.json")], env=env,
                                capture_output=True, text=True, timeout=300)
        assert no_gpu.returncode == 2 and "no CUDA device" in no_gpu.stderr
        assert not (tmp_path / "x.json").exists()

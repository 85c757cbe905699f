"""Benchmark: ONNX Runtime (CPU) vs PyTorch eager on the same model and input, and the cost of pre- and
postprocessing relative to the network.

    .venv/bin/python bench/bench_runtime.py                      # both models, all cores
    .venv/bin/python bench/bench_runtime.py --threads 1 --repeats 10 --models monother-default

Random weights (timing does not depend on training). For each model it prints milliseconds per frame
(median, and minimum, of ``--repeats`` timed runs after warm-up, the two backends interleaved so that load from other
processes hits both alike), the ratio torch / ONNX Runtime (goal >= 1.5), the threads used, and
preprocessing + postprocessing time as a fraction of ONNX Runtime's network time (goal < 5 %) for a
thermal frame of the camera size given per model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# model preset -> (network input (h, w), camera frame (H, W) for the pre/post measurement)
MODELS: dict[str, tuple[tuple[int, int] | None, tuple[int, int]]] = {
    "monother-default": (None, (512, 640)),  # FLIR Boson/Tau-class 640x512 camera, config input size
    "dav2-metric-vits": ((252, 644), (256, 640)),  # MS2 thermal 640x256 -> 644x252
}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def bench_model(preset: str, input_hw, camera_hw, threads: int, repeats: int, warmup: int) -> dict:
    import torch

    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.variants import get_preset
    from monother_ros.runtime.export import export_onnx, state_dict_hash
    from monother_ros.runtime.onnx_engine import OnnxEngine
    from monother_ros.runtime.torch_engine import TorchEngine

    config = get_preset(preset)
    torch.manual_seed(0)
    model = DepthBranch(config).eval()
    model_hash = state_dict_hash(model, config)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / f"{preset}.onnx"
        t0 = time.perf_counter()
        info = export_onnx(model, config, onnx_path, input_hw=input_hw, model_hash=model_hash, verify=False)
        export_s = time.perf_counter() - t0
        ort_engine = OnnxEngine(onnx_path, num_threads=threads)
        torch_engine = TorchEngine(model, config, model_hash=model_hash, input_hw=info.input_hw,
                                   num_threads=threads)
        h, w = info.input_hw
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        d_ort, _ = ort_engine.infer_tensor(x)
        d_torch, _ = torch_engine.infer_tensor(x)
        max_rel = float(np.max(np.abs(d_ort - d_torch)) / np.max(np.abs(d_torch)))
        for _ in range(warmup):
            ort_engine.infer_tensor(x)
            torch_engine.infer_tensor(x)
        t_ort, t_torch = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ort_engine.infer_tensor(x)
            t1 = time.perf_counter()
            torch_engine.infer_tensor(x)
            t2 = time.perf_counter()
            t_ort.append(t1 - t0)
            t_torch.append(t2 - t1)

        # Full frame through ONNX Runtime: the engine's own per-stage timings.
        rng = np.random.default_rng(1)
        yy = np.linspace(0, 1, camera_hw[0])[:, None]
        frame = (20000 + 8000 * yy + rng.normal(0, 300, camera_hw)).astype(np.uint16)
        for _ in range(warmup):
            ort_engine.infer(frame)
        pre, net, post = [], [], []
        for _ in range(repeats):
            t = ort_engine.infer(frame).timings
            pre.append(t["preprocess_ms"])
            net.append(t["inference_ms"])
            post.append(t["postprocess_ms"])
        ort_engine.close()
        torch_engine.close()
    ort_ms, torch_ms = _median_ms(t_ort), _median_ms(t_torch)
    pre_ms, net_ms, post_ms = statistics.median(pre), statistics.median(net), statistics.median(post)
    # Minima too: on a shared machine they are the closest to the uncontended cost of each stage.
    best = {"ort_ms": min(t_ort) * 1e3, "torch_ms": min(t_torch) * 1e3, "pre_ms": min(pre), "post_ms": min(post),
            "net_ms": min(net)}
    return {
        "best": best,
        "preset": preset, "input_hw": info.input_hw, "camera_hw": camera_hw, "threads": threads,
        "torch_threads": torch.get_num_threads(), "ort_ms": ort_ms, "torch_ms": torch_ms,
        "ratio": torch_ms / ort_ms, "pre_ms": pre_ms, "post_ms": post_ms, "net_ms": net_ms,
        "prepost_fraction": (pre_ms + post_ms) / net_ms, "max_rel_diff": max_rel, "export_s": export_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both backends (default: all cores)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"cores: {os.cpu_count()}, threads per backend: {args.threads}, load average: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ok = True
    for preset in args.models:
        input_hw, camera_hw = MODELS[preset]
        r = bench_model(preset, input_hw, camera_hw, args.threads, args.repeats, args.warmup)
        h, w = r["input_hw"]
        print(f"\n{preset} at {h}x{w} (export {r['export_s']:.1f} s, ORT vs torch max rel diff "
              f"{r['max_rel_diff']:.1e})")
        print(f"  torch eager    {r['torch_ms']:8.1f} ms/frame  ({r['torch_threads']} threads)")
        print(f"  onnxruntime    {r['ort_ms']:8.1f} ms/frame  ({r['threads']} intra-op threads)")
        print(f"  ratio torch/ORT {r['ratio']:7.2f}x  (goal >= 1.5)")
        b = r["best"]
        print(f"  minima: torch {b['torch_ms']:.1f} ms, ORT {b['ort_ms']:.1f} ms, ratio "
              f"{b['torch_ms'] / b['ort_ms']:.2f}x")
        # The engine's own per-stage timings of full frames (infer) through ONNX Runtime.
        best_fraction = (b["pre_ms"] + b["post_ms"]) / b["net_ms"]
        print(f"  pre+post on a {camera_hw[1]}x{camera_hw[0]} mono16 frame, as a fraction of the ORT network "
              f"({r['threads']} threads; goal < 5 %):")
        print(f"    medians: pre {r['pre_ms']:.2f} + post {r['post_ms']:.2f} = {r['pre_ms'] + r['post_ms']:.2f} ms "
              f"/ network {r['net_ms']:.1f} ms = {100 * r['prepost_fraction']:.1f} %")
        print(f"    minima:  pre {b['pre_ms']:.2f} + post {b['post_ms']:.2f} = {b['pre_ms'] + b['post_ms']:.2f} ms "
              f"/ network {b['net_ms']:.1f} ms = {100 * best_fraction:.1f} %")
        ok &= r["ratio"] >= 1.5 and r["prepost_fraction"] < 0.05
    print("\nall goals met" if ok else "\nsome goals not met (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

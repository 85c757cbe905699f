"""GPU benchmark of the torch engine: fp32 vs fp16, eager vs CUDA graph (vs TensorRT), whole frames, training.

    python3 bench/bench_gpu.py                          # on a CUDA machine; JSON to $OUT/bench_gpu.json
    python3 bench/bench_gpu.py --out /tmp/bench_gpu.json --sections student,dav2s
    python3 bench/bench_gpu.py --smoke --out /tmp/s.json  # CPU, tiny sizes, a few iterations (the test suite)
    bash bench/gpu_check.sh                             # this benchmark + the gpu-marked tests (device check)

Sections (each a function in ``SECTIONS``; one that fails is reported in the JSON's ``errors`` and the
others still run):

* ``student``: the shipped model (``engines/default``, 112x140 network) on a 640x512 thermal frame;
* ``dav2s``: DAv2-S metric (``dav2-metric-vits``) at 518x518 on a 518x518 frame, random weights;
* ``vitl``: the MonoTher ViT-L thermal branch (``monother-ms2-vitl``, 252x644 network) on a 256x640
  frame, random weights;
* ``train``: label-free (stage 2) optimiser steps of the ViT-L dual model, batch 4, 252x644, samples/s
  under the training speed options (``bench/gpu_train_section.py``: deterministic fp32, fp32, bf16,
  deterministic bf16).

For each network and precision (fp32, fp16): network time eager and replayed from a CUDA graph (median of
CUDA-event intervals, milliseconds, input already on the device), TensorRT (where ``tensorrt`` imports;
``infer_tensor`` wall time incl. host copies), the whole frame through ``TorchEngine.infer`` (raw uint16
frame in, depth + confidence numpy out, pre/post on the GPU; wall-clock median) with and without graphs,
the engine's peak GPU memory (weights + activations + graph pool, MiB above what was allocated before
it), and the fp16-vs-fp32 depth difference ``max |d16 - d32| / max |d32|`` of the whole frame.
Random weights: timing does not depend on training; the difference is a numerical check.

Imports: torch, numpy, onnx/onnxruntime (only for TensorRT), safetensors, yaml and this package's
runtime, model, distill and training modules (no ROS, no rosbags, no plotting). The table is printed
last; the JSON holds everything.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402


@dataclass(frozen=True)
class Settings:
    """One run's sizes and iteration counts (``--smoke`` shrinks everything to CPU-size)."""

    smoke: bool
    device: str
    iters: dict[str, int]
    warmup: int
    fp32_residual_stream: bool = True  # TorchEngine option for the fp16 runs (runtime.half)


@dataclass(frozen=True)
class NetCase:
    """A network to time: how to build it, its network size and the camera frame size."""

    name: str
    build: Callable[[str], tuple[torch.nn.Module, Any, str]]  # device -> (model, config, hash)
    input_hw: tuple[int, int]
    camera_hw: tuple[int, int]


# ---------------------------------------------------------------------------------------- helpers


def _thermal_frame(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A thermal-like uint16 frame: vertical gradient, structure, noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    img = 20000 + 8000 * (yy / h) + 3000 * np.sin(xx / 9.0) + rng.normal(0, 300, size=hw)
    return np.clip(img, 0, 65535).astype(np.uint16)


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(a[ok] - b[ok])) / max(float(np.max(np.abs(b[ok]))), 1e-12))


def _median_device_ms(fn: Callable[[], Any], iters: int, warmup: int, cuda: bool) -> float:
    """Median milliseconds of ``fn``: CUDA-event intervals on the current stream, else wall clock."""
    for _ in range(warmup):
        fn()
    if not cuda:
        samples = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1e3)
        return statistics.median(samples)
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def _median_wall_ms(fn: Callable[[], Any], iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def _graph_of(fn: Callable[[], Any], warmup: int) -> Callable[[], None]:
    """Capture ``fn`` (static inputs) as a CUDA graph after ``warmup`` eager calls on a side stream."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# ---------------------------------------------------------------------------------------- networks


def _shipped(device: str):
    from monother_ros.runtime.export import load_student

    model, config, model_hash = load_student(REPO / "engines" / "default")
    return model.to(device), config, model_hash


def _random_branch(config):
    def build(device: str):
        from monother_ros.model.branch import DepthBranch

        torch.manual_seed(0)
        with torch.device(device):  # random init of a ViT-L on the GPU: seconds faster than on the CPU
            model = DepthBranch(config).eval()
        return model, config, f"random-{config.name}"

    return build


def _cases(settings: Settings) -> dict[str, NetCase]:
    from monother_ros.model.variants import get_preset

    if settings.smoke:  # the same code paths at CPU sizes
        tiny = dict(embed_dim=64, depth=4, num_heads=2, taps=(0, 1, 2, 3))
        dav2s = get_preset("dav2-metric-vits").replace(**tiny, features=16, out_channels=(8, 16, 32, 32))
        vitl = get_preset("monother-ms2-vitl").replace(**tiny, features=32, out_channels=(16, 32, 64, 64),
                                                       n_bins=16, bin_embedding_dim=32)
        return {
            "student": NetCase("shipped student (engines/default)", _shipped, (56, 70), (64, 80)),
            "dav2s": NetCase("DAv2-S metric (smoke size)", _random_branch(dav2s), (56, 56), (56, 56)),
            "vitl": NetCase("MonoTher ViT-L thermal (smoke size)", _random_branch(vitl), (42, 98), (48, 96)),
        }
    return {
        "student": NetCase("shipped student (engines/default)", _shipped, (112, 140), (512, 640)),
        "dav2s": NetCase("DAv2-S metric", _random_branch(get_preset("dav2-metric-vits")), (518, 518), (518, 518)),
        "vitl": NetCase("MonoTher ViT-L thermal", _random_branch(get_preset("monother-ms2-vitl")), (252, 644), (256, 640)),
    }


# ---------------------------------------------------------------------------------------- measurements


def _peak_mib(cuda: bool, baseline: int, shared_weights_bytes: int) -> float | None:
    """The engine's peak: allocations above ``baseline`` plus the weights it shares with the source model
    (an fp32 engine runs the source module itself), so fp32 and fp16 engines compare alike."""
    if not cuda:
        return None
    return (torch.cuda.max_memory_allocated() - baseline + shared_weights_bytes) / 2**20


def _tensorrt_ms(model, config, case: NetCase, precision: str, settings: Settings, iters: int) -> tuple[float | None, str]:
    """TensorRT ``infer_tensor`` median ms, or (None, why not)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # not installed (the usual case on a lent machine), or a broken install
        return None, f"tensorrt not importable ({exc.__class__.__name__})"
    from monother_ros.runtime.export import export_onnx
    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    try:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(copy.deepcopy(model).float().cpu(), config, onnx_path, input_hw=case.input_hw,
                        model_hash="bench", verify=False)
            engine = TensorRTEngine.from_onnx(onnx_path, precision=precision, cache_dir=Path(tmp) / "cache")
            x = np.random.default_rng(0).standard_normal((1, 3, *case.input_hw)).astype(np.float32)
            try:
                return _median_wall_ms(lambda: engine.infer_tensor(x), iters, settings.warmup), ""
            finally:
                engine.close()
    except Exception as exc:  # a failed export/build is a figure we could not get, not a failed section
        return None, f"TensorRT failed: {exc.__class__.__name__}: {exc}"


def _run_precision(model, config, model_hash: str, case: NetCase, precision: str, settings: Settings,
                   iters: int, frame: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    from monother_ros.runtime.torch_engine import TorchEngine

    cuda = settings.device.startswith("cuda")
    row: dict[str, Any] = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if cuda else 0
    kw = dict(model_hash=model_hash, input_hw=case.input_hw, precision=precision, device=settings.device,
              fp32_residual_stream=settings.fp32_residual_stream)
    engine = TorchEngine(model, config, **kw)  # graphs on (CUDA), pre/post on the device
    row["precision"] = engine.info.precision
    x = torch.randn(1, 3, *case.input_hw, device=settings.device)
    with torch.inference_mode():
        row["net_eager_ms"] = _median_device_ms(lambda: engine.forward_device(x), iters, settings.warmup, cuda)
        if cuda:
            replay = _graph_of(lambda: engine.forward_device(x), settings.warmup)
            row["net_graph_ms"] = _median_device_ms(replay, iters, settings.warmup, cuda)
            row["net_graph_note"] = ""
        else:
            row["net_graph_ms"], row["net_graph_note"] = None, "CUDA graphs need a CUDA device"
    row["frame_graph_ms"] = _median_wall_ms(lambda: engine.infer(frame), iters, settings.warmup)
    row["graph_captured"] = engine.graph_captured
    result = engine.infer(frame)
    row["frame_timings_ms"] = {k: round(v, 4) for k, v in result.timings.items()}
    depth = result.depth
    row["valid_fraction"] = float(np.isfinite(depth).mean())
    shared = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) \
        if engine.model is model else 0
    row["peak_mem_mib"] = _peak_mib(cuda, baseline, shared)
    # The same frames with the organised point cloud computed too (one more device pass, 16 B/pixel back).
    from monother_ros.core.camera import PinholeCamera

    engine.set_cloud_camera(PinholeCamera.from_hfov(case.camera_hw[1], case.camera_hw[0], 50.0))
    row["frame_cloud_graph_ms"] = _median_wall_ms(lambda: engine.infer(frame), iters, settings.warmup)
    engine.close()
    del engine
    if cuda:
        eager = TorchEngine(model, config, cuda_graphs=False, **kw)
        row["frame_eager_ms"] = _median_wall_ms(lambda: eager.infer(frame), iters, settings.warmup)
        eager.close()
        del eager
    else:
        row["frame_eager_ms"] = row["frame_graph_ms"]  # the CPU path has no graphs
    # Reference: the numpy pre/post-processing of the CPU path around the same network (eager).
    host_prepost = TorchEngine(model, config, cuda_graphs=False, device_frames=False, **kw)
    row["frame_numpy_prepost_ms"] = _median_wall_ms(lambda: host_prepost.infer(frame), iters, settings.warmup)
    host_prepost.close()
    del host_prepost
    ms, why = _tensorrt_ms(model, config, case, precision, settings, iters) if cuda else (None, "CPU run")
    row["tensorrt_ms"], row["tensorrt_note"] = ms, why
    return row, depth


def _network_section(key: str) -> Callable[[Settings], dict[str, Any]]:
    def section(settings: Settings) -> dict[str, Any]:
        case = _cases(settings)[key]
        iters = settings.iters[key]
        model, config, model_hash = case.build(settings.device)
        frame = _thermal_frame(case.camera_hw, seed=1)
        out: dict[str, Any] = {"network": case.name, "preset": config.name, "input_hw": list(case.input_hw),
                               "camera_hw": list(case.camera_hw), "iterations": iters, "runs": {}}
        depths = {}
        for precision in ("fp32", "fp16"):
            out["runs"][precision], depths[precision] = _run_precision(model, config, model_hash, case, precision,
                                                                       settings, iters, frame)
        out["fp16_vs_fp32_max_rel"] = _max_rel(depths["fp16"], depths["fp32"])
        del model
        if settings.device.startswith("cuda"):
            torch.cuda.empty_cache()
        return out

    section.__name__ = f"section_{key}"
    return section


def section_train(settings: Settings) -> dict[str, Any]:
    """Training throughput of the ViT-L dual model, stage 2, batch 4 at 252x644, under the training speed
    options (``bench/gpu_train_section.py``: deterministic fp32, fp32, bf16, deterministic bf16)."""
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_train_section

    return gpu_train_section.run_train_section(settings.device, smoke=settings.smoke)["train"]


SECTIONS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "student": _network_section("student"),
    "dav2s": _network_section("dav2s"),
    "vitl": _network_section("vitl"),
    "train": section_train,
}


# ---------------------------------------------------------------------------------------- report


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(report: dict[str, Any]) -> str:
    """The human-readable summary (printed last)."""
    lines = [f"bench_gpu on {report['device_name']} (torch {report['torch']}, {report['date']})"
             + ("  [SMOKE: CPU, tiny sizes]" if report["smoke"] else "")]
    head = (f"{'network':36s} {'input':>7s} {'prec':4s} {'net eager':>9s} {'net graph':>9s} {'TensorRT':>8s} "
            f"{'frame numpy':>11s} {'frame eager':>11s} {'frame graph':>11s} {'+cloud':>7s} {'peak MiB':>8s} "
            f"{'fp16 vs fp32':>12s}")
    lines += [head, "-" * len(head)]
    for key, sec in report["sections"].items():
        if "runs" not in sec:
            continue
        size = f"{sec['input_hw'][0]}x{sec['input_hw'][1]}"
        for precision, r in sec["runs"].items():
            diff = _fmt(sec["fp16_vs_fp32_max_rel"], ".1e") if precision == "fp16" else ""
            frame_graph = _fmt(r["frame_graph_ms"]) + ("*" if not r["graph_captured"] and not report["smoke"] else "")
            lines.append(f"{sec['network'][:36]:36s} {size:>7s} {r['precision']:4s} {_fmt(r['net_eager_ms']):>9s} "
                         f"{_fmt(r['net_graph_ms']):>9s} {_fmt(r['tensorrt_ms']):>8s} "
                         f"{_fmt(r['frame_numpy_prepost_ms']):>11s} {_fmt(r['frame_eager_ms']):>11s} "
                         f"{frame_graph:>11s} {_fmt(r['frame_cloud_graph_ms']):>7s} {_fmt(r['peak_mem_mib'], '.0f'):>8s} "
                         f"{diff:>12s}")
    lines.append("times: median ms; net = network only (CUDA events); frame = raw uint16 frame -> numpy depth + "
                 "confidence, pre/post on the device (wall clock; numpy = the CPU pre/post around the eager "
                 "network; +cloud = graph frame with the point cloud); * = graph capture failed, eager")
    train = report["sections"].get("train")
    if train and "variants" in train:
        lines.append(f"training: {train['setup']}")
        for name, r in train["variants"].items():
            lines.append(f"  {name:<20s} {r['samples_per_s']:8.2f} samples/s  {r['step_ms']:9.1f} ms/step  "
                         f"x{r['ratio_vs_deterministic_fp32']:.2f}  peak {r['peak_gib']:.1f} GiB")
    for key, err in report["errors"].items():
        lines.append(f"section {key} FAILED: {err.splitlines()[-1] if err else err}")
    lines.append(f"total {report['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="JSON path (default $OUT/bench_gpu.json, else ./bench_gpu.json)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, few iterations (for the test suite)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--device", default=None, help="default cuda (cpu with --smoke)")
    parser.add_argument("--fp16-residual-stream", action="store_true",
                        help="fp16 runs with the ViT residual stream in fp16 too (runtime.half option)")
    args = parser.parse_args(argv)
    wanted = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device visible to torch (use --smoke for the CPU run)", file=sys.stderr)
        return 2
    if args.smoke:
        settings = Settings(smoke=True, device=device, iters={"student": 2, "dav2s": 2, "vitl": 2}, warmup=1,
                            fp32_residual_stream=not args.fp16_residual_stream)
        torch.set_num_threads(1)  # a shared CI machine: OpenMP threads waiting for each other cost most
    else:
        settings = Settings(smoke=False, device=device, iters={"student": 50, "dav2s": 30, "vitl": 10}, warmup=5,
                            fp32_residual_stream=not args.fp16_residual_stream)
    out_path = Path(args.out) if args.out else Path(os.environ.get("OUT", ".")) / "bench_gpu.json"
    report: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "smoke": settings.smoke,
        "device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
        "fp32_residual_stream": settings.fp32_residual_stream,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu",
        "sections": {}, "errors": {},
    }
    start = time.perf_counter()
    for name in wanted:
        t = time.perf_counter()
        try:
            report["sections"][name] = SECTIONS[name](settings)
            report["sections"][name]["seconds"] = time.perf_counter() - t
        except Exception:  # one broken section must not hide the others' figures
            report["errors"][name] = traceback.format_exc()
            print(f"bench_gpu: section {name} failed:\n{report['errors'][name]}", file=sys.stderr)
        print(f"bench_gpu: {name} done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    report["seconds"] = time.perf_counter() - start
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    os.replace(tmp, out_path)  # atomic: never a half-written JSON
    print(table(report))
    print(f"JSON: {out_path}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

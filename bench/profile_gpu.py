"""Where the GPU time goes: per-module CUDA time and the top kernels of one inference frame and one training step.

    python3 bench/profile_gpu.py                       # CUDA: MonoTher ViT-L fp16 frame + bf16 stage-2 step
    python3 bench/profile_gpu.py --smoke               # tiny model on the CPU (plumbing only)

Inference: the ``TorchEngine`` fp16 network (weights cast once, graphs off so modules can be timed) of the
``monother-ms2-vitl`` thermal branch at 252x644, random weights; forward hooks with CUDA events time the
encoder, the DPT head and the metric-bins head. Training: one ``distill.step.training_step`` of the ViT-L
dual, stage 2, batch 4, bf16 autocast, deterministic off, timed per part (student, teacher, confidence
network forward; backward; optimiser). Both print the 15 most expensive kernels from ``torch.profiler``.
Imports torch, numpy and the package only (runs on a GPU machine without ROS).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class ModuleTimer:
    """CUDA-event (or wall-clock on the CPU) time of named modules' forward calls, summed per call of ``run``."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {name: [] for name in modules}
        self._open: dict[str, Any] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda _m, _a, name=name: self._start(name))
            module.register_forward_hook(lambda _m, _a, _o, name=name: self._stop(name))

    def _event(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        import time

        return time.perf_counter()

    def _start(self, name: str) -> None:
        self._open[name] = self._event()

    def _stop(self, name: str) -> None:
        start, end = self._open.pop(name), self._event()
        self.times[name].append((start, end))  # type: ignore[arg-type]

    def medians_ms(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = {}
        for name, pairs in self.times.items():
            if not pairs:
                continue
            if self.device.type == "cuda":
                values = [s.elapsed_time(e) for s, e in pairs]  # type: ignore[union-attr]
            else:
                values = [(e - s) * 1e3 for s, e in pairs]  # type: ignore[operator]
            out[name] = statistics.median(values)
        return out


def top_kernels(fn, device: torch.device, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def profile_inference(device: torch.device, smoke: bool) -> None:
    from monother_ros.model.branch import DepthBranch
    from monother_ros.model.variants import get_preset
    from monother_ros.runtime.torch_engine import TorchEngine

    preset, hw = ("test-tiny", (28, 42)) if smoke else ("monother-ms2-vitl", (252, 644))
    config = get_preset(preset)
    torch.manual_seed(0)
    with torch.device(device):
        model = DepthBranch(config).eval()
    precision = "fp32" if device.type == "cpu" else "fp16"
    engine = TorchEngine(model, config, model_hash="profile", input_hw=hw, device=str(device), precision=precision,
                         cuda_graphs=False)
    net = engine.model
    parts = {name: getattr(net, name) for name in ("pretrained", "depth_head", "bins_head", "confidence_head")
             if getattr(net, name, None) is not None}
    timer = ModuleTimer({"whole network": net, **parts}, device)
    x = torch.randn(1, 3, *hw, device=device)

    def run() -> None:
        with torch.inference_mode():
            engine._forward(x)  # noqa: SLF001 - the network alone, as the engine calls it

    for _ in range(3):
        run()
    timer.times = {k: [] for k in timer.times}
    for _ in range(10):
        run()
    print(f"\ninference: {preset} {hw[0]}x{hw[1]} {precision} eager, median ms per module:")
    for name, ms in timer.medians_ms().items():
        print(f"  {name:<16s} {ms:8.2f}")
    print(top_kernels(run, device))


def profile_training(device: torch.device, smoke: bool) -> None:
    import gpu_train_section as section
    from monother_ros.distill.step import prepare_stage, training_step
    from training.config import TrainConfig
    from training.train import apply_speed_options, build_model, make_optimizer, optimizer_update

    settings = section.SMOKE if smoke else section.FULL
    amp = "off" if device.type == "cpu" else "bf16"
    weights = {"consistency": 2.0, "smoothness": 0.01, "student_nll": 0.1}
    config = TrainConfig(model=settings["model"], input_size=settings["input_size"], stage="label_free",
                         distillation="full", batch_size=settings["batch_size"], deterministic="off", amp=amp,
                         confidence_width=settings["confidence_width"], device=device.type, weights=weights)
    torch.manual_seed(0)
    with torch.device(device):
        model, _, _ = build_model(config)
    speed = apply_speed_options(config, device)
    trainable = prepare_stage(model, "label_free")
    optimizer, scheduler = make_optimizer(model, config, 100)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    batch = section._batch(settings["batch_size"], settings["input_size"], device)  # noqa: SLF001
    parts = {"student": model.student, "teacher": model.teacher}
    if model.confidence_net is not None:
        parts["confidence net"] = model.confidence_net
    timer = ModuleTimer(parts, device)
    phase: dict[str, list[float]] = {"forward+loss": [], "backward": [], "optimiser": []}

    def step() -> None:
        marks = [timer._event()]  # noqa: SLF001
        optimizer.zero_grad(set_to_none=True)
        result = training_step(model, batch, stage="label_free", distillation="full", weights=weights,
                               autocast_dtype=speed.autocast_dtype)
        marks.append(timer._event())  # noqa: SLF001
        result.total.backward()
        marks.append(timer._event())  # noqa: SLF001
        optimizer_update(optimizer, scaler, trainable, config.grad_clip)
        scheduler.step()
        marks.append(timer._event())  # noqa: SLF001
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            spans = [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]
        else:
            spans = [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]
        for name, ms in zip(phase, spans):
            phase[name].append(ms)

    for _ in range(3):
        step()
    timer.times = {k: [] for k in timer.times}
    phase = {k: [] for k in phase}
    for _ in range(5):
        step()
    print(f"\ntraining: {settings['model']} dual stage 2, batch {settings['batch_size']}, {amp}, median ms:")
    for name, values in phase.items():
        print(f"  {name:<16s} {statistics.median(values):8.2f}")
    for name, ms in timer.medians_ms().items():
        print(f"  fwd {name:<12s} {ms:8.2f}")
    print(top_kernels(step, device))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--parts", default="inference,training")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    parts = args.parts.split(",")
    if "inference" in parts:
        profile_inference(device, args.smoke)
    if "training" in parts:
        profile_training(device, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())

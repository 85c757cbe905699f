"""Training throughput of the full MonoTher dual model (ViT-L student + ViT-L teacher + confidence U-Net),
stage 2 (label-free), batch 4 at 252x644, under the training speed options, side by side in one process.

    .venv/bin/python bench/gpu_train_section.py            # CUDA, the real size (< 90 s on an H200)
    .venv/bin/python bench/gpu_train_section.py --smoke    # tiny model on the CPU, seconds (tests)

Also a section of ``bench/bench_gpu.py``: ``run_train_section(device, out)`` fills ``out`` and prints.

Each variant times the same optimiser step as ``training.train.run`` (``distill.step.training_step`` +
``GradScaler`` + ``optimizer_update`` + OneCycle) on random weights (``monother-ms2-vitl`` student, its RGB
teacher, the 64-wide confidence U-Net) and random normalised images with a 10 cm-baseline rig; warm-up
steps first (cuDNN autotuning, allocator), then ``steps`` timed steps, synchronised. Variants:
``deterministic fp32`` (the old default), ``fp32`` (deterministic off: the CUDA default now), ``bf16``
(deterministic off, networks under bf16 autocast) and ``deterministic bf16``. Printed as samples/s and
the ratio to the old default. Imports torch, numpy and the package only (no ROS, no bag reader).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (label, deterministic, amp)
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("deterministic fp32", "on", "off"),
    ("fp32", "off", "off"),
    ("bf16", "off", "bf16"),
    ("deterministic bf16", "on", "bf16"),
)
FULL = dict(model="monother-ms2-vitl", input_size=(252, 644), batch_size=4, confidence_width=64, warmup=3, steps=8)
SMOKE = dict(model="test-tiny", input_size=(28, 42), batch_size=2, confidence_width=8, warmup=1, steps=2)


def _batch(batch_size: int, hw: tuple[int, int], device: torch.device) -> dict[str, Any]:
    """Random normalised images and a plausible rig (pinhole at 60 deg HFOV, 10 cm baseline)."""
    from monother_ros.core import se3
    from monother_ros.core.camera import PinholeCamera

    h, w = hw
    g = torch.Generator().manual_seed(0)
    K = torch.tensor(PinholeCamera.from_hfov(w, h, 60.0).K, dtype=torch.float32)
    T = torch.tensor(se3.make_transform(np.eye(3), [-0.1, 0.0, 0.0]), dtype=torch.float32)
    batch = {"thermal": torch.randn(batch_size, 3, h, w, generator=g), "rgb": torch.randn(batch_size, 3, h, w, generator=g),
             "K_thermal": K.expand(batch_size, 3, 3).contiguous(), "K_rgb": K.expand(batch_size, 3, 3).contiguous(),
             "T_rgb_thermal": T.expand(batch_size, 4, 4).contiguous()}
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(settings: dict[str, Any], deterministic: str, amp: str, device: torch.device) -> dict[str, float]:
    """Samples/s of stage-2 optimiser steps under one speed setting (model built fresh, seeded)."""
    from monother_ros.distill.step import prepare_stage, training_step
    from training.config import TrainConfig
    from training.train import apply_speed_options, build_model, make_optimizer, optimizer_update

    config = TrainConfig(model=settings["model"], input_size=settings["input_size"], stage="label_free",
                         distillation="full", batch_size=settings["batch_size"], deterministic=deterministic, amp=amp,
                         confidence_width=settings["confidence_width"], device=device.type,
                         weights={"consistency": 2.0, "smoothness": 0.01, "student_nll": 0.1})
    torch.manual_seed(0)
    with torch.device(device):  # parameters created on the device: no multi-GB copy of a CPU init
        model, _, _ = build_model(config)
    speed = apply_speed_options(config, device)
    trainable = prepare_stage(model, "label_free")
    total = settings["warmup"] + settings["steps"]
    optimizer, scheduler = make_optimizer(model, config, total)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    batch = _batch(settings["batch_size"], settings["input_size"], device)
    weights = {"consistency": 2.0, "smoothness": 0.01, "student_nll": 0.1}
    losses: list[float] = []
    start = 0.0
    for i in range(total):
        if i == settings["warmup"]:
            _sync(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        result = training_step(model, batch, stage="label_free", distillation="full", weights=weights,
                               autocast_dtype=speed.autocast_dtype)
        scaler.scale(result.total).backward()
        optimizer_update(optimizer, scaler, trainable, config.grad_clip)
        scheduler.step()
        losses.append(result.losses["total"])
    _sync(device)
    seconds = time.perf_counter() - start
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    del model, optimizer, scheduler, batch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return {"samples_per_s": settings["steps"] * settings["batch_size"] / seconds,
            "step_ms": 1000.0 * seconds / settings["steps"], "last_loss": float(losses[-1]),
            "finite": bool(np.all(np.isfinite(losses))), "peak_gib": peak_gib}


def run_train_section(device: str | torch.device = "cuda", out: Optional[dict] = None, *, smoke: bool = False) -> dict:
    """Time every variant of :data:`VARIANTS`; print one line each and store them in ``out``.

    Args:
        device: torch device (``cuda`` for the real size).
        out: dict to fill (``bench/bench_gpu.py`` passes its report); a new one when None.
        smoke: tiny model, batch 2 at 28x42, 1 warm-up + 2 timed steps (a CPU check of the plumbing).

    Returns:
        ``out`` with ``out["train"] = {"setup": str, "variants": {label: {samples_per_s, step_ms,
        last_loss, finite, peak_gib, ratio_vs_deterministic_fp32}}}``.
    """
    out = {} if out is None else out
    device = torch.device(device)
    settings = SMOKE if smoke else FULL
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    benchmark_before = torch.backends.cudnn.benchmark
    h, w = settings["input_size"]
    setup = (f"{settings['model']} dual (student + RGB teacher + confidence U-Net {settings['confidence_width']}), "
             f"stage 2 label-free, batch {settings['batch_size']} at {h}x{w}, {device}, random weights and inputs")
    print(f"training throughput: {setup}")
    variants: dict[str, dict[str, float]] = {}
    try:
        for label, deterministic, amp in VARIANTS:
            if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                print(f"  {label:<20s} skipped: this GPU has no bf16")
                continue
            variants[label] = time_variant(settings, deterministic, amp, device)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.backends.cudnn.benchmark = benchmark_before
    reference = variants.get(VARIANTS[0][0], {}).get("samples_per_s", float("nan"))
    for label, v in variants.items():
        v["ratio_vs_deterministic_fp32"] = v["samples_per_s"] / reference
        print(f"  {label:<20s} {v['samples_per_s']:8.2f} samples/s  {v['step_ms']:9.1f} ms/step  "
              f"x{v['ratio_vs_deterministic_fp32']:.2f} vs deterministic fp32  peak {v['peak_gib']:.1f} GiB  "
              f"loss {v['last_loss']:.4f}{'' if v['finite'] else ' NOT FINITE'}", flush=True)
    out["train"] = {"setup": setup, "variants": variants}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="", help="torch device (default: cuda, cpu with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the plumbing")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke (CPU) or on a GPU machine")
        return 2
    if args.smoke:
        torch.set_num_threads(1)  # a tiny model: threads only wait for each other on a shared CPU
    t0 = time.perf_counter()
    run_train_section(device, smoke=args.smoke)
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

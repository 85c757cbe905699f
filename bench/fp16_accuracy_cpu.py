"""fp16 vs fp32 depth of the torch engine's fp16 conversion, on the CPU (torch's fp16 CPU kernels).

    .venv/bin/python bench/fp16_accuracy_cpu.py          # ~1 min on 2 cores

For three networks (the shipped student with its trained weights; random-weight DAv2-S metric and a
6-block ViT-L + ZoeDepth bins at reduced sizes, to fit a CPU) it prints the max relative difference
max |d16 - d32| / max |d32| of the depth for one N(0, 1) input, three ways: every weight fp16
(``model.half()``), ``runtime.half.convert_to_fp16(fp32_residual_stream=False)`` and
``convert_to_fp16`` (the engine's default, fp32 residual stream). The decision documented in ``runtime/half.py`` rests on these figures;
the real-size GPU figures come from ``bench/bench_gpu.py``.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monother_ros.model.branch import DepthBranch  # noqa: E402
from monother_ros.model.variants import get_preset  # noqa: E402
from monother_ros.runtime.export import load_student  # noqa: E402
from monother_ros.runtime.half import convert_to_fp16  # noqa: E402


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b).abs().max() / b.abs().max())


def compare(name: str, model: torch.nn.Module, hw: tuple[int, int]) -> None:
    model.eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, *hw)
    with torch.inference_mode():
        ref = model(x, features=False).depth
        every = copy.deepcopy(model).half()(x.half(), features=False).depth
        fp16_stream = convert_to_fp16(copy.deepcopy(model), fp32_residual_stream=False)(x.half(), features=False).depth
        default = convert_to_fp16(copy.deepcopy(model))(x.half(), features=False).depth
    print(f"{name:18s} {hw[0]}x{hw[1]:<4d} all fp16 {_rel(every, ref):.2e}   fp16 stream {_rel(fp16_stream, ref):.2e}   "
          f"default (fp32 stream) {_rel(default, ref):.2e}", flush=True)


def main() -> int:
    model, config, _ = load_student(REPO / "engines" / "default")
    compare("shipped student", model, tuple(config.input_size))
    torch.manual_seed(0)
    compare("dav2-metric-vits", DepthBranch(get_preset("dav2-metric-vits")), (266, 266))
    torch.manual_seed(0)
    vitl = get_preset("monother-ms2-vitl").replace(depth=6, taps=(2, 3, 4, 5))
    compare("vitl-6blocks-zoe", DepthBranch(vitl), (126, 322))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

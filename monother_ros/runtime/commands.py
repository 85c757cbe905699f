"""``monother export-onnx`` and ``monother build-engine``.

    monother export-onnx --model engines/default --input-size 182x238 --out /tmp/default.onnx
    monother build-engine --model engines/default --input-size 252x644 --precision fp16

``build-engine`` exports the model at that size when needed (cached next to the engines), then builds
and caches the TensorRT engine (``engines/cache/<model>-<key>.engine`` + ``.json`` sidecar). Without
TensorRT or a CUDA GPU it stops with one line naming what is missing.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``export-onnx`` and ``build-engine``."""
    p = subparsers.add_parser(
        "export-onnx", help="export a model folder to ONNX at a fixed input size",
        description="Export a saved model (model.safetensors + config.json) to ONNX (opset 18): input "
        "'thermal' (1,3,H,W), outputs 'depth' (1,1,H,W) metres and 'confidence' when the model has one; "
        "model config, input size, mean/std and model hash in the metadata. ONNX Runtime is checked "
        "against PyTorch after export.",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument("--input-size", dest="input_size", default=None,
                   help="HxW, multiples of 14 (default: the model config's input_size)")
    p.add_argument("--out", required=True, type=Path, help="output .onnx file (written atomically)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the ONNX Runtime vs PyTorch check")
    p.set_defaults(handler=_export_onnx)

    b = subparsers.add_parser(
        "build-engine", help="build (or reuse) the cached TensorRT engine for a model",
        description="Build a TensorRT engine (>= 8.6) from a model folder or exported ONNX file, keyed by "
        "TensorRT version, GPU (name, compute capability, SMs, memory), input shape, precision, model and ONNX "
        "hashes and builder settings; a cached engine with the same key is reused, a corrupt or mismatched one "
        "is rebuilt (or refused with --no-rebuild); older engines of the model beyond --keep are deleted.",
    )
    b.add_argument("--model", required=True, type=Path, help="model folder or exported .onnx file")
    b.add_argument("--input-size", dest="input_size", required=True, help="HxW, multiples of 14")
    b.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    b.add_argument("--cache-dir", dest="cache_dir", type=Path, default=None,
                   help="engine cache folder (default: engines/cache)")
    b.add_argument("--device", default="cuda:0", help="CUDA device (default cuda:0)")
    b.add_argument("--workspace-mb", dest="workspace_mb", type=int, default=1024,
                   help="builder workspace limit in MiB (default 1024)")
    b.add_argument("--keep", type=int, default=3, help="engines kept per model in the cache (default 3)")
    b.add_argument("--no-rebuild", dest="rebuild", action="store_false",
                   help="fail instead of rebuilding a corrupt or mismatched cached engine")
    b.set_defaults(handler=_build_engine)


def _export_onnx(args: argparse.Namespace) -> int:
    from monother_ros.runtime.export import export_model_dir, parse_hw

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hw = parse_hw(args.input_size) if args.input_size else None
    info = export_model_dir(args.model, args.out, input_hw=hw, verify=args.verify)
    outputs = "depth, confidence" if info.has_confidence else "depth"
    print(f"exported {info.model_name} ({info.model_hash[:12]}) at {info.input_hw[0]}x{info.input_hw[1]}, "
          f"opset {info.opset}, outputs {outputs} -> {info.path}")
    return 0


def _build_engine(args: argparse.Namespace) -> int:
    from monother_ros.runtime.engine import resolve_backend
    from monother_ros.runtime.export import parse_hw, resolve_onnx

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hw = parse_hw(args.input_size)
    from monother_ros.errors import ConfigError

    if args.workspace_mb <= 0:
        raise ConfigError(f"--workspace-mb must be positive, got {args.workspace_mb}")
    if args.keep < 1:
        raise ConfigError(f"--keep must be >= 1, got {args.keep}")
    resolve_backend("tensorrt")  # BackendUnavailableError (one line, exit 2) before any export work
    from monother_ros.runtime.tensorrt_engine import TensorRTEngine

    onnx_path = resolve_onnx(args.model, hw, args.cache_dir)
    engine = TensorRTEngine.from_onnx(onnx_path, precision=args.precision, device=args.device,
                                      cache_dir=args.cache_dir, rebuild=args.rebuild,
                                      workspace_bytes=args.workspace_mb << 20, keep_engines=args.keep)
    try:
        state = "built" if engine.built else "already cached"
        print(f"{state}: {engine.engine_file} ({engine.info.model_name}, {hw[0]}x{hw[1]}, {args.precision})")
    finally:
        engine.close()
    return 0
